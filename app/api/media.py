"""REST handlers for media: multipart upload, metadata, downloads with ranges.

Reading the multipart stream and writing the (ranged) response is transport work
and lives here; every decision (caps, kinds, who may download) is in
app/services/media.py.
"""

from __future__ import annotations

from aiohttp import web

from app.api.http import auth_of, body_read, deps_of, json_response, send_stream
from app.errors import Invalid, NotFound
from app.services import media
from app.storage import RangeNotSatisfiable, StorageError, parse_range

READ_CHUNK = 256 * 1024
MAX_FIELD_BYTES = 64


async def _small_field(request: web.Request, part) -> str:
    data = bytearray()
    while chunk := await body_read(request, part.read_chunk(MAX_FIELD_BYTES + 1)):
        data += chunk
        if len(data) > MAX_FIELD_BYTES:
            raise Invalid(f"Field {part.name!r} is too long.", details={"field": part.name})
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Invalid(f"Field {part.name!r} is not text.", details={"field": part.name}) from None


async def _part_chunks(request: web.Request, part):
    while chunk := await body_read(request, part.read_chunk(READ_CHUNK)):
        yield chunk


async def upload(request: web.Request) -> web.Response:
    """POST /media: multipart/form-data with `file` (and optionally `kind` before it,
    or `?kind=` in the query)."""
    auth = await auth_of(request)
    deps = deps_of(request)
    declared = request.query.get("kind")
    media.check_length(deps.settings, declared, request.content_length)
    if request.content_type != "multipart/form-data":
        raise Invalid("Send multipart/form-data with a `file` field.")
    reader = await request.multipart()
    while True:
        part = await body_read(request, reader.next())
        if part is None:
            raise Invalid("The `file` field is missing.", details={"field": "file"})
        if part.name == "file":
            break
        if part.name == "kind":
            declared = await _small_field(request, part)
            media.check_length(deps.settings, declared, request.content_length)
            continue
        raise Invalid(f"Unknown field {part.name!r}.", details={"field": part.name})

    result = await media.upload(deps, auth.user_id, _part_chunks(request, part),
                                filename=part.filename,
                                declared_kind=declared, content_length=request.content_length)
    return json_response({"media": result}, status=201)


async def get_media(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    result = await media.get_media(deps_of(request), auth.user_id,
                                   request.match_info["media_id"])
    return json_response({"media": result})


async def content(request: web.Request) -> web.StreamResponse:
    return await _download(request, "content")


async def thumbnail(request: web.Request) -> web.StreamResponse:
    return await _download(request, "thumbnail")


async def _download(request: web.Request, variant: str) -> web.StreamResponse:
    deps = deps_of(request)
    q = request.query
    user_id = None
    if "sig" not in q and "exp" not in q:
        user_id = (await auth_of(request)).user_id
    d = await media.open_download(deps, request.match_info["media_id"], variant,
                                  user_id=user_id, exp=q.get("exp"), sig=q.get("sig"),
                                  link_user=q.get("u"))
    headers = {
        "Content-Type": d.mime,
        "Content-Disposition": d.disposition,
        "X-Content-Type-Options": "nosniff",
        # Even if a browser opened it as a page, nothing in it could run.
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
        "Cache-Control": "private, max-age=3600",
        "Accept-Ranges": "bytes",
    }
    path = d.local_path
    if path is not None:
        # sendfile, with Range/If-Range/416 handled by aiohttp
        return web.FileResponse(path, headers=headers)
    total = await d.total_size()
    try:
        rng = parse_range(request.headers.get("Range"), total)
    except RangeNotSatisfiable:
        headers["Content-Range"] = f"bytes */{total}"
        return web.Response(status=416, headers=headers)
    start, end = rng if rng is not None else (0, total - 1)
    stream = await d.open(start, end) if request.method != "HEAD" and total > 0 else None
    resp = web.StreamResponse(status=206 if rng is not None else 200, headers=headers)
    resp.content_length = end - start + 1
    if rng is not None:
        resp.headers["Content-Range"] = f"bytes {start}-{end}/{total}"
    return await send_stream(request, resp, stream)


async def upload_chunks(request: web.Request):
    """The uploaded file of a PUT: either the raw body (any Content-Type: the bytes
    are sniffed) or the `file` field of multipart/form-data."""
    if request.content_type == "multipart/form-data":
        reader = await request.multipart()
        while True:
            part = await body_read(request, reader.next())
            if part is None:
                raise Invalid("The `file` field is missing.", details={"field": "file"})
            if part.name == "file":
                break
            raise Invalid(f"Unknown field {part.name!r}.", details={"field": part.name})

        return _part_chunks(request, part)

    async def from_body():
        while chunk := await body_read(request, request.content.read(READ_CHUNK)):
            yield chunk

    return from_body()


async def avatar(request: web.Request) -> web.StreamResponse:
    """GET /avatars/{key}/{size}.jpg: public, immutable (a new picture has a new key)."""
    from app.services import avatars

    key = avatars.object_for(request.match_info["key"], request.match_info["size"])
    storage = media.storage_of(deps_of(request))
    headers = {"Content-Type": "image/jpeg", "X-Content-Type-Options": "nosniff",
               "Cache-Control": "public, max-age=31536000, immutable",
               "Content-Security-Policy": "default-src 'none'; sandbox"}
    try:
        path = storage.local_path(key)
        if path is not None:
            if not path.is_file():
                raise NotFound("No such avatar.")
            return web.FileResponse(path, headers=headers)
        body = await storage.read_bytes(key)
    except StorageError:
        raise NotFound("No such avatar.") from None
    return web.Response(body=body, headers=headers)
