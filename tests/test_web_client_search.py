"""Browser scenario: the search box (Contacts / Group chats / Chat history), opening
a chat at a found message with history loading both ways, and the in-chat search
with its filters. Real Chromium against a real server (see tests/web_helpers.py)."""

from __future__ import annotations

import uuid

import pytest

from app.services import conversations as convs
from app.services import groups, messaging
from tests.factories import make_contacts, make_user
from tests.web_helpers import (  # noqa: F401 - fixtures
    assert_accessible,
    assert_no_errors,
    browser,
    hold_requests,
    new_page,
    open_chat,
    release,
    shot,
    sqlite_only,
    wait_for_js,
)


async def say(deps, who, cid, text):
    return await messaging.send_message(deps, who.user_id, messaging.SendIn(
        conversation_id=str(cid), client_msg_id=uuid.uuid4().hex, text=text))


@pytest.mark.timeout(120)
async def test_search_box_jump_to_message_and_chat_search(browser, base_url, deps):  # noqa: F811
    alice = await make_user(deps, "Alice", username="alice", email="alice@example.org")
    zs = await make_user(deps, "张三", username="zhangsan", email="zs@example.org")
    await make_contacts(deps, alice, zs)
    gid = (await groups.create_group(deps, alice.user_id, groups.CreateIn(
        name="家庭 Family", member_ids=[zs.user_id])))["id"]
    conv, _ = await convs.get_or_create_direct(deps, alice.user_id, zs.user_id)
    for i in range(1, 121):
        await say(deps, zs if i % 2 else alice, conv.id,
                  "我们明天见 at the park 😀" if i == 10 else f"第{i}条 msg{i}")

    page = await new_page(browser, base_url, person=alice)
    box = page.locator(".list-header input.search")
    # Contacts by pinyin initials.
    await box.fill("zs")
    hit = page.locator(".search-hit[data-kind=contact]")
    await hit.first.wait_for()
    assert await hit.count() == 1 and "张三" in await hit.first.text_content()
    # Groups by pinyin of their name.
    await box.fill("jt")
    await page.locator(f".search-hit[data-kind=group][data-id='{gid}']").wait_for()
    # Chat history: one match, shown with its highlight; opening it jumps there.
    await box.fill("明天")
    chat_hit = page.locator(".search-hit[data-kind=chat]")
    await chat_hit.wait_for()
    assert await chat_hit.locator("mark").first.text_content() == "明天"
    await assert_accessible(page, "search results")
    await shot(page, "search-box")
    await chat_hit.click()
    found = page.locator(".messages .found")
    await found.wait_for()
    assert "我们明天见" in await found.text_content()
    assert await found.get_attribute("data-seq") == "10"
    # The page around it is loaded, not the newest one: older and newer neighbours.
    await page.locator(".messages [data-seq='9']").wait_for()
    await page.locator(".messages [data-seq='20']").wait_for()
    assert await page.locator(".messages [data-seq='120']").count() == 0
    # Scrolling down loads newer pages up to the newest message.
    for _ in range(10):
        if await page.locator(".messages [data-seq='120']").count():
            break
        await page.evaluate("() => { const s = document.querySelector('.messages'); "
                            "s.scrollTop = s.scrollHeight; s.dispatchEvent(new Event('scroll')); }")
        await page.wait_for_timeout(300)
    await page.locator(".messages [data-seq='120']").wait_for()
    seqs = await page.eval_on_selector_all(
        ".messages li[data-seq]", "els => els.map(e => Number(e.dataset.seq)).filter(Boolean)")
    assert seqs == sorted(set(seqs)) and seqs[-1] == 120  # in order, no duplicates
    assert set(range(seqs[0], 121)) <= set(seqs)  # no gap between the two ends

    # In-chat search with a member filter, then jump to a result.
    await page.click("[data-action=search-history]")
    panel = page.locator(".chat-search")
    await panel.locator("[data-role=chat-search]").fill("msg77")
    result = panel.locator(".search-hit[data-kind=message]")
    await result.first.wait_for()
    assert await result.count() == 1
    assert await result.locator("mark").text_content() == "msg77"
    await panel.locator("[data-role=chat-search]").fill("msg7")
    await panel.locator("[data-role=member]").select_option(zs.user_id)
    await wait_for_js(page, "document.querySelectorAll('.chat-search .search-hit').length === 6")
    # msg7, msg71, msg73, …: zhangsan sent the odd ones only.
    got = await panel.locator(".search-hit[data-kind=message]").evaluate_all(
        "els => els.map(e => Number(e.dataset.seq))")
    assert got == [79, 77, 75, 73, 71, 7]
    await assert_accessible(page, "chat search")
    await shot(page, "search-in-chat")
    await panel.locator(".search-hit[data-seq='7']").click()
    found = page.locator(".messages .found[data-seq='7']")
    await found.wait_for()
    assert_no_errors(page)


@pytest.mark.timeout(60)
async def test_the_member_filter_fills_when_the_members_arrive_after_the_panel(
        browser, base_url, deps):  # noqa: F811
    alice = await make_user(deps, "Alice", username="alice", email="alice@example.org")
    zs = await make_user(deps, "张三", username="zhangsan", email="zs@example.org")
    await make_contacts(deps, alice, zs)
    await groups.create_group(deps, alice.user_id, groups.CreateIn(
        name="Slow members", member_ids=[zs.user_id]))
    page = await new_page(browser, base_url, person=alice)
    held = await hold_requests(page, "**/api/v1/groups/*")

    await open_chat(page, "Slow members")
    await page.click("[data-action=search-history]")
    member = page.locator(".chat-search [data-role=member]")
    await member.wait_for()
    assert await member.locator(f"option[value='{zs.user_id}']").count() == 0
    await release(held, "the group's members")
    await member.locator(f"option[value='{zs.user_id}']").wait_for(state="attached")
    assert "张三" in await member.locator(f"option[value='{zs.user_id}']").text_content()
    assert_no_errors(page)
