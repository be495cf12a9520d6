"""REST handlers for group chats: parse, call app/services/groups, serialise."""

from aiohttp import web

from app.api.http import auth_of, deps_of, json_response, read_json
from app.services import groups

CAP = 64 * 1024


def _gid(request: web.Request) -> str:
    return request.match_info["group_id"]


async def create_group(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, groups.CreateIn, cap=CAP)
    conv = await groups.create_group(deps_of(request), auth.user_id, data)
    return json_response({"conversation": conv}, status=201)


async def get_group(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    return json_response({"group": await groups.get_group(deps_of(request), auth.user_id,
                                                          _gid(request))})


async def patch_group(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, groups.PatchIn, cap=CAP)
    group = await groups.update_group(deps_of(request), auth.user_id, _gid(request), data)
    return json_response({"group": group})


async def dissolve_group(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    await groups.dissolve(deps_of(request), auth.user_id, _gid(request))
    return web.Response(status=204)


async def add_members(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, groups.AddMembersIn, cap=CAP)
    return json_response(await groups.add_members(deps_of(request), auth.user_id, _gid(request),
                                                  data))


async def remove_member(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    await groups.remove_member(deps_of(request), auth.user_id, _gid(request),
                               request.match_info["user_id"])
    return web.Response(status=204)


async def patch_member(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, groups.MemberPatch, cap=CAP)
    group = await groups.update_member(deps_of(request), auth.user_id, _gid(request),
                                       request.match_info["user_id"], data)
    return json_response({"group": group})


async def transfer(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, groups.TransferIn, cap=CAP)
    group = await groups.transfer(deps_of(request), auth.user_id, _gid(request), data)
    return json_response({"group": group})


async def create_invite(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, groups.InviteIn, cap=CAP)
    invite = await groups.create_invite(deps_of(request), auth.user_id, _gid(request), data)
    return json_response(invite, status=201)


async def list_invites(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    return json_response({"invites": await groups.list_invites(deps_of(request), auth.user_id,
                                                               _gid(request))})


async def revoke_invite(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    await groups.revoke_invite(deps_of(request), auth.user_id, _gid(request),
                               request.match_info["token"])
    return web.Response(status=204)


async def preview_invite(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    return json_response(await groups.preview_invite(deps_of(request), auth.user_id,
                                                     request.match_info["token"]))


async def join(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, groups.JoinIn, cap=CAP)
    conv = await groups.join(deps_of(request), auth.user_id, data)
    return json_response({"conversation": conv})


async def readers(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    out = await groups.readers(deps_of(request), auth.user_id,
                               request.match_info["conversation_id"],
                               request.match_info["message_id"])
    return json_response(out)



async def put_group_avatar(request: web.Request) -> web.Response:
    from app.api.media import upload_chunks

    auth = await auth_of(request)
    chunks = await upload_chunks(request)
    group = await groups.set_group_avatar(deps_of(request), auth.user_id, _gid(request), chunks,
                                          request.content_length)
    return json_response({"group": group})


async def delete_group_avatar(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    group = await groups.set_group_avatar(deps_of(request), auth.user_id, _gid(request), None,
                                          None)
    return json_response({"group": group})
