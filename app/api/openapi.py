"""The REST API as an OpenAPI 3.1 document, served at GET /api/v1/openapi.json.

Request bodies and query strings are described by the very msgspec structs the
handlers decode with (`msgspec.json.schema_components`), so the document cannot
drift from what the server accepts. The table OPERATIONS names every route of
app/api/routes.py (tests/test_openapi.py fails when one is missing or extra);
routes that are not part of the JSON API are listed in NOT_IN_API.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import msgspec
from aiohttp import web

from app.api import conversations as api_convs
from app.api.http import json_response
from app.services import accounts, codes, contacts, erasure, groups, messaging, oauth, push, search
from app.services import conversations as convs

API = "/api/v1"
REF = "#/components/schemas/{name}"


class SendBody(messaging.SendIn):
    """A message sent over REST: the conversation is in the path."""


@dataclass(frozen=True)
class Op:
    summary: str
    tag: str
    status: int = 200  # the success status
    body: type | str | None = None  # a struct, "multipart", or None
    query: type | None = None  # a struct of query arguments
    query_args: dict = field(default_factory=dict)  # name -> schema, for ad-hoc ones
    auth: bool = True
    success: str = "application/json"  # media type of the success body ("" for none)


def _op(method: str, path: str, *args, **kw) -> tuple[tuple[str, str], Op]:
    return (method, path), Op(*args, **kw)


_STR = {"type": "string"}

OPERATIONS: dict[tuple[str, str], Op] = dict([
    _op("GET", "/healthz", "Liveness: the process serves requests.", "health", auth=False),
    _op("GET", "/readyz", "Readiness: the database (and Redis) answer.", "health", auth=False),
    _op("GET", f"{API}/openapi.json", "This document.", "meta", auth=False),
    # accounts
    _op("POST", f"{API}/auth/register", "Create an account.", "auth", 201,
        accounts.RegisterIn, auth=False),
    _op("POST", f"{API}/auth/login", "Sign in with a password.", "auth", body=accounts.LoginIn,
        auth=False),
    _op("POST", f"{API}/auth/codes", "Send a one-time code.", "auth", 202, codes.CodeRequestIn,
        auth=False),
    _op("POST", f"{API}/auth/login/code", "Sign in with a one-time code.", "auth",
        body=codes.CodeLoginIn, auth=False),
    _op("POST", f"{API}/auth/password/reset", "Set a new password with a code.", "auth",
        body=codes.PasswordResetIn, auth=False),
    _op("POST", f"{API}/auth/refresh", "Exchange a refresh token.", "auth",
        body=accounts.RefreshIn, auth=False),
    _op("POST", f"{API}/auth/logout", "End this session.", "auth", 204, success=""),
    _op("GET", f"{API}/auth/sessions", "My signed-in devices.", "auth"),
    _op("DELETE", f"{API}/auth/sessions/{{session_id}}", "Sign a device out.", "auth", 204,
        success=""),
    # sign-in with other providers (docs/api.md, "Sign in with other accounts")
    _op("GET", f"{API}/auth/oauth/providers", "The configured sign-in providers.", "auth",
        auth=False),
    _op("POST", f"{API}/auth/oauth/exchange",
        "Exchange the one-time code of a finished browser sign-in for tokens.", "auth",
        body=oauth.ExchangeIn, auth=False),
    _op("GET", f"{API}/auth/oauth/{{provider}}/start",
        "Browser: go to the provider (302), with state, PKCE and nonce.", "auth", 302,
        query_args={"return_to": _STR}, auth=False, success=""),
    _op("GET", f"{API}/auth/oauth/{{provider}}/callback",
        "Browser: the provider's redirect; 302 to the web client.", "auth", 302,
        query_args={"code": _STR, "state": _STR, "error": _STR}, auth=False, success=""),
    _op("POST", f"{API}/auth/oauth/{{provider}}/token",
        "Mobile: sign in with the provider's id_token or code.", "auth",
        body=oauth.MobileTokenIn, auth=False),
    _op("GET", f"{API}/me/identities", "My linked sign-in accounts.", "users"),
    _op("POST", f"{API}/me/identities/{{provider}}/start",
        "Start linking an account of this provider: `{url}` to open.", "users",
        body=oauth.LinkStartIn),
    _op("DELETE", f"{API}/me/identities/{{identity_id}}", "Unlink an account.", "users", 204,
        success=""),
    _op("GET", f"{API}/me", "My profile.", "users"),
    _op("GET", f"{API}/me/settings", "My privacy and push settings.", "users"),
    _op("PATCH", f"{API}/me/settings", "Change privacy and push settings.", "users",
        body=contacts.SettingsPatch),
    _op("PATCH", f"{API}/me", "Change my profile.", "users", body=accounts.ProfilePatch),
    # push notifications
    _op("GET", f"{API}/push/vapid-public-key", "The VAPID key for PushManager.subscribe.",
        "push"),
    _op("POST", f"{API}/push/subscriptions", "Register this device for pushes (200: known).",
        "push", 201, push.SubscriptionIn),
    _op("GET", f"{API}/push/subscriptions", "My push devices.", "push"),
    _op("DELETE", f"{API}/push/subscriptions/{{subscription_id}}", "Remove a push device.",
        "push", 204, success=""),
    # own account and avatars
    _op("POST", f"{API}/me/password",
        "Change my password; every other session ends.", "users", body=accounts.PasswordChangeIn),
    _op("POST", f"{API}/me/email",
        "Change my email: without `code` one is sent (202), with it the address changes.",
        "users", body=accounts.EmailChangeIn),
    _op("POST", f"{API}/me/phone",
        "Change my phone: without `code` one is sent (202), with it the number changes.",
        "users", body=accounts.PhoneChangeIn),
    _op("PUT", f"{API}/me/avatar", "Set my avatar (an image: raw body or multipart `file`).",
        "users", body="image"),
    _op("DELETE", f"{API}/me/avatar", "Remove my avatar.", "users"),
    _op("GET", f"{API}/avatars/{{key}}/{{size}}", "An avatar picture (size 64.jpg, 160.jpg, "
        "640.jpg); public and immutable.", "users", auth=False, success="image/jpeg"),
    _op("DELETE", f"{API}/me", "Delete my account (deactivated now, erased after the grace "
        "period unless I sign in again).", "users", 202, erasure.DeleteAccountIn),
    _op("POST", f"{API}/me/export", "Ask for a copy of my data (one a day).", "users", 202),
    _op("GET", f"{API}/me/export", "My latest data export: status and download link.",
        "users"),
    _op("GET", f"{API}/me/export/{{export_id}}/download",
        "Download an export (signed link from GET /me/export).", "users",
        query_args={"exp": _STR, "sig": _STR}, auth=False, success="application/zip"),
    _op("GET", f"{API}/users/search", "Find people by username, email or phone.", "users",
        query_args={"q": _STR}),
    _op("GET", f"{API}/users/{{user_id}}", "A user's public profile.", "users"),
    # search
    _op("GET", f"{API}/search/messages", "Find messages I can see (newest first).", "search",
        query=search.SearchIn),
    _op("GET", f"{API}/search", "The search box: contacts, group chats, chats with matches.",
        "search", query=search.SearchAllIn),
    # conversations and messages
    _op("POST", f"{API}/conversations/direct", "Open (or find) a direct chat.", "conversations",
        body=api_convs.DirectIn),
    _op("GET", f"{API}/conversations", "My conversations, newest first.", "conversations",
        query=api_convs.ListQuery),
    _op("GET", f"{API}/conversations/{{conversation_id}}", "One conversation.",
        "conversations"),
    _op("PATCH", f"{API}/conversations/{{conversation_id}}", "My settings of a chat (mute).",
        "conversations", body=convs.ConversationPatch),
    _op("GET", f"{API}/conversations/{{conversation_id}}/messages", "History, newest first.",
        "conversations", query=api_convs.HistoryQuery),
    _op("POST", f"{API}/conversations/{{conversation_id}}/messages", "Send a message.",
        "conversations", 201, SendBody),
    _op("GET", f"{API}/conversations/{{conversation_id}}/messages/{{message_id}}/readers",
        "Who has read a message.", "conversations"),
    _op("GET", f"{API}/conversations/{{conversation_id}}/pins",
        "Pinned messages of a chat, newest pin first.", "conversations"),
    # contacts
    _op("GET", f"{API}/contacts", "My contacts.", "contacts"),
    _op("GET", f"{API}/contacts/requests", "Contact requests to and from me.", "contacts"),
    _op("POST", f"{API}/contacts/requests", "Ask someone to be a contact.", "contacts", 201,
        contacts.RequestIn),
    _op("POST", f"{API}/contacts/requests/{{request_id}}/accept", "Accept a request.",
        "contacts"),
    _op("POST", f"{API}/contacts/requests/{{request_id}}/reject", "Reject a request.",
        "contacts"),
    _op("PATCH", f"{API}/contacts/{{user_id}}", "Set a remark.", "contacts",
        body=contacts.ContactPatch),
    _op("DELETE", f"{API}/contacts/{{user_id}}", "Remove a contact.", "contacts", 204,
        success=""),
    _op("GET", f"{API}/blocks", "People I block.", "contacts"),
    _op("POST", f"{API}/blocks", "Block someone.", "contacts", 201, contacts.BlockIn),
    _op("DELETE", f"{API}/blocks/{{user_id}}", "Unblock someone.", "contacts", 204,
        success=""),
    # groups
    _op("POST", f"{API}/groups", "Create a group.", "groups", 201, groups.CreateIn),
    _op("POST", f"{API}/groups/join", "Join with an invite token.", "groups",
        body=groups.JoinIn),
    _op("GET", f"{API}/groups/invites/{{token}}", "Preview an invite.", "groups"),
    _op("GET", f"{API}/groups/{{group_id}}", "A group and its members.", "groups"),
    _op("PATCH", f"{API}/groups/{{group_id}}", "Change a group (admins).", "groups",
        body=groups.PatchIn),
    _op("DELETE", f"{API}/groups/{{group_id}}", "Dissolve a group (owner).", "groups", 204,
        success=""),
    _op("POST", f"{API}/groups/{{group_id}}/members", "Add members.", "groups",
        body=groups.AddMembersIn),
    _op("PATCH", f"{API}/groups/{{group_id}}/members/{{user_id}}",
        "Change a member's role, or my own mute.", "groups", body=groups.MemberPatch),
    _op("DELETE", f"{API}/groups/{{group_id}}/members/{{user_id}}",
        "Remove a member, or leave.", "groups", 204, success=""),
    _op("POST", f"{API}/groups/{{group_id}}/transfer", "Hand the group to another member.",
        "groups", body=groups.TransferIn),
    _op("POST", f"{API}/groups/{{group_id}}/invites", "Create an invite link.", "groups", 201,
        groups.InviteIn),
    _op("GET", f"{API}/groups/{{group_id}}/invites", "The group's links that still join "
        "(owner/admins).", "groups"),
    _op("DELETE", f"{API}/groups/{{group_id}}/invites/{{token}}", "Revoke an invite link.",
        "groups", 204, success=""),
    _op("PUT", f"{API}/groups/{{group_id}}/avatar",
        "Set the group's avatar (owners and admins).", "groups", body="image"),
    _op("DELETE", f"{API}/groups/{{group_id}}/avatar", "Remove the group's avatar.", "groups"),
    # media
    _op("POST", f"{API}/media", "Upload a file (multipart/form-data: `kind`?, `file`).",
        "media", 201, "multipart", query_args={"kind": _STR}),
    _op("GET", f"{API}/media/{{media_id}}", "A file's metadata.", "media"),
    _op("GET", f"{API}/media/{{media_id}}/content",
        "The file (a signed link with `exp`, `u` and `sig`, or a bearer token).", "media",
        query_args={"exp": _STR, "sig": _STR, "u": _STR}, success="application/octet-stream"),
    _op("GET", f"{API}/media/{{media_id}}/thumbnail", "An image's or video's thumbnail.",
        "media", query_args={"exp": _STR, "sig": _STR, "u": _STR}, success="application/octet-stream"),
])

# Routes of app/api/routes.py that are not the JSON API: the web client and the
# Prometheus scrape (text format).
NOT_IN_API = {
    ("GET", "/metrics"),
    ("GET", "/"),
    ("GET", "/assets/{name}"),
    ("GET", "/sw.js"),
    ("GET", "/manifest.webmanifest"),
    ("GET", "/qr.svg"),
    ("GET", "/join/{token}"),
}

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": {"type": "string", "description": "Stable code clients switch on."},
            "message": {"type": "string"},
            "details": {"type": "object"},
        },
    }},
}


def _query_parameters(struct: type, components: dict) -> list[dict]:
    (schema,), extra = msgspec.json.schema_components([struct], ref_template=REF)
    components.update(extra)
    obj = components.pop(schema["$ref"].rsplit("/", 1)[1])
    params = []
    for name, prop in obj["properties"].items():
        prop = dict(prop)
        if "anyOf" in prop:  # `X | None`: a query argument is absent, never null
            prop = {**next(s for s in prop["anyOf"] if s.get("type") != "null"),
                    **{k: v for k, v in prop.items() if k not in ("anyOf", "default")}}
        params.append({"name": name, "in": "query", "required": name in obj["required"],
                       "schema": prop})
    return params


def _body_component(struct: type, components: dict) -> dict:
    (schema,), extra = msgspec.json.schema_components([struct], ref_template=REF)
    components.update(extra)
    if struct is SendBody:
        send = components[struct.__name__]
        send["properties"].pop("conversation_id", None)
        send["required"] = [r for r in send["required"] if r != "conversation_id"]
    return schema


def _path_params(path: str) -> list[dict]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in names]


def build() -> dict:
    components: dict = {}
    paths: dict = {}
    for (method, path), op in OPERATIONS.items():
        params = _path_params(path)
        if op.query is not None:
            params += _query_parameters(op.query, components)
        params += [{"name": n, "in": "query", "required": False, "schema": s}
                   for n, s in op.query_args.items()]
        operation: dict = {
            "summary": op.summary,
            "tags": [op.tag],
            "operationId": f"{method.lower()}_{path.replace(API, '').strip('/')}"
                           .replace("/", "_").replace("{", "").replace("}", "")
                           .replace(".", "_") or "root",
        }
        if params:
            operation["parameters"] = params
        if op.body == "multipart":
            operation["requestBody"] = {"required": True, "content": {"multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "properties": {
                    "kind": {"type": "string", "enum": ["image", "voice", "video", "file"]},
                    "file": {"type": "string", "contentMediaType": "application/octet-stream"},
                }}}}}
        elif op.body == "image":
            operation["requestBody"] = {"required": True, "content": {
                "image/*": {"schema": {"type": "string", "contentMediaType": "image/*"}},
                "multipart/form-data": {"schema": {
                    "type": "object", "required": ["file"], "properties": {
                        "file": {"type": "string", "contentMediaType": "image/*"}}}}}}
        elif op.body is not None:
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": _body_component(op.body, components)}}}
        success: dict = {"description": "Success."}
        if op.success:
            schema = {"type": "object"} if op.success == "application/json" else {
                "type": "string", "contentMediaType": op.success}
            success["content"] = {op.success: {"schema": schema}}
        error = {"description": "An error: see `code`.",
                 "content": {"application/json": {"schema": {"$ref": REF.format(name="Error")}}}}
        operation["responses"] = {str(op.status): success, "4XX": error, "default": error}
        operation["security"] = [{"bearer": []}] if op.auth else []
        paths.setdefault(path, {})[method.lower()] = operation
    components["Error"] = copy.deepcopy(ERROR_SCHEMA)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Parley REST API",
            "version": "1",
            "description": "Everything but real-time chat, which is Socket.IO on the /chat "
                           "namespace (docs/protocol.md). Errors are "
                           '`{"error": {"code", "message", "details"?}}`.',
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
    }


_DOCUMENT: bytes | None = None


async def openapi_json(request: web.Request) -> web.Response:
    global _DOCUMENT
    if _DOCUMENT is None:
        _DOCUMENT = msgspec.json.encode(build())
    return json_response(msgspec.Raw(_DOCUMENT))
