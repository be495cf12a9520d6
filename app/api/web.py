"""The web client: the server-rendered shell at `/`, the built assets (one
content-hashed JS bundle, one CSS file, icons; see scripts/build-web.mjs) with
their precompressed variants, the service worker at `/sw.js`, the web app
manifest, and the headers every response gets (CSP, caching)."""

from __future__ import annotations

import gzip
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import aiohttp_jinja2
from aiohttp import web

from app.api.http import deps_of
from app.config import ROOT

BUILD_DIR = ROOT / "build" / "web"

# Assets are fingerprinted (their name carries a hash of their bytes): cache forever.
IMMUTABLE = "public, max-age=31536000, immutable"
QR_MAX = 512
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".svg": "image/svg+xml", ".png": "image/png", ".json": "application/json"}
COMPRESSIBLE = (".js", ".css", ".svg", ".json")
TEXT_TYPES = ("text/", "application/json", "application/manifest+json", "image/svg+xml")
ASSET_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    br: bytes | None
    gz: bytes | None
    etag: str


@dataclass
class Build:
    """The built client, read once per process (`scripts/build-web.mjs` wrote it)."""

    version: str
    js: str
    css: str
    icons: dict
    sw: bytes
    assets: dict  # name → Asset

    @classmethod
    def load(cls, directory: Path = BUILD_DIR) -> Build:
        meta = json.loads((directory / "build.json").read_text())
        assets = {}
        for path in (directory / "assets").iterdir():
            if path.suffix in (".gz", ".br"):
                continue
            br = path.with_name(path.name + ".br")
            gz = path.with_name(path.name + ".gz")
            assets[path.name] = Asset(
                body=path.read_bytes(), content_type=TYPES.get(path.suffix, "application/octet-stream"),
                br=br.read_bytes() if br.exists() else None, gz=gz.read_bytes() if gz.exists() else None,
                etag=f'"{path.stem.rsplit("-", 1)[-1]}"')
        return cls(version=meta["version"], js=meta["js"], css=meta["css"], icons=meta["icons"],
                   sw=(directory / meta["sw"]).read_bytes(), assets=assets)


_loaded: dict[Path, tuple[int, Build]] = {}


def build_of(app: web.Application | None = None, directory: Path = BUILD_DIR) -> Build:
    """The current build, re-read when scripts/build-web.mjs wrote a new one."""
    try:
        stamp = (directory / "build.json").stat().st_mtime_ns
        cached = _loaded.get(directory)
        if cached is None or cached[0] != stamp:
            _loaded[directory] = cached = (stamp, Build.load(directory))
        return cached[1]
    except (OSError, ValueError, KeyError) as exc:
        raise web.HTTPServiceUnavailable(
            text="The web client is not built: run `node scripts/build-web.mjs` "
                 "(scripts/serve and scripts/test do it).") from exc


def asset_base(settings) -> str:
    return settings.asset_url.rstrip("/")


def asset_href(settings, rel: str) -> str:
    """URL of a built file (`assets/…`): under ASSET_URL when set, else this server."""
    return f"{asset_base(settings)}/{rel}" if settings.asset_url else f"/{rel}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def csp_for(settings) -> str:
    """The Content-Security-Policy: this origin only, plus the ASSET_URL origin for assets."""
    cdn = _origin(settings.asset_url)
    extra = f" {cdn}" if cdn else ""
    return (
        f"default-src 'self'; img-src 'self' blob: data:{extra}; media-src 'self' blob:; "
        f"connect-src 'self' ws: wss:{extra}; script-src 'self'{extra}; style-src 'self'{extra}; "
        f"font-src 'self'{extra}; manifest-src 'self'; worker-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )


def _has_route(app: web.Application, path: str) -> bool:
    return any(r.canonical == path for r in app.router.resources())


def _has_method(app: web.Application, path: str, method: str) -> bool:
    for resource in app.router.resources():
        if resource.canonical == path:
            if any(route.method == method for route in resource):
                return True
    return False


def _icon_data_uri(build: Build) -> str:
    svg = build.assets[Path(build.icons["icon.svg"]).name].body.decode()
    # An inline icon costs the first load no request.
    return "data:image/svg+xml," + quote(svg, safe=" =:/'\"")


async def index(request: web.Request) -> web.Response:
    """The single-page shell. Everything user-specific is fetched by the script."""
    settings = deps_of(request).settings
    build = build_of(request.app)
    app = request.app
    context = {
        "css": asset_href(settings, build.css),
        "js": asset_href(settings, build.js),
        "icon": _icon_data_uri(build),
        "code_login": bool(settings.smtp_url or settings.sms_provider),
        "require_verification": settings.require_verification,
        "delete_grace_days": settings.account_delete_grace_days,
        "recall_window": settings.recall_window_seconds,
        "edit_window": settings.edit_window_seconds,
        "max_text": settings.max_text_length,
        # Parts of the UI appear only when the server has their routes.
        "groups": _has_route(app, "/api/v1/groups"),
        "media": _has_route(app, "/api/v1/media"),
        "invite_revoke": _has_method(app, "/api/v1/groups/{group_id}/invites/{token}", "DELETE"),
        "invite_list": _has_method(app, "/api/v1/groups/{group_id}/invites", "GET"),
    }
    response = aiohttp_jinja2.render_template("index.html", request, context)
    response.headers["Cache-Control"] = "no-cache"
    return response


def _accepts(request: web.Request, coding: str) -> bool:
    """Whether Accept-Encoding allows `coding` (listed, and not with q=0)."""
    for part in request.headers.get("Accept-Encoding", "").split(","):
        name, *params = (p.strip() for p in part.split(";"))
        if name.lower() != coding:
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


def _encoded(request: web.Request, body: bytes, br: bytes | None, gz: bytes | None, headers: dict) -> bytes:
    headers["Vary"] = "Accept-Encoding"
    if br is not None and _accepts(request, "br"):
        headers["Content-Encoding"] = "br"
        return br
    if gz is not None and _accepts(request, "gzip"):
        headers["Content-Encoding"] = "gzip"
        return gz
    return body


async def asset(request: web.Request) -> web.Response:
    """A built asset, precompressed, cached for a year (its name changes with its bytes)."""
    name = request.match_info["name"]
    found = build_of(request.app).assets.get(name) if ASSET_NAME.match(name) else None
    if found is None:
        raise web.HTTPNotFound()
    headers = {"Cache-Control": IMMUTABLE, "ETag": found.etag,
               "Content-Type": found.content_type, "Access-Control-Allow-Origin": "*"}
    if request.headers.get("If-None-Match") == found.etag:
        return web.Response(status=304, headers={k: v for k, v in headers.items() if k != "Content-Type"})
    body = _encoded(request, found.body, found.br, found.gz, headers)
    return web.Response(body=body, headers=headers)


async def service_worker(request: web.Request) -> web.Response:
    """The one service worker, scope `/`. Its first line names this build's shell."""
    settings = deps_of(request).settings
    build = build_of(request.app)
    shell = [asset_href(settings, build.js), asset_href(settings, build.css)]
    icon = asset_href(settings, build.icons["icon-192.png"])  # for push notifications
    body = (f"self.PARLEY={json.dumps({'version': build.version, 'shell': shell, 'icon': icon})};\n"
            .encode() + build.sw)
    headers = {"Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "no-cache"}
    data = _encoded(request, body, None, gzip.compress(body, 6), headers)
    return web.Response(body=data, headers=headers)


async def manifest(request: web.Request) -> web.Response:
    """The web app manifest: name, colours, icons (installable)."""
    settings = deps_of(request).settings
    build = build_of(request.app)
    icons = [
        {"src": asset_href(settings, build.icons["icon.svg"]), "sizes": "any", "type": "image/svg+xml"},
        {"src": asset_href(settings, build.icons["icon-192.png"]), "sizes": "192x192", "type": "image/png"},
        {"src": asset_href(settings, build.icons["icon-512.png"]), "sizes": "512x512", "type": "image/png"},
        {"src": asset_href(settings, build.icons["icon-maskable-192.png"]), "sizes": "192x192",
         "type": "image/png", "purpose": "maskable"},
        {"src": asset_href(settings, build.icons["icon-maskable-512.png"]), "sizes": "512x512",
         "type": "image/png", "purpose": "maskable"},
    ]
    body = {
        "name": "Parley", "short_name": "Parley", "id": "/", "start_url": "/", "scope": "/",
        "display": "standalone", "background_color": "#ededed", "theme_color": "#2e2e2e",
        "description": "Instant messaging on your own server.", "icons": icons,
    }
    return web.Response(text=json.dumps(body), content_type="application/manifest+json",
                        headers={"Cache-Control": "no-cache"})


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


@web.middleware
async def web_headers_middleware(request: web.Request, handler):
    """CSP and hardening headers on every response; gzip for the shell page."""
    response = await handler(request)
    if response.prepared:  # WebSocket upgrades and streams already sent their headers
        return response
    headers = response.headers
    try:
        csp = csp_for(deps_of(request).settings)
    except (KeyError, AttributeError):
        csp = csp_for(type("S", (), {"asset_url": ""})())
    headers.setdefault("Content-Security-Policy", csp)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    if request.secure:
        # Only over our own TLS (TLS_CERT_FILE): a plain-HTTP answer must not
        # pin a host to HTTPS, and a TLS front sends this header itself.
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    content_type = response.content_type or ""
    shell = request.path == "/" or request.path.startswith("/join/") or request.path == "/manifest.webmanifest"
    if (shell and response.status == 200 and content_type.startswith(TEXT_TYPES)
            and "Content-Encoding" not in headers):
        response.enable_compression()
        headers.setdefault("Vary", "Accept-Encoding")
    return response
