"""Data export: a zip of everything a person's account holds or can see.

POST /me/export queues one (at most one a day); a supervised job in every
process builds queued exports (claimed with a conditional update, so one
process builds each), tells the person's devices (`export:ready`, and an
email when SMTP is configured) and deletes exports after EXPORT_TTL_DAYS.

The zip is written entry by entry into a spool file while messages are read
in keyset-paged batches, then streamed into media storage (encrypted at rest
like any file there): memory stays flat however long the history.

Layout: index.html (readable: profile, contacts, groups, conversations with
links), data.json (profile, settings, contacts, groups, conversations),
messages/<conversation>.json and .html, media/<id>-<name> (own uploads).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import html
import json
import logging
import os
import tempfile
import time
import uuid
import zipfile
from datetime import timedelta

from tortoise.expressions import Q

from app.clock import now
from app.config import Settings
from app.deps import Deps
from app.errors import NotFound, RateLimited, Unauthorized
from app.models.accounts import User
from app.models.contacts import Contact
from app.models.media import Media
from app.models.messaging import HiddenMessage, Membership, Message
from app.models.privacy import DataExport
from app.services.workers import Periodic
from app.storage import new_key

log = logging.getLogger("parley.export")

EXPORT_PATH = "/api/v1/me/export"
BATCH = 1000
BUILD_TIMEOUT = timedelta(hours=1)  # a build claimed longer ago is taken over


# --- requests ----------------------------------------------------------------


async def request_export(deps: Deps, user_id: str) -> dict:
    recent = await DataExport.filter(user_id=user_id,
                                     created_at__gt=now() - timedelta(days=1)) \
        .exclude(status="failed").order_by("-created_at").first()
    if recent is not None:
        wait = (recent.created_at + timedelta(days=1) - now()).total_seconds()
        raise RateLimited(max(1.0, wait), "One export a day: the last one is on the way or "
                                          "ready to download.")
    export = await DataExport.create(id=uuid.uuid4(), user_id=user_id)
    worker = deps.extras.get("export_worker")
    if worker is not None:
        worker.wake()
    return export_view(deps.settings, export)


async def export_status(deps: Deps, user_id: str) -> dict:
    export = await DataExport.filter(user_id=user_id).order_by("-created_at").first()
    return {"export": export_view(deps.settings, export) if export else None}


def export_view(settings: Settings, export: DataExport) -> dict:
    out = {
        "id": str(export.id),
        "status": "pending" if export.status == "building" else export.status,
        "created_at": export.created_at.isoformat(),
        "ready_at": _iso(export.ready_at),
        "size": export.size,
        "expires_at": (export.ready_at + timedelta(days=settings.export_ttl_days)).isoformat()
        if export.ready_at else None,
        "url": None,
    }
    if export.status == "ready":
        out["url"] = signed_url(settings, str(export.id))
    return out


# --- signed download links -------------------------------------------------------


def _link_key(settings: Settings) -> bytes:
    return hashlib.sha256(b"parley export links\x00" + settings.secret_key.encode()).digest()


def _signature(settings: Settings, export_id: str, exp: int) -> str:
    mac = hmac.new(_link_key(settings), f"{export_id}\x00{exp}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:24]).decode().rstrip("=")


def signed_url(settings: Settings, export_id: str, exp: int | None = None) -> str:
    exp = exp or int(time.time()) + settings.export_link_ttl
    base = settings.public_url.rstrip("/")
    return (f"{base}{EXPORT_PATH}/{export_id}/download?exp={exp}"
            f"&sig={_signature(settings, export_id, exp)}")


async def open_download(deps: Deps, export_id: str, exp: str | None, sig: str | None):
    """(storage, key, size, filename) of a ready export whose link is valid."""
    try:
        eid = str(uuid.UUID(export_id))
        expiry = int(exp or "")
    except ValueError:
        raise Unauthorized("Invalid or expired download link.") from None
    if not sig or expiry < time.time() or not hmac.compare_digest(
            sig, _signature(deps.settings, eid, expiry)):
        raise Unauthorized("Invalid or expired download link.")
    export = await DataExport.get_or_none(id=eid, status="ready")
    if export is None or not export.storage_key:
        raise NotFound("This export no longer exists.")
    name = f"parley-export-{export.ready_at:%Y%m%d}.zip"
    return deps.extras["storage"], export.storage_key, export.size, name


# --- building ---------------------------------------------------------------


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _user_view(u: User) -> dict:
    return {"id": str(u.id), "username": u.username, "display_name": u.display_name}


class _Names:
    """Display names of senders, loaded once each."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    async def fill(self, ids) -> None:
        missing = [i for i in {str(i) for i in ids if i} if i not in self.names]
        if missing:
            for uid, name in await User.filter(id__in=missing).values_list("id",
                                                                          "display_name"):
                self.names[str(uid)] = name

    def of(self, uid) -> str:
        return self.names.get(str(uid), "Deleted account") if uid else "System"


_PAGE = """<!doctype html><meta charset="utf-8"><title>{title}</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;max-width:50em;margin:2em auto;padding:0 1em}}
.m{{margin:.4em 0}}.t{{color:#666;font-size:.85em}}</style><h1>{title}</h1>
"""


async def _build_zip(deps: Deps, user: User, path: str) -> None:
    uid = user.id
    zf = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True)
    try:
        contacts = await Contact.filter(owner_id=uid).select_related("contact")
        members = await Membership.filter(user_id=uid).select_related("conversation") \
            .order_by("id")
        names = _Names()
        peers = await Membership.filter(
            conversation_id__in=[m.conversation_id for m in members
                                 if m.conversation.type == "direct"]).exclude(user_id=uid) \
            .values_list("conversation_id", "user_id")
        peer_of = {str(c): str(u) for c, u in peers}
        await names.fill(peer_of.values())
        conversations = []
        for m in members:
            c = m.conversation
            title = c.title if c.type == "group" else names.of(peer_of.get(str(c.id)))
            conversations.append({
                "id": str(c.id), "type": c.type, "title": title, "role": m.role,
                "joined_at": _iso(m.joined_at), "left_at": _iso(m.left_at),
                "file": f"messages/{c.id}.json"})
        data = {
            "exported_at": now().isoformat(),
            "profile": {**_user_view(user), "bio": user.bio, "email": user.email,
                        "phone": user.phone, "created_at": _iso(user.created_at),
                        "language": user.language},
            "settings": {k: getattr(user, k) for k in (
                "allow_strangers", "send_read_receipts", "last_seen_visibility",
                "discoverable_by_email", "discoverable_by_phone")},
            "contacts": [{**_user_view(c.contact), "remark": c.remark,
                          "since": _iso(c.created_at)} for c in contacts],
            "groups": [c for c in conversations if c["type"] == "group"],
            "conversations": conversations,
        }
        await asyncio.to_thread(zf.writestr, "data.json",
                                json.dumps(data, ensure_ascii=False, indent=1))
        media_rows = await Media.filter(uploader_id=uid).order_by("created_at")
        await asyncio.to_thread(zf.writestr, "index.html", _index_html(data, media_rows))
        for m, conv in zip(members, conversations, strict=True):
            await _write_messages(zf, m, conv, uid, names)
        storage = deps.extras["storage"]
        for media in media_rows:
            await _write_media(zf, storage, media)
    finally:
        await asyncio.to_thread(zf.close)


def _index_html(data: dict, media_rows) -> str:
    e = html.escape
    p = data["profile"]
    out = [_PAGE.format(title=e(f"Parley data of {p['display_name']}"))]
    out.append(f"<h2>Profile</h2><p>{e(p['display_name'])} (@{e(p['username'])})<br>"
               f"Email: {e(p['email'] or '–')}<br>Phone: {e(p['phone'] or '–')}<br>"
               f"Bio: {e(p['bio'] or '–')}<br>Since {e(p['created_at'] or '')}</p>")
    out.append("<h2>Contacts</h2><ul>")
    out += [f"<li>{e(c['display_name'])} (@{e(c['username'])})"
            + (f" — {e(c['remark'])}" if c["remark"] else "") + "</li>"
            for c in data["contacts"]]
    out.append("</ul><h2>Groups</h2><ul>")
    out += [f"<li>{e(g['title'])} ({e(g['role'])})</li>" for g in data["groups"]]
    out.append("</ul><h2>Conversations</h2><ul>")
    out += [f'<li><a href="messages/{c["id"]}.html">{e(c["title"])}</a> '
            f'(<a href="messages/{c["id"]}.json">JSON</a>)</li>' for c in data["conversations"]]
    out.append("</ul><h2>My files</h2><ul>")
    out += [f'<li><a href="{e(_media_name(m))}">{e(m.name)}</a> ({m.size} bytes)</li>'
            for m in media_rows]
    out.append("</ul><p>data.json holds the same in machine-readable form.</p>")
    return "".join(out)


def _media_name(media: Media) -> str:
    return f"media/{media.id}-{media.name}"


async def _message_batches(m: Membership, uid):
    """The messages this member can see, oldest first, in batches."""
    q = Q(conversation_id=m.conversation_id, seq__gt=m.visible_from_seq)
    if m.left_seq is not None:
        q &= Q(seq__lte=m.left_seq)
    last = m.visible_from_seq
    while True:
        rows = await Message.filter(q & Q(seq__gt=last)).order_by("seq").limit(BATCH).values(
            "id", "seq", "sender_id", "type", "text", "data", "created_at", "recalled_at",
            "reply_to_id")
        if not rows:
            return
        last = rows[-1]["seq"]
        hidden = set(await HiddenMessage.filter(
            user_id=uid, message_id__in=[r["id"] for r in rows]).values_list("message_id",
                                                                             flat=True))
        yield [r for r in rows if r["id"] not in hidden]


def _message_out(r: dict, names: _Names) -> dict:
    recalled = r["recalled_at"] is not None
    out = {"seq": r["seq"], "id": str(r["id"]), "type": r["type"],
           "sender_id": str(r["sender_id"]) if r["sender_id"] else None,
           "sender": names.of(r["sender_id"]), "created_at": _iso(r["created_at"]),
           "text": "" if recalled else r["text"], "recalled": recalled}
    if r["reply_to_id"]:
        out["reply_to"] = str(r["reply_to_id"])
    if r["data"] and not recalled:
        out["data"] = r["data"]
    return out


async def _write_messages(zf: zipfile.ZipFile, m: Membership, conv: dict, uid,
                          names: _Names) -> None:
    e = html.escape
    # Two entries, one open at a time: the JSON, then the page.
    for kind in ("json", "html"):
        entry = zf.open(f"messages/{conv['id']}.{kind}", "w", force_zip64=True)
        try:
            if kind == "json":
                head = json.dumps({k: conv[k] for k in ("id", "type", "title")},
                                  ensure_ascii=False)[:-1] + ', "messages": [\n'
            else:
                head = _PAGE.format(title=e(conv["title"]))
            await asyncio.to_thread(entry.write, head.encode())
            first = True
            async for rows in _message_batches(m, uid):
                await names.fill(r["sender_id"] for r in rows)
                msgs = [_message_out(r, names) for r in rows]
                if kind == "json":
                    text = ",\n".join(json.dumps(x, ensure_ascii=False, default=str)
                                      for x in msgs)
                    text = text if first else ",\n" + text
                else:
                    text = "".join(
                        f'<div class="m"><span class="t">{e(x["created_at"] or "")}</span> '
                        f'<b>{e(x["sender"])}</b>: '
                        + (e("(recalled)") if x["recalled"] else e(x["text"]) or e(f"[{x['type']}]"))
                        + "</div>\n" for x in msgs)
                if text:
                    first = False
                    await asyncio.to_thread(entry.write, text.encode())
            await asyncio.to_thread(entry.write, b"\n]}\n" if kind == "json" else b"")
        finally:
            await asyncio.to_thread(entry.close)


async def _write_media(zf: zipfile.ZipFile, storage, media: Media) -> None:
    try:
        stream = await storage.open_range(media.storage_key, 0, None)
    except Exception as exc:  # a file lost from storage: the rest of the export still goes
        log.warning("export: media %s unreadable: %s", media.id, exc)
        return
    entry = zf.open(_media_name(media), "w", force_zip64=True)
    try:
        async with stream:
            async for chunk in stream:
                await asyncio.to_thread(entry.write, chunk)
    finally:
        await asyncio.to_thread(entry.close)


async def build(deps: Deps, export: DataExport) -> None:
    user = await User.get(id=export.user_id)
    storage = deps.extras["storage"]
    spool = os.path.join(deps.settings.media_root, ".spool")
    os.makedirs(spool, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="export-", suffix=".zip", dir=spool)
    os.close(fd)
    try:
        await _build_zip(deps, user, path)
        key = new_key(".zip")
        size = await storage.put_file(key, path, content_type="application/zip")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    await DataExport.filter(id=export.id).update(status="ready", storage_key=key, size=size,
                                                 ready_at=now())
    export = await DataExport.get(id=export.id)
    view = export_view(deps.settings, export)
    await deps.fanout.to_users([str(user.id)], "export:ready", {"export": view})
    await _email(deps, user, view)


async def _email(deps: Deps, user: User, view: dict) -> None:
    s = deps.settings
    if not s.smtp_url or not user.email:
        return
    from app.senders.smtp import SmtpSender

    try:
        await SmtpSender(s.smtp_url, s.smtp_from).send_text(
            user.email, "Your Parley data export is ready",
            "The copy of your Parley data you asked for is ready. Download it from "
            f"Me > Privacy & data within {s.export_ttl_days} days.\n")
    except Exception as exc:
        log.warning("export email not sent: %s", type(exc).__name__)


async def claim_next() -> DataExport | None:
    """The oldest queued export, claimed for this process (or one whose builder
    died: claimed longer than BUILD_TIMEOUT ago)."""
    stale = now() - BUILD_TIMEOUT
    for export in await DataExport.filter(
            Q(status="pending") | Q(status="building", claimed_at__lt=stale)) \
            .order_by("created_at").limit(5):
        claimed = {"claimed_at": export.claimed_at} if export.claimed_at else \
            {"claimed_at__isnull": True}
        if await DataExport.filter(id=export.id, status=export.status, **claimed) \
                .update(status="building", claimed_at=now()):
            return export
    return None


async def run_once(deps: Deps) -> int:
    built = 0
    while (export := await claim_next()) is not None:
        try:
            await build(deps, export)
            built += 1
        except Exception:
            log.exception("export %s failed", export.id)
            await DataExport.filter(id=export.id).update(status="failed",
                                                         error="could not build")
    await delete_expired(deps)
    return built


async def delete_expired(deps: Deps) -> int:
    cutoff = now() - timedelta(days=deps.settings.export_ttl_days)
    old = await DataExport.filter(Q(status="ready") | Q(status="failed"),
                                  created_at__lt=cutoff)
    storage = deps.extras.get("storage")
    for export in old:
        if storage is not None and export.storage_key:
            await storage.delete(export.storage_key)
        await export.delete()
    return len(old)


def export_worker(deps: Deps, interval: float = 5.0) -> Periodic:
    """Requested exports, every `interval` and at once when one is requested."""
    return Periodic("export job", lambda: run_once(deps), interval)

