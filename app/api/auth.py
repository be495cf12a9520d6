from aiohttp import web

from app.api.http import USER_ID_KEY, auth_of, client_of, deps_of, json_response, read_json
from app.services import accounts, codes


async def register(request: web.Request) -> web.Response:
    data = await read_json(request, accounts.RegisterIn, cap=8 * 1024)
    result = await accounts.register(deps_of(request), data, client_of(request))
    request[USER_ID_KEY] = result["user"]["id"]
    return json_response(result, status=201)


async def login(request: web.Request) -> web.Response:
    data = await read_json(request, accounts.LoginIn, cap=8 * 1024)
    result = await accounts.login(deps_of(request), data, client_of(request))
    request[USER_ID_KEY] = result["user"]["id"]
    return json_response(result)


async def request_code(request: web.Request) -> web.Response:
    data = await read_json(request, codes.CodeRequestIn, cap=4 * 1024)
    await codes.request_code(deps_of(request), data, client_of(request).ip)
    return json_response({"ok": True}, status=202)


async def login_with_code(request: web.Request) -> web.Response:
    data = await read_json(request, codes.CodeLoginIn, cap=4 * 1024)
    result = await accounts.login_with_code(deps_of(request), data, client_of(request))
    request[USER_ID_KEY] = result["user"]["id"]
    return json_response(result)


async def reset_password(request: web.Request) -> web.Response:
    data = await read_json(request, codes.PasswordResetIn, cap=4 * 1024)
    await accounts.reset_password(deps_of(request), data, client_of(request))
    return json_response({"ok": True})


async def refresh(request: web.Request) -> web.Response:
    data = await read_json(request, accounts.RefreshIn, cap=4 * 1024)
    result = await accounts.refresh(deps_of(request), data)
    request[USER_ID_KEY] = result["user"]["id"]
    return json_response(result)


async def logout(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    await accounts.logout(deps_of(request), auth)
    return web.Response(status=204)


async def list_sessions(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    return json_response({"sessions": await accounts.list_sessions(deps_of(request), auth)})


async def end_session(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    await accounts.end_session(deps_of(request), auth, request.match_info["session_id"])
    return web.Response(status=204)
