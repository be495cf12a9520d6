"""Browser scenarios: contacts, a direct chat, media. Each builds its own users
through the real services and fails on its own (see tests/web_helpers.py)."""

from __future__ import annotations

import re

import pytest

from tests.web_helpers import (  # noqa: F401 - fixtures
    NAME_XSS,
    XSS,
    assert_accessible,
    assert_no_errors,
    browser,
    bubble,
    chat_item,
    new_page,
    open_chat,
    people,
    png_bytes,
    register,
    send_text,
    shot,
    sqlite_only,
    wait_for_js,
)


@pytest.mark.timeout(60)
async def test_contacts_request_badge_accept(browser, base_url):  # noqa: F811
    alice = await new_page(browser, base_url)
    bob = await new_page(browser, base_url)
    await register(alice, "Alice", "alice", "alice@example.org")
    await register(bob, f"Bob {NAME_XSS}", "bob", "bob@example.org")

    await alice.click("a.nav-btn[data-view=contacts]")
    await alice.click("[data-action=add-contact]")
    await assert_accessible(alice, "add contact")
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
    await assert_accessible(bob, "friend requests")
    await bob.click("[data-request] [data-action=accept]")
    await bob.wait_for_selector(".chat .composer-input")  # accepting opens our chat
    await alice.click("a.nav-btn[data-view=contacts]")
    await alice.locator(f".chat-item[data-title='Bob {NAME_XSS}']").click()
    await alice.locator("[data-action=message]").wait_for()
    await assert_accessible(alice, "contact card")
    for page in (alice, bob):
        assert await page.evaluate("window.__xss") is None
    assert_no_errors(alice, bob)


@pytest.mark.timeout(60)
async def test_chat_text_read_marks_reply_recall_delete(browser, base_url, deps):  # noqa: F811
    a, b, c = await people(deps, "Alice", f"Bob {NAME_XSS}", "Carol")
    alice = await new_page(browser, base_url, person=a)
    bob = await new_page(browser, base_url, person=b)
    bob_title = f"Bob {NAME_XSS}"

    await open_chat(bob, "Alice")
    await send_text(bob, "Hi Alice! 你好")
    await bob.wait_for_selector(".msg.mine:not(.local) .bubble .text")
    item = chat_item(alice, bob_title)
    await item.locator(".badge", has_text="1").wait_for()
    assert NAME_XSS in await item.locator(".title").text_content()
    assert "Hi Alice" in await item.locator(".preview").text_content()
    await alice.locator("a.nav-btn[data-view=chats] .badge", has_text="1").wait_for()
    await shot(alice, "03-chat-list-unread")
    await assert_accessible(alice, "chat list")

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
    assert await bob.locator(".bubble img").count() == 0

    # Render only what changed: one incoming message replaces one chat row and
    # appends one bubble; every other node stays the same object. Alice's own
    # sends are confirmed first (a confirmed send replaces its local row).
    await wait_for_js(alice, "!document.querySelector('.msg.local')")
    await alice.evaluate("""() => {
        const list = document.querySelector('.list'), msgs = document.querySelector('.msg-list');
        window.__rows = [...list.children];
        window.__bubbles = [...msgs.children];
        window.__mut = { list: [], msgs: [] };
        new MutationObserver(rs => rs.forEach(r => window.__mut.list.push([r.addedNodes.length, r.removedNodes.length])))
          .observe(list, { childList: true });
        new MutationObserver(rs => rs.forEach(r => window.__mut.msgs.push([r.addedNodes.length, r.removedNodes.length])))
          .observe(msgs, { childList: true });
    }""")
    await send_text(bob, "just one more")
    await bubble(alice, "just one more").wait_for()
    await alice.wait_for_timeout(300)
    changes = await alice.evaluate("""() => {
        const list = document.querySelector('.list'), msgs = document.querySelector('.msg-list');
        return { mut: window.__mut,
                 keptRows: window.__rows.filter(r => r.isConnected).length, rows: window.__rows.length,
                 keptBubbles: window.__bubbles.filter(b => b.isConnected).length, bubbles: window.__bubbles.length,
                 nowBubbles: msgs.children.length, nowRows: list.children.length };
    }""")
    assert changes["keptBubbles"] == changes["bubbles"], changes
    assert changes["nowBubbles"] == changes["bubbles"] + 1, changes
    assert sum(a for a, _ in changes["mut"]["msgs"]) == 1, changes
    assert sum(r for _, r in changes["mut"]["msgs"]) == 0, changes
    assert changes["keptRows"] == changes["rows"] - 1, changes  # only Bob's row was replaced
    assert sum(a for a, _ in changes["mut"]["list"]) == 1, changes

    # Typing indicator.
    await bob.locator(".composer-input").type("typing…")
    await alice.locator(".chat-sub.typing").wait_for()
    await bob.locator(".composer-input").fill("")

    # Reply through the context menu, by mouse; then open the menu by keyboard.
    await bubble(alice, "Hi Alice! 你好").click(button="right")
    await alice.click(".ctx-menu [data-action=reply]")
    await send_text(alice, "Hello Bob, replying")
    await bob.locator(".msg .quote", has_text="Hi Alice").wait_for()
    await alice.locator(".msg.theirs .bubble", has_text="Hi Alice").focus()
    await alice.keyboard.press("Enter")
    await alice.locator(".ctx-menu [role=menuitem]:focus").wait_for()
    await assert_accessible(alice, "message menu")
    await alice.keyboard.press("Escape")
    assert await alice.locator(".ctx-menu").count() == 0

    # Recall: both sides see the line; the preview says so.
    await send_text(alice, "oops, wrong chat")
    await bubble(bob, "oops, wrong chat").wait_for()
    await alice.locator(".msg.mine:not(.local) .bubble", has_text="oops").click(button="right")
    await alice.click(".ctx-menu [data-action=recall]")
    await bob.locator(".sys-line.recalled").wait_for()
    assert await bubble(bob, "oops, wrong chat").count() == 0
    await alice.locator(".sys-line.recalled", has_text="You recalled a message").wait_for()
    await bob.locator(".chat-item .preview", has_text="[Recalled]").wait_for()

    # Delete for me: gone here, still there for Bob.
    await bubble(alice, "line one").click(button="right")
    await alice.click(".ctx-menu [data-action=delete]")
    await bubble(alice, "line one").wait_for(state="detached")
    assert await bubble(bob, "line one").count() == 1

    # Mute this chat (the server keeps it for all my devices).
    await bob.click("[data-action=toggle-mute]")
    await bob.locator("[data-action=toggle-mute][aria-pressed=true]").wait_for()
    await bob.locator(".chat-item .muted-ico").wait_for()
    await bob.click("[data-action=toggle-mute]")
    await bob.locator("[data-action=toggle-mute][aria-pressed=false]").wait_for()
    await shot(alice, "04-chat")
    await assert_accessible(alice, "chat")
    assert c.user_id  # Carol makes the chat list longer than one row
    for page in (alice, bob):
        assert await page.evaluate("window.__xss") is None
    assert_no_errors(alice, bob)


@pytest.mark.timeout(60)
async def test_media_photo_and_click_to_record_voice(browser, base_url, deps):  # noqa: F811
    a, b = await people(deps, "Alice", "Bob")
    alice = await new_page(browser, base_url, person=a)
    bob = await new_page(browser, base_url, person=b)
    await open_chat(alice, "Bob")
    await open_chat(bob, "Alice")

    # The tools have icons, visible labels and tooltips.
    for action, label in (("photo", "Send a photo"), ("video", "Send a video"), ("file", "Send a file"),
                          ("voice", "Record a voice message")):
        tool = alice.locator(f".composer-tools [data-action={action}]")
        assert await tool.get_attribute("title") == label
        assert await tool.locator("svg").count() == 1
        assert (await tool.locator(".tool-label").text_content()).strip()

    await alice.set_input_files("input[data-input=photo]", files=[{
        "name": f"{XSS}.png", "mimeType": "image/png", "buffer": await png_bytes()}])
    await bob.locator(".msg.theirs img.photo").wait_for()
    await alice.locator(".msg.mine:not(.local) img.photo").wait_for()
    await bob.locator(".chat-item .preview", has_text="[Photo]").wait_for()

    # Desktop voice: click to record, click Send to send (Chromium's fake microphone).
    await bob.click("[data-action=voice]")
    await bob.locator(".composer-extra .rec-time").wait_for()
    await alice.locator(".chat-sub.typing").wait_for()  # "recording voice…"
    await bob.wait_for_timeout(1300)
    await bob.click("[data-action=send-voice]")
    await alice.locator(".msg.theirs button.voice").wait_for()
    assert re.search(r"\[Voice\] \d:\d\d", await alice.locator(".chat-item .preview").first.text_content())
    # A second recording can be cancelled.
    await bob.click("[data-action=voice]")
    await bob.locator(".composer-extra .rec-time").wait_for()
    await bob.click("[data-action=cancel-voice]")
    await bob.locator(".composer-extra .rec-time").wait_for(state="detached")
    await shot(alice, "13-media")
    await assert_accessible(alice, "chat with media")
    for page in (alice, bob):
        assert await page.evaluate("window.__xss") is None
    assert_no_errors(alice, bob)
