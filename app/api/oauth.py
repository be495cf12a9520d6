"""REST handlers for sign-in with other providers and linked accounts.

The browser-facing steps (start, callback) answer with redirects, failures
included: the web client shows `#oauth_error=<code>` as an error page. The JSON
steps (exchange, mobile token, identities) answer like every other route.
"""

from __future__ import annotations

import logging

from aiohttp import web

from app.api.http import (
    USER_ID_KEY,
    auth_of,
    client_ip,
    client_of,
    deps_of,
    json_response,
    read_json,
)
from app.errors import DomainError
from app.services import oauth

log = logging.getLogger("parley.oauth")


def _redirect_uri(request: web.Request, pid: str) -> str:
    base = deps_of(request).settings.public_url.rstrip("/") or str(request.url.origin())
    return f"{base}/api/v1/auth/oauth/{pid}/callback"


def _secure(request: web.Request) -> bool:
    return deps_of(request).settings.public_url.startswith("https://") or request.secure


def _set_binder(request: web.Request, response: web.StreamResponse, binder: str) -> None:
    response.set_cookie(oauth.COOKIE, binder, path=oauth.COOKIE_PATH, httponly=True,
                        samesite="Lax", secure=_secure(request),
                        max_age=deps_of(request).settings.oauth_flow_ttl)


def _to_page(fragment: str) -> web.Response:
    # The fragment never reaches a server, so the one-time code is in no access log.
    return web.Response(status=302, headers={"Location": f"/#{fragment}",
                                             "Cache-Control": "no-store",
                                             "Referrer-Policy": "no-referrer"})


async def list_providers(request: web.Request) -> web.Response:
    return json_response({"providers": oauth.public_providers(deps_of(request).settings)})


async def start(request: web.Request) -> web.Response:
    pid = request.match_info["provider"]
    try:
        started = await oauth.start(deps_of(request), pid, _redirect_uri(request, pid),
                                    request.query.get("return_to"), client_ip(request))
    except DomainError as exc:
        return _to_page(f"oauth_error={exc.code}")
    response = web.Response(status=302, headers={"Location": started.url,
                                                 "Cache-Control": "no-store"})
    _set_binder(request, response, started.binder)
    return response


async def callback(request: web.Request) -> web.Response:
    pid = request.match_info["provider"]
    params = dict(request.query)
    try:
        done = await oauth.callback(deps_of(request), pid, params,
                                    request.cookies.get(oauth.COOKIE),
                                    _redirect_uri(request, pid), client_of(request))
        response = _to_page(done.fragment)
    except DomainError as exc:
        log.info("oauth callback failed: %s", exc.code)
        response = _to_page(f"oauth_error={exc.code}")
    response.del_cookie(oauth.COOKIE, path=oauth.COOKIE_PATH)
    return response


async def exchange(request: web.Request) -> web.Response:
    data = await read_json(request, oauth.ExchangeIn, cap=4 * 1024)
    result = await oauth.exchange(deps_of(request), data, client_of(request))
    request[USER_ID_KEY] = result["user"]["id"]
    return json_response(result)


async def mobile_token(request: web.Request) -> web.Response:
    data = await read_json(request, oauth.MobileTokenIn, cap=16 * 1024)
    result = await oauth.mobile_sign_in(deps_of(request), request.match_info["provider"], data,
                                        client_of(request))
    request[USER_ID_KEY] = result["user"]["id"]
    return json_response(result)


async def list_identities(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    return json_response({"identities": await oauth.list_identities(deps_of(request), auth)})


async def start_link(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, oauth.LinkStartIn, cap=4 * 1024)
    pid = request.match_info["provider"]
    started = await oauth.start(deps_of(request), pid, _redirect_uri(request, pid),
                                data.return_to, client_ip(request), link_user_id=auth.user.id)
    response = json_response({"url": started.url})
    _set_binder(request, response, started.binder)
    return response


async def unlink(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    await oauth.unlink(deps_of(request), auth, request.match_info["identity_id"])
    return web.Response(status=204)
