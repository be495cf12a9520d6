"""REST: contacts, friend requests, blocks and privacy settings."""

from aiohttp import web

from app.api.http import auth_of, deps_of, json_response, read_json
from app.services import contacts


async def send_request(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, contacts.RequestIn, cap=8 * 1024)
    return json_response(await contacts.send_request(deps_of(request), auth.user_id, data),
                         status=201)


async def list_requests(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    return json_response(await contacts.list_requests(deps_of(request), auth.user_id))


async def accept_request(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    return json_response(await contacts.accept(deps_of(request), auth.user_id,
                                               request.match_info["request_id"]))


async def reject_request(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    return json_response(await contacts.reject(deps_of(request), auth.user_id,
                                               request.match_info["request_id"]))


async def list_contacts(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    return json_response({"contacts": await contacts.list_contacts(deps_of(request),
                                                                   auth.user_id)})


async def patch_contact(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, contacts.ContactPatch, cap=4 * 1024)
    contact = await contacts.set_remark(deps_of(request), auth.user_id,
                                        request.match_info["user_id"], data)
    return json_response({"contact": contact})


async def delete_contact(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    await contacts.remove_contact(deps_of(request), auth.user_id, request.match_info["user_id"])
    return web.Response(status=204)


async def block(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, contacts.BlockIn, cap=4 * 1024)
    out, created = await contacts.block(deps_of(request), auth.user_id, data)
    return json_response({"block": out}, status=201 if created else 200)


async def unblock(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    await contacts.unblock(deps_of(request), auth.user_id, request.match_info["user_id"])
    return web.Response(status=204)


async def list_blocks(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    return json_response({"blocks": await contacts.list_blocks(deps_of(request), auth.user_id)})


async def get_settings(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    return json_response({"settings": await contacts.get_settings(deps_of(request), auth.user)})


async def patch_settings(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, contacts.SettingsPatch, cap=4 * 1024)
    out = await contacts.update_settings(deps_of(request), auth.user, data)
    return json_response({"settings": out})
