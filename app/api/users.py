from aiohttp import web

from app.api.http import auth_of, client_of, deps_of, json_response, read_json
from app.api.media import upload_chunks
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


async def change_password(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, accounts.PasswordChangeIn, cap=4 * 1024)
    await accounts.change_password(deps_of(request), auth, data, client_of(request))
    return json_response({"ok": True})


async def _change_address(request: web.Request, channel: str, struct) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, struct, cap=4 * 1024)
    user = await accounts.change_address(deps_of(request), auth, channel, getattr(data, channel),
                                         data.code, client_of(request))
    if user is None:
        return json_response({"ok": True, "code_sent": True}, status=202)
    return json_response({"user": user})


async def change_email(request: web.Request) -> web.Response:
    return await _change_address(request, "email", accounts.EmailChangeIn)


async def change_phone(request: web.Request) -> web.Response:
    return await _change_address(request, "phone", accounts.PhoneChangeIn)


async def put_avatar(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    chunks = await upload_chunks(request)
    user = await accounts.set_avatar(deps_of(request), auth, chunks, request.content_length)
    return json_response({"user": user})


async def delete_avatar(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    return json_response({"user": await accounts.clear_avatar(deps_of(request), auth)})
async def delete_me(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, erasure.DeleteAccountIn, cap=4 * 1024)
    result = await erasure.request_deletion(deps_of(request), auth, data)
    return json_response(result, status=202)
