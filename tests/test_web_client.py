"""The web client end to end, in real headless Chromium (Debian's `chromium`,
driven by pip playwright), against a real server on a real port.

Runs on SQLite only: the browser suite exercises the client, and the server's
behaviour on PostgreSQL is covered by the protocol and REST suites.
Screenshots of the main screens go to test-artifacts/.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
from pathlib import Path

import pytest
from aiohttp import ClientSession

from app.models.accounts import User
from tests.factories import make_contacts, make_user

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
WAIT = 10_000  # ms: every Playwright wait is bounded by this
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
NAME_XSS = "<img src=x onerror=window.__xss=3>"  # display names are at most 64 characters

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium is not installed")


@pytest.fixture
def sqlite_only(settings):
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("the browser suite runs once, on SQLite")


@pytest.fixture
async def browser(sqlite_only):
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync",
                  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"],
        )
        yield b
        # The state every page ended in: the first thing to look at when a test fails.
        for i, ctx in enumerate(b.contexts):
            for j, page in enumerate(ctx.pages):
                try:
                    await page.screenshot(path=str(ARTIFACTS / f"last-{i}-{j}.png"))
                except Exception:  # noqa: BLE001 - best effort
                    pass
                for e in getattr(page, "errors", []):
                    print(f"page {i}-{j}: {e}")
        await b.close()


async def new_page(browser, base_url, *, locale="en-US", width=1280, height=800):
    ctx = await browser.new_context(locale=locale, viewport={"width": width, "height": height},
                                    permissions=["microphone", "clipboard-read",
                                                 "clipboard-write", "notifications"])
    ctx.set_default_timeout(WAIT)
    page = await ctx.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    await page.goto(base_url + "/")
    return page


async def shot(page, name):
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


async def register(page, name, username, email, password="correct horse battery"):
    await page.click("[data-action=to-signup]")
    form = page.locator("form[data-form=signup]")
    await form.locator("input[name=display_name]").fill(name)
    await form.locator("input[name=contact]").fill(email)
    await form.locator("input[name=username]").fill(username)
    await form.locator("input[name=password]").fill(password)
    await form.locator("button[type=submit]").click()
    await page.wait_for_selector(".shell")
    await page.wait_for_selector("body[data-connected=true]")


def chat_item(page, title):
    return page.locator(f".chat-item[data-title='{title}']")


async def open_chat(page, title):
    await page.click("a.nav-btn[data-view=chats]")
    await chat_item(page, title).click()
    await page.wait_for_selector(".chat .composer-input")


async def send_text(page, text):
    box = page.locator(".composer-input")
    await box.fill(text)
    await box.press("Enter")


def bubble(page, text):
    return page.locator(".msg .bubble .text", has_text=text)


async def png_bytes(color=(7, 193, 96)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (320, 200), color).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.timeout(240)
async def test_two_people_chat_in_real_browsers(browser, base_url, deps):
    alice = await new_page(browser, base_url)
    bob = await new_page(browser, base_url)

    # --- sign up -------------------------------------------------------------------
    await alice.wait_for_selector("form[data-form=signin]")
    await shot(alice, "01-sign-in")
    await register(alice, "Alice", "alice", "alice@example.org")
    await register(bob, f"Bob {NAME_XSS}", "bob", "bob@example.org")

    # --- contacts: request, badge, accept ----------------------------------------------
    await alice.click("a.nav-btn[data-view=contacts]")
    await alice.click("[data-action=add-contact]")
    await alice.fill("form[data-form=find-people] input[name=q]", "bob")
    await alice.click("form[data-form=find-people] button[type=submit]")
    await alice.click("[data-action=send-request]")
    await alice.wait_for_selector("[data-action=send-request][disabled]")
    # Bob's name is shown as text, never parsed.
    assert NAME_XSS in await alice.locator(".person-card .title").first.text_content()

    await bob.wait_for_selector("a.nav-btn[data-view=contacts] .badge:not([hidden])")
    assert await bob.locator("a.nav-btn[data-view=contacts] .badge").text_content() == "1"
    await bob.click("a.nav-btn[data-view=contacts]")
    await bob.click("[data-action=requests]")
    await bob.wait_for_selector("[data-request] [data-action=accept]")
    await shot(bob, "02-friend-request")
    await bob.click("[data-request] [data-action=accept]")
    await bob.wait_for_selector(".chat .composer-input")  # accepting opens our chat

    # --- text both ways, unread badge, read mark ------------------------------------------
    await send_text(bob, "Hi Alice! 你好")
    await bob.wait_for_selector(".msg.mine:not(.local) .bubble .text")
    await alice.click("a.nav-btn[data-view=chats]")
    bob_title = f"Bob {NAME_XSS}"
    item = alice.locator(".chat-item").first
    await item.locator(".badge", has_text="1").wait_for()
    assert NAME_XSS in await item.locator(".title").text_content()
    assert "Hi Alice" in await item.locator(".preview").text_content()
    await shot(alice, "03-chat-list-unread")

    await open_chat(alice, bob_title)
    await bubble(alice, "Hi Alice! 你好").wait_for()
    await bob.locator(".read-mark.read").wait_for()  # Bob sees "Read" under his message
    assert await bob.locator(".read-mark.read").text_content() == "Read"
    await item.locator(".badge").wait_for(state="hidden")

    # Enter sends, Shift+Enter is a newline; an XSS payload is just text.
    box = alice.locator(".composer-input")
    await box.fill("line one")
    await box.press("Shift+Enter")
    await box.type("line two")
    await box.press("Enter")
    await send_text(alice, XSS)
    await bubble(bob, "line one").wait_for()
    assert await bubble(bob, "line one").text_content() == "line one\nline two"
    await bubble(bob, "window.__xss").wait_for()
    assert await bubble(bob, "window.__xss").text_content() == XSS
    assert await bob.locator(".bubble img:not(.photo)").count() == 0

    # Typing indicator.
    await bob.locator(".composer-input").type("typing…")
    await alice.locator(".chat-sub.typing").wait_for()
    await bob.locator(".composer-input").fill("")

    # Reply to a message through the context menu.
    await bubble(alice, "Hi Alice! 你好").click(button="right")
    await alice.click(".ctx-menu [data-action=reply]")
    await send_text(alice, "Hello Bob, replying")
    await bob.locator(".msg .quote", has_text="Hi Alice").wait_for()

    # --- photo -------------------------------------------------------------------------
    await alice.set_input_files("input[data-input=photo]", files=[{
        "name": f"{XSS}.png", "mimeType": "image/png", "buffer": await png_bytes()}])
    await bob.locator(".msg.theirs img.photo").wait_for()
    await alice.locator(".msg.mine:not(.local) img.photo").wait_for()
    assert await bob.locator(".chat-item .preview", has_text="[Photo]").count() == 1

    # --- voice note from Chromium's fake microphone (hold to record) ------------------------
    voice = bob.locator("[data-action=voice]")
    await voice.hover()
    await bob.mouse.down()
    await bob.locator(".composer-extra .rec-time").wait_for()
    await alice.locator(".chat-sub.typing").wait_for()  # "recording voice…"
    await bob.wait_for_timeout(1600)
    await bob.mouse.up()
    await alice.locator(".msg.theirs button.voice").wait_for()
    assert re.search(r"\[Voice\] \d:\d\d",
                     await alice.locator(".chat-item .preview").first.text_content())
    await shot(alice, "04-chat")

    # --- mute this chat for me (all my devices follow; the server keeps it) -------------------
    await bob.click("[data-action=toggle-mute]")
    await bob.locator("[data-action=toggle-mute][aria-pressed=true]").wait_for()
    await bob.locator(".chat-item .muted-ico").wait_for()
    await bob.click("[data-action=toggle-mute]")
    await bob.locator("[data-action=toggle-mute][aria-pressed=false]").wait_for()

    # --- recall ----------------------------------------------------------------------------
    await send_text(alice, "oops, wrong chat")
    await bubble(bob, "oops, wrong chat").wait_for()
    await alice.locator(".msg.mine:not(.local) .bubble", has_text="oops").click(button="right")
    await alice.click(".ctx-menu [data-action=recall]")
    await bob.locator(".sys-line.recalled").wait_for()
    assert await bubble(bob, "oops, wrong chat").count() == 0
    await alice.locator(".sys-line.recalled", has_text="You recalled a message").wait_for()
    await bob.click("a.nav-btn[data-view=chats]")
    await bob.locator(".chat-item .preview", has_text="[Recalled]").wait_for()

    # --- offline: messages sent meanwhile are recovered by sync on reconnect --------------------
    await bob.evaluate("window.__parley.socket.disconnect()")
    await bob.locator(".banner:not([hidden])").wait_for()
    for i in range(3):
        await send_text(alice, f"while you were away {i}")
    await alice.locator(".msg.mine:not(.local) .bubble .text", has_text="away 2").wait_for()
    await bob.evaluate("window.__parley.socket.connect()")
    await bob.locator(".banner").wait_for(state="hidden")
    bob_item = chat_item(bob, "Alice")
    await bob_item.locator(".badge", has_text="3").wait_for()
    await bob_item.click()
    for i in range(3):
        await bubble(bob, f"while you were away {i}").wait_for()

    # A message sent while offline fails, and Retry resends it with the same client_msg_id.
    await alice.evaluate("window.__parley.socket.disconnect()")
    await send_text(alice, "sent when back")
    await alice.locator(".msg.local.failed").wait_for()
    await alice.evaluate("window.__parley.socket.connect()")
    await bubble(bob, "sent when back").wait_for()
    await alice.locator(".msg.local").wait_for(state="detached")
    assert await bubble(bob, "sent when back").count() == 1

    # --- group with a third person ----------------------------------------------------------
    carol = await make_user(deps, "Carol")
    alice_row = await User.get(username="alice")
    carol.user_id, alice_id = carol.user_id, str(alice_row.id)
    from tests.factories import Person

    await make_contacts(deps, Person(user_id=alice_id, username="alice", email="", password="",
                                     access_token="", refresh_token="", display_name="Alice"),
                        carol)
    await alice.reload()
    await alice.wait_for_selector("body[data-connected=true]")
    await alice.click("a.nav-btn[data-view=chats]")
    await alice.click(".list-title .icon-btn")
    await alice.fill("form[data-form=new-group] input[name=group_name]", "Trip planning")
    for name in (bob_title, "Carol"):
        await alice.locator(".pick-row", has_text=name).locator("input").check()
    await alice.click("form[data-form=new-group] button[type=submit]")
    await alice.locator(".sys-line", has_text="created the group").wait_for()
    await send_text(alice, "Welcome to the trip group")
    await bob.locator(".chat-item[data-title='Trip planning']").wait_for()
    await open_chat(bob, "Trip planning")
    await bubble(bob, "Welcome to the trip group").wait_for()
    await bob.locator(".msg.theirs .sender", has_text="Alice").wait_for()
    await shot(bob, "05-group-chat")
    await alice.click("[data-action=group-info]")
    await alice.locator(".member", has_text="Carol").wait_for()
    await alice.click("[data-action=invite]")
    await alice.locator("img.qr").wait_for()
    assert await alice.locator("img.qr").evaluate(
        "img => img.complete ? img.naturalWidth"
        " : new Promise(ok => { img.onload = () => ok(img.naturalWidth); })") > 0
    await shot(alice, "06-group-info")

    # --- settings, devices, language ------------------------------------------------------------
    await alice.click("a.nav-btn[data-view=settings]")
    await alice.click("[data-section=devices]")
    await alice.locator("[data-session]").first.wait_for()
    await alice.click("[data-section=privacy]")
    await alice.locator("input[name=send_read_receipts]").wait_for()
    await shot(alice, "07-settings")
    await alice.click("[data-section=language]")
    await alice.locator("input[value='zh-CN']").check()
    await alice.locator("a.nav-btn[data-view=chats]", has_text="微信").wait_for()
    await alice.click("a.nav-btn[data-view=chats]")
    await chat_item(alice, "Trip planning").click()
    await shot(alice, "08-chinese")

    # --- phone width: one column with back navigation ---------------------------------------------
    await bob.set_viewport_size({"width": 390, "height": 800})
    await bob.click(".chat-header .back")
    await bob.locator(".list-pane").wait_for()
    assert not await bob.locator(".main-pane").is_visible()
    await shot(bob, "09-phone-list")
    await chat_item(bob, "Alice").click()
    await bob.locator(".composer-input").wait_for()
    assert not await bob.locator(".list-pane").is_visible()
    await shot(bob, "10-phone-chat")

    # Nothing ran from any payload, and no script errors (CSP violations included).
    for page in (alice, bob):
        assert await page.evaluate("window.__xss") is None
        assert not [e for e in page.errors if "favicon" not in e], page.errors


async def test_shell_headers_csp_cache_and_compression(sqlite_only, base_url):
    async with ClientSession(auto_decompress=False) as http:
        async with http.get(base_url + "/", headers={"Accept-Encoding": "gzip, br"}) as r:
            assert r.status == 200
            assert r.headers["Cache-Control"] == "no-cache"  # the page is never cached
            csp = r.headers["Content-Security-Policy"]
            for part in ("default-src 'self'", "script-src 'self'", "style-src 'self'",
                         "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'",
                         "connect-src 'self' ws: wss:", "img-src 'self' blob: data:"):
                assert part in csp
            assert r.headers["Content-Encoding"] == "gzip"
            html = gzip.decompress(await r.read()).decode()
        assert "<script>" not in html and "onclick" not in html  # no inline script
        js = re.search(r'<script defer src="(/assets/app-[A-Z0-9]+\.js)"', html).group(1)
        css = re.search(r'<link rel="stylesheet" href="(/assets/app-style-[A-Z0-9]+\.css)"', html).group(1)
        for url in (js, css):
            # Precompressed: brotli when accepted, else gzip, else the plain bytes.
            async with http.get(base_url + url, headers={"Accept-Encoding": "gzip, br"}) as r:
                assert r.status == 200
                assert r.headers["Content-Encoding"] == "br"
                assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
                br_body = await r.read()
                etag = r.headers["ETag"]
            async with http.get(base_url + url, headers={"Accept-Encoding": "gzip"}) as r:
                assert r.headers["Content-Encoding"] == "gzip"
                plain = gzip.decompress(await r.read())
            async with http.get(base_url + url, headers={"Accept-Encoding": "identity"}) as r:
                assert "Content-Encoding" not in r.headers
                assert await r.read() == plain
            assert len(br_body) < len(plain) / 2
            async with http.get(base_url + url, headers={"If-None-Match": etag}) as r:
                assert r.status == 304
        # The sources are not served one by one any more: one bundle.
        async with http.get(base_url + "/static/js/main.js") as r:
            assert r.status == 404
        async with http.get(base_url + "/assets/nope.js") as r:
            assert r.status == 404
        async with http.get(base_url + "/sw.js") as r:
            assert r.status == 200 and r.headers["Cache-Control"] == "no-cache"
            assert "javascript" in r.headers["Content-Type"]
            assert js in gzip.decompress(await r.read()).decode()
        async with http.get(base_url + "/manifest.webmanifest",
                            headers={"Accept-Encoding": "identity"}) as r:
            assert r.status == 200 and r.content_type == "application/manifest+json"
            manifest = await r.json(content_type=None)
        assert manifest["start_url"] == "/" and manifest["display"] == "standalone"
        sizes = {i["sizes"] for i in manifest["icons"]}
        assert {"192x192", "512x512"} <= sizes
        assert any(i.get("purpose") == "maskable" for i in manifest["icons"])
        for icon in manifest["icons"]:
            async with http.get(base_url + icon["src"]) as r:
                assert r.status == 200 and r.headers["Content-Type"] == icon["type"]
        async with http.get(base_url + "/qr.svg", params={"text": "http://x/join/abc"}) as r:
            assert r.status == 200 and r.content_type == "image/svg+xml"
        async with http.get(base_url + "/qr.svg") as r:
            assert r.status == 400


@pytest.mark.parametrize("settings_overrides", [{"asset_url": "https://cdn.example.net/parley/"}])
async def test_asset_url_prefixes_assets_and_csp_follows(sqlite_only, base_url):
    async with ClientSession() as http:
        async with http.get(base_url + "/") as r:
            html = await r.text()
            csp = r.headers["Content-Security-Policy"]
        async with http.get(base_url + "/manifest.webmanifest") as r:
            manifest = await r.json(content_type=None)
        async with http.get(base_url + "/sw.js") as r:
            sw = await r.text()
    assert re.search(r'src="https://cdn\.example\.net/parley/assets/app-[A-Z0-9]+\.js"', html)
    assert re.search(r'href="https://cdn\.example\.net/parley/assets/app-style-[A-Z0-9]+\.css"', html)
    for directive in ("script-src", "style-src", "img-src", "connect-src"):
        part = next(p for p in csp.split(";") if p.strip().startswith(directive))
        assert "https://cdn.example.net" in part, part
    assert all(i["src"].startswith("https://cdn.example.net/parley/assets/") for i in manifest["icons"])
    assert "https://cdn.example.net/parley/assets/app-" in sw
