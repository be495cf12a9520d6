"""Browser scenarios of richer messages: reactions, edit in place, pins, ✓/✓✓,
multi-select forward (each and merged) with the record viewer, contact cards and
locations. Real Chromium against a real server (see tests/web_helpers.py)."""

from __future__ import annotations

import pytest

from tests.web_helpers import (  # noqa: F401 - fixtures
    XSS,
    assert_accessible,
    assert_no_errors,
    browser,
    bubble,
    new_page,
    open_chat,
    people,
    send_text,
    shot,
    sqlite_only,
)


async def menu(page, text):
    await bubble(page, text).click(button="right")
    await page.wait_for_selector(".ctx-menu")


@pytest.mark.timeout(90)
async def test_react_edit_pin_and_delivered_marks(browser, base_url, deps):  # noqa: F811
    a, b = await people(deps, "Alice", "Bob")
    alice = await new_page(browser, base_url, person=a)
    await open_chat(alice, "Bob")
    await send_text(alice, "lunch at noon?")
    await alice.wait_for_selector(".msg.mine:not(.local) .bubble .text")
    # Bob is away: "Sent". Bob's tab opens on the chat list: ✓ Delivered, not read.
    await alice.locator(".read-mark.sent").wait_for()
    bob = await new_page(browser, base_url, person=b)
    await alice.locator(".read-mark.delivered").wait_for()
    assert await alice.locator(".read-mark.delivered").text_content() == "Delivered"
    await open_chat(bob, "Alice")
    await alice.locator(".read-mark.read").wait_for()

    # Bob reacts from the menu's reaction bar; both see the chip.
    await menu(bob, "lunch at noon?")
    await assert_accessible(bob, "message menu with reactions")
    await bob.click(".ctx-menu .reaction-bar [data-emoji='👍']")
    await bob.locator(".reaction-chip.mine", has_text="👍 1").wait_for()
    await alice.locator(".reaction-chip:not(.mine)", has_text="👍 1").wait_for()
    # Alice adds the same one by clicking the chip; Bob takes his off.
    await alice.click(".reaction-chip[data-emoji='👍']")
    await bob.locator(".reaction-chip.mine", has_text="👍 2").wait_for()
    await bob.click(".reaction-chip[data-emoji='👍']")
    await alice.locator(".reaction-chip.mine", has_text="👍 1").wait_for()

    # Alice edits in place; Bob sees the new text with "edited". User text stays text.
    await menu(alice, "lunch at noon?")
    await alice.click(".ctx-menu [data-action=edit]")
    box = alice.locator(".edit-input")
    await box.fill(f"lunch at one? {XSS}")
    await box.press("Enter")
    await bubble(bob, "lunch at one?").wait_for()
    assert await bubble(bob, "lunch at one?").text_content() == f"lunch at one? {XSS}"
    await bob.locator(".edited-mark").wait_for()
    assert await bob.evaluate("window.__xss") is None

    # Bob pins it: the pinned bar appears for both, with a system line.
    await menu(bob, "lunch at one?")
    await bob.click(".ctx-menu [data-action=pin]")
    await alice.locator(".pinned-bar:not([hidden]) .pinned-text", has_text="lunch at one?").wait_for()
    await alice.locator(".sys-line", has_text="Bob pinned a message").wait_for()
    await shot(alice, "richer-pins-reactions")
    await assert_accessible(alice, "chat with pins and reactions")
    await alice.click(".pinned-bar [data-action=pins]")
    await alice.locator(".modal .record-item", has_text="lunch at one?").wait_for()
    await alice.click(".modal .record-item button.link")
    await bob.locator(".pinned-bar").wait_for(state="hidden")
    assert_no_errors(alice, bob)


@pytest.mark.timeout(90)
async def test_multi_select_forward_merged_record_card_and_location(
        browser, base_url, deps):  # noqa: F811
    a, b, c = await people(deps, "Alice", "Bob", "Carol")
    alice = await new_page(browser, base_url, person=a)
    await open_chat(alice, "Bob")
    await send_text(alice, "first line")
    await send_text(alice, "second line")
    await alice.locator(".msg.mine:not(.local) .bubble .text", has_text="second line").wait_for()

    # Select both, forward merged to Carol: Carol opens the record (she is not in Alice–Bob).
    await menu(alice, "first line")
    await alice.click(".ctx-menu [data-action=select]")
    await alice.locator(".msg.selectable .select-box").nth(1).check()
    await alice.locator(".select-count", has_text="2 selected").wait_for()
    await alice.click("[data-action=forward-selected]")
    await alice.locator(".modal input[value=merged]").check()
    await alice.locator(".modal .pick-row", has_text="Carol").locator("input").check()
    await assert_accessible(alice, "forward picker")
    await alice.click("[data-action=forward-send]")
    await alice.locator(".modal").wait_for(state="detached")
    carol = await new_page(browser, base_url, person=c)
    await open_chat(carol, "Alice")
    await carol.click("[data-action=open-record]")
    items = carol.locator(".modal .record-item")
    await items.nth(1).wait_for()
    assert "first line" in await items.nth(0).text_content()
    assert "second line" in await items.nth(1).text_content()
    await shot(carol, "richer-chat-record")
    await carol.keyboard.press("Escape")

    # A contact card of Bob to Carol; Carol can ask Bob from it.
    await open_chat(alice, "Carol")
    await alice.click("[data-action=share-contact]")
    await alice.locator(".modal .pick-row", has_text="Bob").click()
    await carol.locator(".contact-card .card-name", has_text="Bob").wait_for()
    await carol.click("[data-action=add-from-card]")
    await carol.locator("#toast", has_text="Request sent").wait_for()
    # A typed location: an OpenStreetMap link, no embedded map.
    await alice.click("[data-action=send-location]")
    await alice.fill(".location-form input[name=lat]", "48.8584")
    await alice.fill(".location-form input[name=lng]", "2.2945")
    await alice.fill(".location-form input[name=name]", "Tour Eiffel")
    await alice.click(".location-form button[type=submit]")
    link = carol.locator("a.location-card", has_text="Tour Eiffel")
    await link.wait_for()
    href = await link.get_attribute("href")
    assert href.startswith("https://www.openstreetmap.org/?mlat=48.858400&mlon=2.294500")
    assert await carol.locator("iframe").count() == 0
    assert_no_errors(alice, carol)


@pytest.mark.timeout(90)
async def test_offline_tab_catches_up_on_changes_through_sync(browser, base_url, deps):  # noqa: F811
    from app.services import message_changes as changes
    from app.services import messaging

    a, b = await people(deps, "Alice", "Bob")
    bob = await new_page(browser, base_url, person=b)
    await open_chat(bob, "Alice")
    cid = await bob.evaluate("window.__parley.openId")
    sent = []
    for text in ("to be edited", "to be liked", "to be recalled"):
        sent.append(await messaging.send_from_payload(deps, a.user_id, {
            "conversation_id": cid, "client_msg_id": text, "text": text}))
    await bubble(bob, "to be recalled").wait_for()
    # Bob's tab loses the network; the changes happen while it is away.
    await bob.context.set_offline(True)
    await bob.wait_for_selector("body[data-connected=false]")
    await changes.edit(deps, a.user_id, changes.EditIn(message_id=sent[0]["id"], text="edited!"))
    await changes.react(deps, a.user_id, changes.ReactIn(message_id=sent[1]["id"], emoji="🎉",
                                                          on=True))
    await messaging.recall(deps, a.user_id, messaging.MessageRef(message_id=sent[2]["id"]))
    await changes.pin(deps, a.user_id, changes.PinIn(message_id=sent[1]["id"]))
    await bob.context.set_offline(False)
    await bob.wait_for_selector("body[data-connected=true]")
    # Chromium logs each reconnection attempt made while the network was off;
    # whether one fell in that window depends on the machine's speed.
    bob.errors = [e for e in bob.errors if "ERR_INTERNET_DISCONNECTED" not in e]
    await bubble(bob, "edited!").wait_for()
    await bob.locator(".msg", has=bob.locator(".edited-mark")).first.wait_for()
    await bob.locator(".reaction-chip", has_text="🎉 1").wait_for()
    await bob.locator(".sys-line.recalled").wait_for()
    assert await bubble(bob, "to be recalled").count() == 0
    await bob.locator(".pinned-bar:not([hidden])", has_text="to be liked").wait_for()
    assert_no_errors(bob)
