"""The one routes table. Paths under /api/v1 are the public REST contract."""

from aiohttp import web

from app.api import (
                     auth,
                     contacts,
                     conversations,
                     groups,
                     health,
                     media,
                     oauth,
                     openapi,
                     privacy,
                     push,
                     search,
                     users,
)
from app.api import web as web_client
from app.metrics import metrics_endpoint

API = "/api/v1"

ROUTES = [
    web.get("/healthz", health.healthz),
    web.get("/readyz", health.readyz),
    web.get("/metrics", metrics_endpoint),
    web.get(f"{API}/openapi.json", openapi.openapi_json),
    # accounts
    web.post(f"{API}/auth/register", auth.register),
    web.post(f"{API}/auth/login", auth.login),
    web.post(f"{API}/auth/codes", auth.request_code),
    web.post(f"{API}/auth/login/code", auth.login_with_code),
    web.post(f"{API}/auth/password/reset", auth.reset_password),
    web.post(f"{API}/auth/refresh", auth.refresh),
    web.post(f"{API}/auth/logout", auth.logout),
    web.get(f"{API}/auth/sessions", auth.list_sessions),
    web.delete(f"{API}/auth/sessions/{{session_id}}", auth.end_session),
    # sign-in with other providers, linked accounts
    web.get(f"{API}/auth/oauth/providers", oauth.list_providers),
    web.post(f"{API}/auth/oauth/exchange", oauth.exchange),
    web.get(f"{API}/auth/oauth/{{provider}}/start", oauth.start),
    web.get(f"{API}/auth/oauth/{{provider}}/callback", oauth.callback),
    web.post(f"{API}/auth/oauth/{{provider}}/token", oauth.mobile_token),
    web.get(f"{API}/me/identities", oauth.list_identities),
    web.post(f"{API}/me/identities/{{provider}}/start", oauth.start_link),
    web.delete(f"{API}/me/identities/{{identity_id}}", oauth.unlink),
    web.get(f"{API}/me", users.get_me),
    web.get(f"{API}/me/settings", contacts.get_settings),
    web.patch(f"{API}/me/settings", contacts.patch_settings),
    web.patch(f"{API}/me", users.patch_me),
    # own account: password, addresses, avatar
    web.post(f"{API}/me/password", users.change_password),
    web.post(f"{API}/me/email", users.change_email),
    web.post(f"{API}/me/phone", users.change_phone),
    web.put(f"{API}/me/avatar", users.put_avatar),
    web.delete(f"{API}/me/avatar", users.delete_avatar),
    web.get(f"{API}/avatars/{{key}}/{{size}}", media.avatar),
    web.delete(f"{API}/me", users.delete_me),
    web.post(f"{API}/me/export", privacy.request_export),
    web.get(f"{API}/me/export", privacy.get_export),
    web.get(f"{API}/me/export/{{export_id}}/download", privacy.download_export),
    web.get(f"{API}/users/search", users.search),
    web.get(f"{API}/users/{{user_id}}", users.get_user),
    # conversations and messages
    web.post(f"{API}/conversations/direct", conversations.create_direct),
    web.get(f"{API}/conversations", conversations.list_conversations),
    web.get(f"{API}/conversations/{{conversation_id}}", conversations.get_conversation),
    web.patch(f"{API}/conversations/{{conversation_id}}", conversations.patch_conversation),
    web.get(f"{API}/conversations/{{conversation_id}}/messages", conversations.list_messages),
    web.post(f"{API}/conversations/{{conversation_id}}/messages", conversations.send_message),
    # search
    web.get(f"{API}/search/messages", search.search_messages),
    web.get(f"{API}/search", search.search_all),
    # contacts, requests, blocks
    web.get(f"{API}/contacts", contacts.list_contacts),
    web.get(f"{API}/contacts/requests", contacts.list_requests),
    web.post(f"{API}/contacts/requests", contacts.send_request),
    web.post(f"{API}/contacts/requests/{{request_id}}/accept", contacts.accept_request),
    web.post(f"{API}/contacts/requests/{{request_id}}/reject", contacts.reject_request),
    web.patch(f"{API}/contacts/{{user_id}}", contacts.patch_contact),
    web.delete(f"{API}/contacts/{{user_id}}", contacts.delete_contact),
    web.get(f"{API}/blocks", contacts.list_blocks),
    web.post(f"{API}/blocks", contacts.block),
    web.delete(f"{API}/blocks/{{user_id}}", contacts.unblock),
    # groups: the fixed paths come before /groups/{group_id}
    web.post(f"{API}/groups", groups.create_group),
    web.post(f"{API}/groups/join", groups.join),
    web.get(f"{API}/groups/invites/{{token}}", groups.preview_invite),
    web.get(f"{API}/groups/{{group_id}}", groups.get_group),
    web.patch(f"{API}/groups/{{group_id}}", groups.patch_group),
    web.delete(f"{API}/groups/{{group_id}}", groups.dissolve_group),
    web.post(f"{API}/groups/{{group_id}}/members", groups.add_members),
    web.patch(f"{API}/groups/{{group_id}}/members/{{user_id}}", groups.patch_member),
    web.delete(f"{API}/groups/{{group_id}}/members/{{user_id}}", groups.remove_member),
    web.post(f"{API}/groups/{{group_id}}/transfer", groups.transfer),
    web.put(f"{API}/groups/{{group_id}}/avatar", groups.put_group_avatar),
    web.delete(f"{API}/groups/{{group_id}}/avatar", groups.delete_group_avatar),
    web.post(f"{API}/groups/{{group_id}}/invites", groups.create_invite),
    web.get(f"{API}/groups/{{group_id}}/invites", groups.list_invites),
    web.delete(f"{API}/groups/{{group_id}}/invites/{{token}}", groups.revoke_invite),
    web.get(f"{API}/conversations/{{conversation_id}}/messages/{{message_id}}/readers",
            groups.readers),
    web.get(f"{API}/conversations/{{conversation_id}}/pins", conversations.list_pins),
    # media
    web.post(f"{API}/media", media.upload),
    web.get(f"{API}/media/{{media_id}}", media.get_media),
    web.get(f"{API}/media/{{media_id}}/content", media.content),
    web.get(f"{API}/media/{{media_id}}/thumbnail", media.thumbnail),
    # push notifications
    web.get(f"{API}/push/vapid-public-key", push.vapid_public_key),
    web.post(f"{API}/push/subscriptions", push.subscribe),
    web.get(f"{API}/push/subscriptions", push.list_subscriptions),
    web.delete(f"{API}/push/subscriptions/{{subscription_id}}", push.unsubscribe),
    # the web client (kept last: nothing above depends on it)
    web.get("/", web_client.index),
    web.get("/assets/{name}", web_client.asset),
    web.get("/sw.js", web_client.service_worker),
    web.get("/manifest.webmanifest", web_client.manifest),
    web.get("/qr.svg", web_client.qr_svg),
    web.get("/join/{token}", web_client.index),  # group invite links open the client
]
