"""The web client's push side in real Chromium: the service worker shows the
right notification for a push payload (delivered to the worker through the
DevTools protocol: no push service is reachable here), a click on it opens
the chat, the page reports foreground/background, and Me → Notifications
saves the push settings."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from app.models.accounts import User
from app.services import conversations as convs
from tests.factories import until
from tests.web_helpers import (  # noqa: F401 - fixtures
    assert_no_errors,
    browser,
    new_page,
    people,
    shot,
    sqlite_only,
    wait_for_js,
)


async def controlled(page) -> None:
    await page.evaluate("""() => new Promise(ok => {
        if (navigator.serviceWorker.controller) return ok();
        navigator.serviceWorker.addEventListener('controllerchange', () => ok());
    })""")


async def notifications(worker, tag=None) -> list[dict]:
    return await worker.evaluate("""async (tag) => {
        const ns = await self.registration.getNotifications(tag ? { tag } : {});
        return ns.map(n => ({ title: n.title, body: n.body, tag: n.tag, data: n.data }));
    }""", tag)


async def wait_notifications(worker, done, tag=None, timeout: float = 15.0) -> list[dict]:
    """The worker's notifications once `done(them)` holds, or as they are at the
    deadline. Chromium shows a notification only after fetching its icon from
    the server and writing it to its notification database, which takes
    seconds on a machine busy with other suites."""
    deadline = time.monotonic() + timeout
    while True:
        got = await notifications(worker, tag)
        if done(got) or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


class PushService:
    """Push messages as the browser's push service would hand them to the worker,
    through the DevTools protocol. That hand-over is fire-and-forget: Chromium
    answers before the worker has the event and reports nothing if it never
    arrives, and under a full CI run a first push once showed nothing for 30 s.
    So a message meant to change the notifications is handed over again until
    they show the change; the worker replaces by tag, so a second copy of the
    same message changes nothing."""

    def __init__(self, page) -> None:
        self.page = page
        self.cdp = None
        self.registration = None

    async def _connect(self) -> None:
        self.cdp = await self.page.context.new_cdp_session(self.page)
        registrations = asyncio.get_running_loop().create_future()

        def on_update(event):
            regs = [r for r in event["registrations"] if not r.get("isDeleted")]
            if regs and not registrations.done():
                registrations.set_result(regs)

        self.cdp.on("ServiceWorker.workerRegistrationUpdated", on_update)
        await self.cdp.send("ServiceWorker.enable")
        self.registration = (await asyncio.wait_for(registrations, 10))[0]["registrationId"]

    async def deliver(self, payload: dict) -> None:
        if self.cdp is None:
            await self._connect()
        origin = await self.page.evaluate("location.origin")
        await self.cdp.send("ServiceWorker.deliverPushMessage", {
            "origin": origin, "registrationId": self.registration,
            "data": json.dumps(payload)})

    async def deliver_until(self, worker, payload: dict, done, *, tries: int = 3,
                            each: float = 15.0) -> list[dict]:
        """Deliver `payload` until the worker's notifications satisfy `done`;
        they are returned as they last were, so the caller's assertion shows
        what the worker made of every copy."""
        for _ in range(tries):
            await self.deliver(payload)
            shown = await wait_notifications(worker, done, timeout=each)
            if done(shown):
                return shown
        return shown


@pytest.mark.timeout(180)
async def test_worker_shows_pushes_replaces_by_tag_and_a_click_opens_the_chat(
        browser, base_url, deps):  # noqa: F811
    a, b = await people(deps, "Alice", "Bob")
    conv, _ = await convs.get_or_create_direct(deps, a.user_id, b.user_id)
    cid = str(conv.id)
    page = await new_page(browser, base_url, person=a, service_workers="allow",
                          path="/#/contacts")
    await controlled(page)
    worker = page.context.service_workers[0]
    assert worker.url == base_url + "/sw.js"
    payload = {"type": "message", "tag": cid, "title": "Bob", "body": "hello there",
               "badge": 1, "conversation_id": cid, "message_id": "1", "seq": "1",
               "url": f"/#/chats/{cid}"}
    push = PushService(page)
    shown = await push.deliver_until(worker, payload, lambda ns: len(ns) >= 1)
    assert shown == [{"title": "Bob", "body": "hello there", "tag": cid,
                      "data": {"url": f"/#/chats/{cid}", "conversation_id": cid}}]
    # The same chat again (coalesced), then its recall: still one notification.
    coalesced = "[2 messages] second"
    now = await push.deliver_until(worker, {**payload, "body": coalesced},
                                   lambda ns: bool(ns) and ns[0]["body"] == coalesced)
    assert [n["body"] for n in now] == [coalesced]
    recalled = "Bob recalled a message"
    now = await push.deliver_until(worker, {**payload, "type": "recall", "body": recalled},
                                   lambda ns: bool(ns) and ns[0]["body"] == recalled)
    assert [n["body"] for n in now] == [recalled]
    # A silent badge update shows nothing.
    await push.deliver({"type": "badge", "tag": "badge", "title": "", "body": "", "badge": 0})
    await asyncio.sleep(0.5)
    assert len(await notifications(worker)) == 1
    # A click: the open tab comes forward on that chat. (The event is built in
    # the worker; an untrusted event cannot extend its life, so the test waits
    # on the handler's work itself.)
    assert await worker.evaluate("""async (tag) => {
        const [n] = await self.registration.getNotifications({ tag });
        const work = [];
        const ev = new NotificationEvent("notificationclick", { notification: n });
        Object.defineProperty(ev, "waitUntil", { value: (p) => work.push(p) });
        self.dispatchEvent(ev);
        await Promise.all(work);
        return work.length;
    }""", cid) == 1
    await wait_for_js(page, f"location.hash === '#/chats/{cid}'")
    await page.locator(f".chat-item[data-id='{cid}'].active, .chat-title h2").first.wait_for()
    assert await notifications(worker) == []  # the click closed it
    await shot(page, "push-click-opened-chat")
    assert_no_errors(page)


@pytest.mark.timeout(60)
async def test_page_reports_background_and_foreground(browser, base_url, deps):  # noqa: F811
    (a,) = await people(deps, "Alice")
    page = await new_page(browser, base_url, person=a)
    tracker = deps.extras["foreground"]
    await until(lambda: a.user_id in tracker.local, "connected and never said: foreground")
    hide = """(hidden) => {
        Object.defineProperty(document, "hidden", { value: hidden, configurable: true });
        Object.defineProperty(document, "visibilityState",
                              { value: hidden ? "hidden" : "visible", configurable: true });
        document.dispatchEvent(new Event("visibilitychange"));
    }"""
    await page.evaluate(hide, True)
    await until(lambda: a.user_id not in tracker.local, "the hidden page counted as background")
    await page.evaluate(hide, False)
    await until(lambda: a.user_id in tracker.local, "the shown page counted as foreground")
    assert_no_errors(page)


@pytest.mark.timeout(60)
async def test_me_notifications_saves_preview_and_dnd(browser, base_url, deps):  # noqa: F811
    (a,) = await people(deps, "Alice")
    page = await new_page(browser, base_url, person=a, path="/#/settings/notifications")
    await page.locator("select[name=push_preview]").wait_for()
    # Nothing asked for permission by itself: the button is there to click.
    assert await page.locator("[data-action=push-on]").count() == 1
    await page.select_option("select[name=push_preview]", "none")
    await page.fill("input[name=dnd_start]", "22:00")
    await page.fill("input[name=dnd_end]", "07:00")
    await page.locator("input[name=dnd_end]").dispatch_event("change")
    await page.uncheck("input[name=push_enabled]")
    deadline = time.monotonic() + 20
    while True:
        user = await User.get(id=a.user_id)
        if (not user.push_enabled and user.dnd_end == "07:00") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert (user.push_preview, user.dnd_start, user.dnd_end, user.push_enabled) == \
        ("none", "22:00", "07:00", False)
    assert user.timezone == await page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone")
    await shot(page, "push-settings")
    assert_no_errors(page)
