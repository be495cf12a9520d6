"""REST: push devices (`/push/...`). Push settings live under /me/settings."""

from aiohttp import web

from app.api.http import auth_of, deps_of, json_response, read_json
from app.services import push


async def vapid_public_key(request: web.Request) -> web.Response:
    await auth_of(request)
    return json_response({"key": push.vapid_public_key(deps_of(request))})


async def subscribe(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    data = await read_json(request, push.SubscriptionIn, cap=8 * 1024)
    sub, created = await push.subscribe(deps_of(request), auth, data)
    return json_response({"subscription": sub}, status=201 if created else 200)


async def list_subscriptions(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    subs = await push.list_subscriptions(deps_of(request), auth)
    return json_response({"subscriptions": subs})


async def unsubscribe(request: web.Request) -> web.Response:
    auth = await auth_of(request)
    await push.unsubscribe(deps_of(request), auth, request.match_info["subscription_id"])
    return web.Response(status=204)
