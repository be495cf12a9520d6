"""REST for data export (account deletion is DELETE /me in app/api/users.py)."""

from aiohttp import web

from app.api.http import auth_of, deps_of, json_response, send_stream
from app.services import export


async def request_export(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    view = await export.request_export(deps_of(request), auth.user_id)
    return json_response({"export": view}, status=202)


async def get_export(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    return json_response(await export.export_status(deps_of(request), auth.user_id))


async def download_export(request: web.Request) -> web.StreamResponse:
    # The signed link is the authorisation: it works from a plain <a href>.
    q = request.query
    storage, key, size, name = await export.open_download(
        deps_of(request), request.match_info["export_id"], q.get("exp"), q.get("sig"))
    resp = web.StreamResponse(headers={
        "Content-Type": "application/zip",
        "Content-Disposition": f'attachment; filename="{name}"',
        "Cache-Control": "private, no-store",
        "X-Content-Type-Options": "nosniff",
    })
    resp.content_length = size
    stream = await storage.open_range(key, 0, None) if request.method != "HEAD" else None
    return await send_stream(request, resp, stream)
