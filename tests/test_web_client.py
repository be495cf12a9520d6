"""The web client end to end in real headless Chromium, against a real server on
a real port: sign-up and sign-in (also with a verification code), the password
reset screen, the first load's requests, the shell's headers. The other
scenarios are in tests/test_web_client_*.py; shared pieces in tests/web_helpers.py.

Runs on SQLite only: the browser suite exercises the client, and the server's
behaviour on PostgreSQL is covered by the protocol and REST suites.
Screenshots of the main screens go to test-artifacts/.
"""

from __future__ import annotations

import gzip
import re

import pytest
from aiohttp import ClientSession

from tests.test_codes import Mailbox, free_port
from tests.web_helpers import (  # noqa: F401 - fixtures
    NAME_XSS,
    assert_accessible,
    assert_no_errors,
    browser,
    new_page,
    register,
    shot,
    sqlite_only,
)


@pytest.mark.timeout(60)
async def test_sign_in_page_first_load_sign_up_and_sign_in(browser, base_url):  # noqa: F811
    requests = []
    page = await new_page(browser, base_url, service_workers="allow", path=None)
    page.on("request", lambda r: requests.append(r.url))
    await page.goto(base_url + "/", wait_until="networkidle")
    await page.wait_for_selector("form[data-form=signin]")
    await page.wait_for_timeout(300)
    # One page, one script, one stylesheet (the icon is inline); the manifest at most.
    assert len(requests) <= 5, requests
    print(f"sign-in page first load: {len(requests)} requests: {requests}")
    await shot(page, "01-sign-in")
    await assert_accessible(page, "sign-in")
    await page.click("[data-action=to-signup]")
    await assert_accessible(page, "sign-up")
    await page.click("[data-action=to-signin]")

    # Server errors are shown in the interface language.
    await page.fill("input[name=login]", "nobody")
    await page.fill("input[name=password]", "wrong password")
    await page.click("form[data-form=signin] button[type=submit]")
    await page.locator(".form-error", has_text="Wrong login or password.").wait_for()
    page.errors.clear()  # the console reports the 401 of that attempt

    await register(page, f"Dora {NAME_XSS}", "dora", "dora@example.org")
    await assert_accessible(page, "empty chat list")
    await page.click("a.nav-btn[data-view=settings]")
    await page.click("[data-action=sign-out]")
    await page.wait_for_selector("form[data-form=signin]")
    await page.fill("input[name=login]", "dora@example.org")
    await page.fill("input[name=password]", "correct horse battery")
    await page.click("form[data-form=signin] button[type=submit]")
    await page.wait_for_selector("body[data-connected=true]")
    assert await page.evaluate("window.__xss") is None
    assert_no_errors(page)


@pytest.fixture
def mailbox():
    from aiosmtpd.controller import Controller

    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    box.url = f"smtp://127.0.0.1:{port}?starttls=false"
    yield box
    controller.stop()


@pytest.fixture
def extra_settings():
    """Parametrise this (directly) to add settings on top of the SMTP URL."""
    return {}


@pytest.fixture
def settings_overrides(mailbox, extra_settings):
    return {"smtp_url": mailbox.url, **extra_settings}


async def wait_code(mailbox, address, page):
    for _ in range(100):
        if mailbox.to(address):
            return mailbox.last_code(address)
        await page.wait_for_timeout(100)
    raise AssertionError(f"no code mailed to {address}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("extra_settings", [{"require_verification": True}])
async def test_sign_up_with_a_verification_code_then_reset_the_password(browser, base_url, mailbox):  # noqa: F811
    page = await new_page(browser, base_url, locale="zh-CN")
    await page.click("[data-action=to-signup]")
    form = page.locator("form[data-form=signup]")
    await form.locator("input[name=display_name]").fill("小明")
    await form.locator("input[name=contact]").fill("ming@example.org")
    await form.locator("input[name=username]").fill("ming")
    await form.locator("input[name=password]").fill("correct horse battery")
    # Without the code the server refuses, in Chinese.
    await form.locator("input[name=code]").fill("000000")
    await form.locator("button[type=submit]").click()
    await page.locator(".form-error", has_text="验证码错误或已过期").wait_for()
    page.errors.clear()  # the console reports the 400 of that attempt
    await form.locator("[data-action=send-code]").click()
    code = await wait_code(mailbox, "ming@example.org", page)
    await form.locator("input[name=code]").fill(code)
    await assert_accessible(page, "sign-up with code")
    await shot(page, "11-sign-up-with-code")
    await form.locator("button[type=submit]").click()
    await page.wait_for_selector("body[data-connected=true]")
    await page.locator("a.nav-btn[data-view=chats]", has_text="聊天").wait_for()

    # Forgot the password: reset it with a code, then sign in with the new one.
    await page.click("a.nav-btn[data-view=settings]")
    await page.click("[data-action=sign-out]")
    await page.click("[data-action=to-reset]")
    reset = page.locator("form[data-form=reset]")
    await reset.locator("input[name=target]").fill("ming@example.org")
    await reset.locator("[data-action=send-code]").click()
    await page.wait_for_timeout(200)
    for _ in range(100):
        if len(mailbox.to("ming@example.org")) >= 2:
            break
        await page.wait_for_timeout(100)
    code = mailbox.last_code("ming@example.org")
    await reset.locator("input[name=code]").fill(code)
    await reset.locator("input[name=new_password]").fill("a brand new password")
    await assert_accessible(page, "password reset")
    await shot(page, "12-password-reset")
    await reset.locator("button[type=submit]").click()
    await page.wait_for_selector("form[data-form=signin]")
    await page.fill("input[name=login]", "ming")
    await page.fill("input[name=password]", "correct horse battery")
    await page.click("form[data-form=signin] button[type=submit]")
    await page.locator(".form-error", has_text="账号或密码错误").wait_for()
    page.errors.clear()
    await page.fill("input[name=password]", "a brand new password")
    await page.click("form[data-form=signin] button[type=submit]")
    await page.wait_for_selector("body[data-connected=true]")
    assert_no_errors(page)


async def test_shell_headers_csp_cache_and_compression(sqlite_only, base_url):  # noqa: F811
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


@pytest.mark.parametrize("extra_settings", [{"asset_url": "https://cdn.example.net/parley/"}])
async def test_asset_url_prefixes_assets_and_csp_follows(sqlite_only, base_url):  # noqa: F811
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
