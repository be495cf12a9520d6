"""Shared pieces of the browser suites (tests/test_web_client*.py): real headless
Chromium (Debian's `chromium`, driven by pip playwright) against a real server
on a real port, signed-in pages, axe-core checks, screenshots to test-artifacts/."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
from pathlib import Path

import pytest

from tests.factories import Person, make_user

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
WAIT = 10_000  # ms: every Playwright wait is bounded by this
XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
NAME_XSS = "<img src=x onerror=window.__xss=3>"  # display names are at most 64 characters
# axe-core as shipped with @axe-core/playwright (package.json). That wrapper is for
# Node's Playwright; these tests drive Python's, so they load the same engine directly.
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture
def sqlite_only(settings):
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("the browser suite runs once, on SQLite")


@pytest.fixture
async def browser(sqlite_only, request):
    from playwright.async_api import async_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        # The state every page ended in: the first thing to look at when a test fails.
        name = request.node.name.replace("[", "-").replace("]", "")
        for i, ctx in enumerate(b.contexts):
            for j, page in enumerate(ctx.pages):
                try:
                    await page.screenshot(path=str(ARTIFACTS / f"last-{name}-{i}-{j}.png"))
                except Exception:  # noqa: BLE001 - best effort
                    pass
                for e in getattr(page, "errors", []):
                    print(f"page {i}-{j}: {e}")
        await b.close()


async def new_page(browser, base_url, *, locale="en-US", width=1280, height=800, person=None,
                   service_workers="block", path="/", lang=None, ready_within=WAIT):
    """A page in a fresh context; signed in as `person` (tokens in localStorage) when given,
    then shown and connected within `ready_within` ms."""
    ctx = await browser.new_context(locale=locale, viewport={"width": width, "height": height},
                                    service_workers=service_workers,
                                    permissions=["microphone", "clipboard-read",
                                                 "clipboard-write", "notifications"])
    ctx.set_default_timeout(WAIT)
    if person is not None or lang is not None:
        items = {}
        if person is not None:
            items = {"parley.refresh": person.refresh_token, "parley.access": person.access_token,
                     "parley.access_exp": "9999999999999"}
        if lang is not None:
            items["parley.lang"] = lang
        await ctx.add_init_script(
            "if (!sessionStorage.getItem('__seeded')) { sessionStorage.setItem('__seeded', '1');"
            f" for (const [k, v] of Object.entries({json.dumps(items)})) localStorage.setItem(k, v); }}")
    page = await ctx.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    if path is not None:
        await page.goto(base_url + path)
    if person is not None:
        await page.wait_for_selector(".shell", timeout=ready_within)
        await page.wait_for_selector("body[data-connected=true]", timeout=ready_within)
    return page


async def wait_for_js(page, expression: str, timeout_ms: int = WAIT) -> None:
    """Wait until `expression` (page JavaScript) is truthy, polling `page.evaluate`,
    which runs it through the DevTools protocol where the page's CSP does not apply.
    Not `page.wait_for_function`: its later polls evaluate the predicate inside the
    page, where our CSP (no 'unsafe-eval') may refuse it on a loaded machine
    (EvalError, microsoft/playwright#36982)."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not await page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for: {expression}"
        await asyncio.sleep(0.05)


async def shot(page, name):
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


async def hold_requests(page, url_glob: str) -> list:
    """Hold every request of `page` to `url_glob` until the test lets it go
    (`release`): for what the client must do when an answer comes late."""
    held: list = []
    await page.route(url_glob, lambda route: held.append(route))
    return held


async def release(held: list, what: str) -> None:
    """Wait until a request was held, then let every held one go."""
    deadline = time.monotonic() + WAIT / 1000
    while not held:
        assert time.monotonic() < deadline, f"never asked for {what}"
        await asyncio.sleep(0.05)
    for route in held:
        await route.continue_()


SETTLED = """!document.querySelector('#toast.show') && document.getAnimations()
    .every(a => a.effect?.getComputedTiming().iterations === Infinity)"""


async def axe_violations(page) -> list:
    """Serious and critical axe-core violations on the page as it is now, once
    no toast is showing and no transition is running: axe judges the frame it
    happens to see, and a toast fading in or out has its text at part opacity."""
    await wait_for_js(page, SETTLED)
    if not await page.evaluate("typeof window.axe === 'object'"):
        # Evaluated through the DevTools protocol, so the page's CSP does not apply.
        await page.evaluate(AXE.read_text() + "\n;0")
    return await page.evaluate("""async () => {
        const r = await axe.run(document, { resultTypes: ["violations"] });
        return r.violations.filter(v => v.impact === "serious" || v.impact === "critical")
          .map(v => ({ id: v.id, impact: v.impact, help: v.help,
                       nodes: v.nodes.slice(0, 4).map(n => n.target.join(" ")) }));
    }""")


async def assert_accessible(page, screen: str):
    bad = await axe_violations(page)
    assert not bad, f"{screen}: {json.dumps(bad, indent=1, ensure_ascii=False)}"


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


async def people(deps, *names: str, contacts: bool = True) -> list[Person]:
    """Users made through the real services; all contacts of the first one."""
    out = []
    for name in names:
        username = name.lower().split()[0]
        out.append(await make_user(deps, name, username=username, email=f"{username}@example.org"))
    if contacts:
        from tests.factories import make_contacts

        for other in out[1:]:
            await make_contacts(deps, out[0], other)
    return out


def assert_no_errors(*pages):
    for page in pages:
        assert [e for e in page.errors if "favicon" not in e] == [], page.errors
