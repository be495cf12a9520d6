"""Data export: the zip's content (JSON + readable HTML, profile, contacts,
groups, visible messages, own media), the export:ready event and email, the
signed short-lived link, one a day, deletion after the TTL, and memory that
stays flat with 200,000 messages."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from app.models.messaging import HiddenMessage, Message
from app.models.privacy import DataExport
from app.services import conversations as convs
from app.services import export, groups, messaging
from tests.factories import connect, make_contacts, make_user
from tests.test_codes import smtp  # noqa: F401 (fixture: a real SMTP server)
from tests.test_media_api import uploaded

pytestmark = pytest.mark.heavy

API = "/api/v1"


@pytest.fixture
def settings_overrides(smtp):  # noqa: F811
    return {"smtp_url": smtp.url}


async def say(deps, who, cid, text):
    return await messaging.send_message(deps, who.user_id, messaging.SendIn(
        conversation_id=str(cid), client_msg_id=uuid.uuid4().hex, text=text))


async def wait_ready(client, who, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = await client.get(f"{API}/me/export", headers=who.headers)
        body = await r.json()
        assert r.status == 200, body
        if body["export"]["status"] == "ready":
            return body["export"]
        assert body["export"]["status"] == "pending", body
        assert time.monotonic() < deadline, "export not ready in time"
        await asyncio.sleep(0.1)


async def mail_for(smtp, address: str, timeout: float = 10.0) -> list:  # noqa: F811
    deadline = time.monotonic() + timeout
    while True:
        if mails := smtp.to(address):
            return mails
        assert time.monotonic() < deadline, f"no mail for {address}"
        await asyncio.sleep(0.05)


async def download(client, url: str) -> zipfile.ZipFile:
    parts = urlsplit(url)
    r = await client.get(f"{parts.path}?{parts.query}")  # no Authorization: the link is enough
    assert r.status == 200, await r.text()
    assert r.headers["Content-Type"] == "application/zip"
    return zipfile.ZipFile(io.BytesIO(await r.read()))


async def test_export_holds_what_the_person_can_see_and_is_announced(client, deps, base_url,
                                                                     smtp):  # noqa: F811
    ann = await make_user(deps, "Ann")
    bob = await make_user(deps, "Bob <b>", email=f"bob{uuid.uuid4().hex[:6]}@example.org")
    cat = await make_user(deps, "Cat")
    await make_contacts(deps, ann, bob)
    await make_contacts(deps, ann, cat)
    await make_contacts(deps, bob, cat)
    direct, _ = await convs.get_or_create_direct(deps, ann.user_id, bob.user_id)
    await say(deps, ann, direct.id, "hello <script>bob</script>")
    await say(deps, bob, direct.id, "hi ann")
    hidden = await say(deps, bob, direct.id, "hidden from ann")
    await HiddenMessage.create(user_id=ann.user_id, message_id=int(hidden["id"]),
                               conversation_id=direct.id)
    gid = (await groups.create_group(deps, ann.user_id, groups.CreateIn(
        name="Team", member_ids=[bob.user_id])))["id"]
    await say(deps, bob, gid, "group hello")
    other, _ = await convs.get_or_create_direct(deps, bob.user_id, cat.user_id)
    await say(deps, bob, other.id, "not for ann")
    upload = await uploaded(client, ann, b"my own file\n" * 100, name="notes.txt")
    sock = await connect(base_url, ann.access_token)
    try:
        r = await client.post(f"{API}/me/export", headers=ann.headers)
        assert r.status == 202, await r.json()
        assert (await r.json())["export"]["status"] == "pending"
        # One a day.
        r = await client.post(f"{API}/me/export", headers=ann.headers)
        assert r.status == 429 and int(r.headers["Retry-After"]) > 80000
        ready = await wait_ready(client, ann)
        events = await sock.log.wait_for("export:ready", timeout=10)
    finally:
        await sock.disconnect()
    assert events[0]["export"]["id"] == ready["id"] and events[0]["export"]["url"]
    assert ready["size"] > 0 and ready["url"]
    # The email goes out right after the event: wait for it.
    mails = await mail_for(smtp, ann.email)
    assert "export" in mails[-1]["Subject"].lower()

    zf = await download(client, ready["url"])
    names = set(zf.namelist())
    data = json.loads(zf.read("data.json"))
    assert data["profile"]["email"] == ann.email
    assert {c["id"] for c in data["contacts"]} == {bob.user_id, cat.user_id}
    assert [g["title"] for g in data["groups"]] == ["Team"]
    direct_msgs = json.loads(zf.read(f"messages/{direct.id}.json"))["messages"]
    assert [m["text"] for m in direct_msgs if m["type"] == "text"] == [
        "hello <script>bob</script>", "hi ann"]
    assert {m["sender"] for m in direct_msgs} >= {"Ann", "Bob <b>"}
    group_msgs = json.loads(zf.read(f"messages/{gid}.json"))["messages"]
    assert "group hello" in [m["text"] for m in group_msgs]
    assert f"messages/{other.id}.json" not in names
    assert "not for ann" not in str([zf.read(n) for n in names if not n.startswith("media/")])
    # The readable side: escaped, linked.
    index = zf.read("index.html").decode()
    assert "Bob &lt;b&gt;" in index and f'href="messages/{direct.id}.html"' in index
    page = zf.read(f"messages/{direct.id}.html").decode()
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert zf.read(f"media/{upload['id']}-notes.txt") == b"my own file\n" * 100

    # The link is signed and short-lived.
    parts = urlsplit(ready["url"])
    q = parse_qs(parts.query)
    bad = await client.get(f"{parts.path}?exp={q['exp'][0]}&sig=AAAA{q['sig'][0][4:]}")
    assert bad.status == 401
    old = export.signed_url(deps.settings, ready["id"], exp=int(time.time()) - 1)
    assert (await client.get(urlsplit(old).path + "?" + urlsplit(old).query)).status == 401
    assert (await client.get(f"{API}/me/export", headers=bob.headers)).status == 200
    assert (await (await client.get(f"{API}/me/export", headers=bob.headers)).json()) == {
        "export": None}


async def test_exports_are_deleted_after_the_ttl(client, deps):
    ann = await make_user(deps, "Ann")
    assert (await client.post(f"{API}/me/export", headers=ann.headers)).status == 202
    ready = await wait_ready(client, ann)
    row = await DataExport.get(id=ready["id"])
    storage = deps.extras["storage"]
    assert await storage.exists(row.storage_key)
    await DataExport.filter(id=row.id).update(
        created_at=datetime.now(UTC) - timedelta(days=deps.settings.export_ttl_days, hours=1))
    assert await export.delete_expired(deps) == 1
    assert not await storage.exists(row.storage_key)
    assert not await DataExport.filter(id=row.id).exists()
    # The day has passed too: a new one may be asked for.
    assert (await client.post(f"{API}/me/export", headers=ann.headers)).status == 202


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def test_a_200000_message_history_exports_in_flat_memory(client, deps):
    ann = await make_user(deps, "Ann")
    bob = await make_user(deps, "Bob")
    await make_contacts(deps, ann, bob)
    conv, _ = await convs.get_or_create_direct(deps, ann.user_id, bob.user_id)
    n = 200_000
    text = "a message of moderate length, the kind people send all day long " * 2
    for start in range(0, n, 20_000):
        await Message.bulk_create([
            Message(conversation_id=conv.id, seq=seq, type="text", text=f"{seq} {text}",
                    sender_id=(ann if seq % 2 else bob).user_id,
                    client_msg_id=uuid.uuid4().hex)
            for seq in range(start + 1, min(n, start + 20_000) + 1)])
    from app.models.messaging import Conversation

    await Conversation.filter(id=conv.id).update(last_seq=n)
    import gc

    gc.collect()
    before = _peak_rss()
    assert (await client.post(f"{API}/me/export", headers=ann.headers)).status == 202
    ready = await wait_ready(client, ann, timeout=600)
    growth = _peak_rss() - before
    print(f"export of {n} messages: peak RSS +{growth / 2**20:.1f} MiB")
    assert growth < 100 * 1024 * 1024, f"peak RSS grew by {growth / 2**20:.0f} MiB"
    row = await DataExport.get(id=ready["id"])
    zipped = await deps.extras["storage"].read_bytes(row.storage_key)
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf, zf.open(f"messages/{conv.id}.json") as entry:
        count = sum(1 for line in io.TextIOWrapper(entry, encoding="utf-8")
                    if line.startswith('{"seq"'))
    assert count == n
