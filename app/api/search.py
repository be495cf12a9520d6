"""REST search: messages (`/search/messages`) and the one search box (`/search`)."""

from aiohttp import web

from app.api.http import auth_of, deps_of, json_response, query
from app.services import search


async def search_messages(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    q = query(request, search.SearchIn)
    return json_response(await search.search_messages(deps_of(request), auth.user_id, q))


async def search_all(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    q = query(request, search.SearchAllIn)
    return json_response(await search.search_all(deps_of(request), auth.user_id, q))
