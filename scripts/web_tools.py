"""Measure and picture the web client against a throw-away demo server.

    python scripts/web_tools.py lighthouse [--out FILE]
        Lighthouse (npm `lighthouse`, Debian's Chromium, mobile profile) on the
        sign-in page and on a signed-in chat; prints the four category scores.
    python scripts/web_tools.py screenshots [--dir docs/screenshots]
        The screenshots of docs/user-guide.md, from `python -m app demo` data,
        in English and Chinese.

Both start their own server (SQLite in a temp directory, a spare port on
127.0.0.1) with the demo accounts, and stop it when done. Run them through
scripts/lighthouse and scripts/screenshots (they set up the environment).
"""

# A command-line tool: blocking calls are fine here.
# ruff: noqa: ASYNC210, ASYNC220, ASYNC240, ASYNC251
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PASSWORD = "parley-demo-2026"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def demo_server():
    """A server with the demo data on a spare port; yields its base URL."""
    tmp = Path(tempfile.mkdtemp(prefix="parley-web-"))
    port = free_port()
    env = {**os.environ, "DATABASE_URL": f"sqlite://{tmp / 'parley.db'}", "MEDIA_ROOT": str(tmp / "media"),
           "SECRET_KEY": secrets.token_urlsafe(48), "HOST": "127.0.0.1", "PORT": str(port),
           "LOG_LEVEL": "WARNING"}
    py = sys.executable
    subprocess.run([py, "-m", "app", "demo"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    proc = subprocess.Popen([py, "-m", "app", "serve", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the demo server did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def login(base: str, who: str = "alice") -> dict:
    req = urllib.request.Request(base + "/api/v1/auth/login", method="POST",
                                 data=json.dumps({"login": who, "password": PASSWORD,
                                                  "device": "Web · Chrome on Linux"}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def api(base: str, token: str, path: str) -> dict:
    req = urllib.request.Request(base + "/api/v1" + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def seed_script(tokens: dict, lang: str | None = None) -> str:
    items = {"parley.refresh": tokens["refresh_token"], "parley.access": tokens["access_token"],
             "parley.access_exp": str(int(time.time() * 1000) + 600_000)}
    if lang:
        items["parley.lang"] = lang
    return ("if (!sessionStorage.getItem('__seeded')) { sessionStorage.setItem('__seeded', '1');"
            f" for (const [k, v] of Object.entries({json.dumps(items)})) localStorage.setItem(k, v); }}")


# ------------------------------------------------------------------ lighthouse

def run_lighthouse(url: str, port: int, out: Path, *, keep_storage: bool) -> dict:
    cmd = [str(ROOT / "node_modules" / ".bin" / "lighthouse"), url, f"--port={port}",
           "--output=json", f"--output-path={out}", "--form-factor=mobile", "--quiet",
           "--only-categories=performance,accessibility,best-practices,seo"]
    if keep_storage:
        cmd.append("--disable-storage-reset")
    subprocess.run(cmd, cwd=ROOT, check=True)
    report = json.loads(out.read_text())
    scores = {k: round(v["score"] * 100) for k, v in report["categories"].items()}
    audits = report["audits"]
    scores["lcp_ms"] = round(audits["largest-contentful-paint"]["numericValue"])
    scores["tbt_ms"] = round(audits["total-blocking-time"]["numericValue"])
    scores["transfer_kb"] = round(audits["total-byte-weight"]["numericValue"] / 1024, 1)
    failed = [a["id"] for a in audits.values()
              if a.get("score") is not None and a["score"] < 1 and a.get("scoreDisplayMode") == "binary"]
    scores["failed_audits"] = failed
    # What the page showed at the end, to check it was the screen meant.
    shot = audits.get("final-screenshot", {}).get("details", {}).get("data", "")
    if shot.startswith("data:image/jpeg;base64,"):
        import base64

        out.with_suffix(".jpg").write_bytes(base64.b64decode(shot.split(",", 1)[1]))
    return scores


async def lighthouse(out_file: str | None) -> dict:
    from playwright.async_api import async_playwright

    results = {}
    keep = Path(out_file).parent if out_file else None
    with demo_server() as base, tempfile.TemporaryDirectory() as tmp:
        cdp_port = free_port()
        chrome = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
                                   f"--remote-debugging-port={cdp_port}", f"--user-data-dir={tmp}/profile",
                                   "--no-first-run", "about:blank"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{cdp_port}/json/version", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            results["sign-in"] = run_lighthouse(base + "/", cdp_port, Path(tmp) / "signin.json",
                                                keep_storage=False)
            # A signed-in chat: sign in once in this browser profile, keep its storage.
            tokens = login(base)
            convs = api(base, tokens["access_token"], "/conversations")["conversations"]
            chat = next(c for c in convs if c["type"] == "direct" and c["peer"]["username"] == "bob")
            async with async_playwright() as pw:
                browser = await pw.chromium.connect_over_cdp(f"http://127.0.0.1:{cdp_port}")
                ctx = browser.contexts[0]
                page = await ctx.new_page()
                await page.add_init_script(seed_script(tokens))
                await page.goto(base + "/")
                await page.wait_for_selector("body[data-connected=true]")
                await page.wait_for_timeout(1500)  # the service worker installs
                await page.close()
                await browser.close()
            results["chat"] = run_lighthouse(f"{base}/#/chats/{chat['id']}", cdp_port,
                                             Path(tmp) / "chat.json", keep_storage=True)
        finally:
            chrome.terminate()
            chrome.wait(10)
            if keep:
                for name in ("signin", "chat"):
                    if (Path(tmp) / f"{name}.jpg").exists():
                        shutil.copy(Path(tmp) / f"{name}.jpg", keep / f"lighthouse-{name}.jpg")
    text = json.dumps(results, indent=2)
    print(text)
    if out_file:
        Path(out_file).write_text(text + "\n")
    return results


# ------------------------------------------------------------------ screenshots

async def screenshots(directory: str) -> None:
    from playwright.async_api import async_playwright

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    with demo_server() as base:
        tokens = {who: login(base, who) for who in ("alice", "bob")}
        convs = api(base, tokens["alice"]["access_token"], "/conversations")["conversations"]
        bob_chat = next(c for c in convs if c["type"] == "direct" and c["peer"]["username"] == "bob")
        group = next((c for c in convs if c["type"] == "group"), None)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM,
                                               args=["--headless", "--no-sandbox", "--disable-gpu"])
            for lang, suffix, locale in (("en", "en", "en-US"), ("zh-CN", "zh", "zh-CN")):
                async def page_for(who, width=1200, height=760, signed_in=True, lang=lang, locale=locale):
                    ctx = await browser.new_context(locale=locale, viewport={"width": width, "height": height},
                                                    service_workers="block")
                    page = await ctx.new_page()
                    if signed_in:
                        fresh = login(base, who)
                        await page.add_init_script(seed_script(fresh, lang))
                    else:
                        await page.add_init_script(f"localStorage.setItem('parley.lang', '{lang}')")
                    await page.goto(base + "/")
                    if signed_in:
                        await page.wait_for_selector("body[data-connected=true]")
                    return page

                page = await page_for("alice", signed_in=False)
                await page.wait_for_selector("form[data-form=signin]")
                await page.screenshot(path=str(out / f"sign-in-{suffix}.png"))
                await page.context.close()

                page = await page_for("alice")
                await page.wait_for_timeout(300)
                await page.screenshot(path=str(out / f"chats-{suffix}.png"))
                await page.goto(f"{base}/#/chats/{bob_chat['id']}")
                await page.wait_for_selector(".msg .bubble")
                await page.wait_for_timeout(300)
                await page.screenshot(path=str(out / f"chat-{suffix}.png"))
                if group:
                    await page.goto(f"{base}/#/chats/{group['id']}")
                    await page.wait_for_selector(".msg .bubble, .sys-line")
                    await page.wait_for_timeout(300)
                    await page.screenshot(path=str(out / f"group-{suffix}.png"))
                    await page.goto(f"{base}/#/chats/{group['id']}/info")
                    await page.wait_for_selector(".member")
                    await page.wait_for_timeout(300)
                    await page.screenshot(path=str(out / f"group-info-{suffix}.png"))
                await page.goto(f"{base}/#/contacts")
                await page.wait_for_selector(".list .chat-item")
                await page.screenshot(path=str(out / f"contacts-{suffix}.png"))
                await page.goto(f"{base}/#/settings/privacy")
                await page.wait_for_selector("input[name=send_read_receipts]")
                await page.screenshot(path=str(out / f"settings-{suffix}.png"))
                await page.context.close()

                phone = await page_for("bob", width=390, height=780)
                await phone.screenshot(path=str(out / f"phone-list-{suffix}.png"))
                await phone.locator(".chat-item[data-title]").first.click()
                await phone.wait_for_selector(".composer-input")
                await phone.wait_for_timeout(300)
                await phone.screenshot(path=str(out / f"phone-chat-{suffix}.png"))
                await phone.context.close()
            await browser.close()
    print(f"screenshots written to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    lh = sub.add_parser("lighthouse")
    lh.add_argument("--out", help="also write the scores (JSON) to this file")
    sc = sub.add_parser("screenshots")
    sc.add_argument("--dir", default=str(ROOT / "docs" / "screenshots"))
    args = parser.parse_args()
    if args.command == "lighthouse":
        asyncio.run(lighthouse(args.out))
    else:
        asyncio.run(screenshots(args.dir))


if __name__ == "__main__":
    main()
