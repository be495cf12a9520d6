from aiohttp import web

from app.api.http import auth_of, deps_of, json_response, read_json
from app.services import accounts, erasure


async def get_me(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    return json_response({"user": accounts.private_user(auth.user)})


async def patch_me(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, accounts.ProfilePatch, cap=8 * 1024)
    return json_response({"user": await accounts.update_profile(deps_of(request), auth, data)})


async def get_user(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    user = await accounts.get_user(deps_of(request), auth, request.match_info["user_id"])
    return json_response({"user": user})


async def search(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    users = await accounts.search_users(deps_of(request), auth, request.query.get("q", ""))
    return json_response({"users": users})


async def delete_me(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, erasure.DeleteAccountIn, cap=4 * 1024)
    result = await erasure.request_deletion(deps_of(request), auth, data)
    return json_response(result, status=202)
