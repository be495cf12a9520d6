from typing import Annotated

import msgspec
from aiohttp import web

from app.api.http import auth_of, deps_of, json_response, query, read_json
from app.services import conversations as convs
from app.services import history as reading
from app.services import messaging
from app.validation import Id, Payload, Seq


class DirectIn(Payload):
    user_id: Id


class ListQuery(msgspec.Struct, forbid_unknown_fields=True):
    cursor: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 30


class HistoryQuery(msgspec.Struct, forbid_unknown_fields=True):
    before_seq: Seq | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=200)] = 50
    around_seq: Seq | None = None


async def create_direct(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, DirectIn, cap=4 * 1024)
    deps = deps_of(request)
    conv, _created = await convs.get_or_create_direct(deps, auth.user_id, data.user_id)
    return json_response({"conversation": await convs.conversation_for(deps, auth.user_id, conv.id)})


async def list_conversations(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    q = query(request, ListQuery)
    return json_response(await convs.list_conversations(deps_of(request), auth.user_id,
                                                        q.cursor, q.limit))


async def get_conversation(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    conv = await convs.conversation_for(deps_of(request), auth.user_id,
                                        request.match_info["conversation_id"])
    return json_response({"conversation": conv})


async def patch_conversation(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, convs.ConversationPatch, cap=4 * 1024)
    conv = await convs.update_my_settings(deps_of(request), auth.user_id,
                                          request.match_info["conversation_id"], data)
    return json_response({"conversation": conv})


async def list_messages(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    q = query(request, HistoryQuery)
    data = reading.HistoryIn(conversation_id=request.match_info["conversation_id"],
                             before_seq=q.before_seq, limit=q.limit,
                             around_seq=q.around_seq)
    return json_response(await reading.history(deps_of(request), auth.user_id, data))


async def send_message(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    payload = await read_json(request, dict, cap=96 * 1024)
    payload["conversation_id"] = request.match_info["conversation_id"]
    message = await messaging.send_from_payload(deps_of(request), auth.user_id, payload)
    return json_response({"message": message}, status=201)


async def list_pins(request: web.Request) -> web.Response:
    from app.services import message_changes

    auth = await auth_of(request)
    return json_response(await message_changes.pins(
        deps_of(request), auth.user_id, request.match_info["conversation_id"]))
