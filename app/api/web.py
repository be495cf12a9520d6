"""The web client: the server-rendered shell at `/`, the vendored Socket.IO
client from node_modules, and the headers every response gets (CSP, caching,
compression of text assets)."""

from __future__ import annotations

import io
import mimetypes

import aiohttp_jinja2
from aiohttp import web

from app.api.http import deps_of
from app.config import ROOT

SOCKET_IO_ESM = ROOT / "node_modules" / "socket.io-client" / "dist" / "socket.io.esm.min.js"
VENDOR_PATH = "/vendor/socket.io.esm.min.js"

CSP = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
    "connect-src 'self' ws: wss:; script-src 'self'; style-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
TEXT_TYPES = ("text/", "application/javascript", "application/json", "image/svg+xml")
# Assets loaded by fingerprinted URL (?v=<hash>) never change under that URL.
IMMUTABLE = "public, max-age=31536000, immutable"
QR_MAX = 512


def _static_url(app: web.Application, filename: str) -> str:
    for resource in app.router.resources():
        if isinstance(resource, web.StaticResource) and resource.canonical == "/static":
            return str(resource.url_for(filename=filename))
    return f"/static/{filename}"


def _has_route(app: web.Application, path: str) -> bool:
    return any(r.canonical == path for r in app.router.resources())


def _vendor_version() -> str:
    try:
        st = SOCKET_IO_ESM.stat()
    except OSError:
        return "0"
    return f"{st.st_mtime_ns:x}{st.st_size:x}"


async def index(request: web.Request) -> web.Response:
    """The single-page shell. Everything user-specific is fetched by the script."""
    settings = deps_of(request).settings
    context = {
        "css": _static_url(request.app, "css/app.css"),
        "js": _static_url(request.app, "js/main.js"),
        "icon": _static_url(request.app, "img/icon.svg"),
        "vendor": f"{VENDOR_PATH}?v={_vendor_version()}",
        "code_login": bool(settings.smtp_url or settings.sms_provider),
        "recall_window": settings.recall_window_seconds,
        "max_text": settings.max_text_length,
        # Parts of the UI appear only when the server has their routes.
        "groups": _has_route(request.app, "/api/v1/groups"),
        "media": _has_route(request.app, "/api/v1/media"),
    }
    response = aiohttp_jinja2.render_template("index.html", request, context)
    response.headers["Cache-Control"] = "no-cache"
    return response


async def vendor_socketio(request: web.Request) -> web.StreamResponse:
    """socket.io-client's ESM build, installed by npm (package-lock.json)."""
    if not SOCKET_IO_ESM.is_file():
        raise web.HTTPNotFound(reason="socket.io-client is not installed: run `npm ci`.")
    return web.FileResponse(SOCKET_IO_ESM, headers={"Content-Type": "application/javascript"})


async def qr_svg(request: web.Request) -> web.Response:
    """A QR code (SVG) for a short text, e.g. a group invite link. Pure function of
    the query; nothing is stored or looked up."""
    import segno

    text = request.query.get("text", "")
    if not text or len(text) > QR_MAX:
        raise web.HTTPBadRequest(reason=f"Give `text`, 1-{QR_MAX} characters.")
    buf = io.BytesIO()
    segno.make(text, error="m").save(buf, kind="svg", scale=6, border=2, xmldecl=False,
                                     svgns=True, dark="#111", light="#fff")
    return web.Response(body=buf.getvalue(), content_type="image/svg+xml",
                        headers={"Cache-Control": "private, max-age=3600"})


def _is_text(content_type: str) -> bool:
    return content_type.startswith(TEXT_TYPES)


@web.middleware
async def web_headers_middleware(request: web.Request, handler):
    """CSP and hardening headers on every response; cache headers and gzip for assets."""
    response = await handler(request)
    if response.prepared:  # WebSocket upgrades and streams already sent their headers
        return response
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    if request.secure:
        # Only over our own TLS (TLS_CERT_FILE): a plain-HTTP answer must not
        # pin a host to HTTPS, and a TLS front sends this header itself.
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    path = request.path
    if path.startswith(("/static/", "/vendor/")) and response.status in (200, 206, 304):
        if "v" in request.query:
            headers["Cache-Control"] = IMMUTABLE
        else:
            # Module imports without a fingerprint: revalidate with the ETag.
            headers["Cache-Control"] = "no-cache"
    web_client = path == "/" or path.startswith(("/static/", "/vendor/"))
    content_type = response.content_type or ""
    if isinstance(response, web.FileResponse) and "Content-Type" not in headers:
        # A FileResponse guesses its type only when prepared; guess the same way now.
        content_type = mimetypes.guess_type(path)[0] or ""
    # A FileResponse picks 304/206 only when prepared: leave conditional and
    # ranged requests uncompressed (a compressed empty 304 body breaks keep-alive).
    conditional = isinstance(response, web.FileResponse) and any(
        h in request.headers for h in ("If-None-Match", "If-Modified-Since", "Range",
                                       "If-Range", "If-Match", "If-Unmodified-Since"))
    if (web_client and response.status == 200 and not conditional and _is_text(content_type)
            and "Content-Encoding" not in headers):
        response.enable_compression()
        headers.setdefault("Vary", "Accept-Encoding")
    return response
