"""Browser scenario: groups — create, the header's member count, "you" in
system lines, @mentions from the member picker, and the admin actions (mute a
member, only admins can send, transfer ownership, invite link and revoke)."""

from __future__ import annotations

import pytest

from app.api import web as web_client
from tests.web_helpers import (  # noqa: F401 - fixtures
    assert_accessible,
    assert_no_errors,
    browser,
    bubble,
    chat_item,
    hold_requests,
    new_page,
    open_chat,
    people,
    release,
    send_text,
    shot,
    sqlite_only,
)


async def info_action(page, member, action):
    await page.locator(f".member:has-text('{member}') [data-action={action}]").click()


@pytest.mark.timeout(60)
async def test_groups_mentions_and_admin_actions(browser, base_url, deps, app):  # noqa: F811
    a, b, c = await people(deps, "Alice", "Bob", "Carol")
    alice = await new_page(browser, base_url, person=a)
    bob = await new_page(browser, base_url, person=b)

    await alice.click("[data-action=new-group]")
    await alice.fill("form[data-form=new-group] input[name=group_name]", "Trip planning")
    for name in ("Bob", "Carol"):
        await alice.locator(".pick-row", has_text=name).locator("input").check()
    await assert_accessible(alice, "new group")
    await alice.click("form[data-form=new-group] button[type=submit]")
    # "you" mid-sentence, lower case; the header shows the member count next to the title.
    await bob.locator(".chat-item[data-title='Trip planning']").wait_for()
    await open_chat(bob, "Trip planning")
    await bob.locator(".sys-line", has_text="Alice created the group and invited you, Carol").wait_for()
    await alice.locator(".sys-line", has_text="You created the group and invited Bob, Carol").wait_for()
    await alice.locator(".chat-header .member-count", has_text="(3)").wait_for()
    assert await alice.locator(".chat-header .chat-sub").count() == 0  # no empty subtitle

    # @mention: typing "@" opens the member picker; choosing sends a real mention.
    box = bob.locator(".composer-input")
    await box.fill("")
    await box.type("Ready? @ca")
    await bob.locator(".mention-picker [role=option]", has_text="Carol").wait_for()
    await assert_accessible(bob, "mention picker")
    await box.press("Enter")
    assert await box.input_value() == "Ready? @Carol "
    await box.type("and @")
    await bob.locator(".mention-picker [role=option]", has_text="Alice").click()
    await box.press("Enter")
    await bubble(alice, "Ready? @Carol and @Alice").wait_for()
    sent = await alice.evaluate("""() => {
        const conv = [...window.__parley.convs.values()].find(c => c.title === 'Trip planning');
        return conv.msgs.at(-1).mentions;
    }""")
    assert sorted(sent) == sorted([a.user_id, c.user_id])
    await shot(bob, "05-group-chat")

    # Group info: one "Add members" heading, a placeholder for the empty announcement.
    await alice.click("[data-action=group-info]")
    await alice.locator(".member", has_text="Carol").wait_for()
    assert await alice.locator("h3", has_text="Add members").count() == 1
    assert await alice.locator("button", has_text="Add members").count() == 0
    await assert_accessible(alice, "group info")

    # Mute Bob: his sends are refused, with the reason in his language.
    await info_action(alice, "Bob", "mute-member")
    await alice.locator(".member:has-text('Bob') .tag", has_text="Muted").wait_for()
    await send_text(bob, "can anyone hear me")
    await bob.locator(".msg.local.failed").wait_for()
    await bob.locator("#toast", has_text="not allowed").wait_for()
    await info_action(alice, "Bob", "unmute-member")
    await alice.locator(".member:has-text('Bob') [data-action=mute-member]").wait_for()

    # Only admins can send.
    await alice.locator("input[name=only_admins_can_send]").check()
    await alice.locator(".sys-line, #toast").first.wait_for()
    for _ in range(50):
        group = await alice.evaluate("""() => [...window.__parley.groups.values()][0]?.only_admins_can_send""")
        if group:
            break
        await alice.wait_for_timeout(100)
    assert group is True
    await alice.locator("input[name=only_admins_can_send]").uncheck()

    # Invite link with QR code; revoke it when the server has the route.
    await alice.click("[data-action=invite]")
    await alice.locator("img.qr").wait_for()
    assert await alice.locator("img.qr").evaluate(
        "img => img.complete ? img.naturalWidth"
        " : new Promise(ok => { img.onload = () => ok(img.naturalWidth); })") > 0
    await shot(alice, "06-group-info")
    if web_client._has_method(app, "/api/v1/groups/{group_id}/invites/{token}", "DELETE"):
        url = await alice.locator(".invite-url code").text_content()
        token = url.rsplit("/", 1)[-1]
        listed = web_client._has_method(app, "/api/v1/groups/{group_id}/invites", "GET")
        if listed:  # the active links, the new one among them
            await alice.locator(f".active-links .link-row[data-token='{token}']").wait_for()
        await alice.click("[data-action=revoke-invite]")
        await alice.locator(".invite", has_text="revoked").wait_for()
        if listed:
            await alice.locator(f".active-links .link-row[data-token='{token}']").wait_for(state="detached")
        token = url.rsplit("/", 1)[-1]
        status = await bob.evaluate(
            "async (t) => (await fetch('/api/v1/groups/invites/' + t, {headers: {Authorization: "
            "'Bearer ' + localStorage.getItem('parley.access')}})).status", token)
        assert status == 410
    else:
        assert await alice.locator("[data-action=revoke-invite]").count() == 0

    # Transfer ownership to Bob: Alice becomes a member, Bob sees the owner's controls.
    alice.on("dialog", lambda d: d.accept())
    await info_action(alice, "Bob", "transfer")
    await alice.locator(".member:has-text('Bob') .tag", has_text="Owner").wait_for()
    await alice.locator("[data-action=leave]", has_text="Leave group").wait_for()
    await bob.locator(".sys-line", has_text="You became the group owner").wait_for()
    await bob.click("[data-action=group-info]")
    await bob.locator("[data-action=leave]", has_text="Dissolve group").wait_for()
    await bob.locator("input[name=only_admins_can_send]").wait_for()

    # In Chinese: "添加成员" once, "你" for me, the Chats tab is "聊天".
    await bob.click("a.nav-btn[data-view=settings]")
    await bob.click("[data-section=language]")
    await bob.locator("input[value='zh-CN']").check()
    await bob.locator("a.nav-btn[data-view=chats]", has_text="聊天").wait_for()
    await bob.click("a.nav-btn[data-view=chats]")
    await chat_item(bob, "Trip planning").click()
    await bob.locator(".sys-line", has_text="Alice创建了群聊，并邀请你、Carol加入").wait_for()
    await bob.click("[data-action=group-info]")
    await bob.locator(".member", has_text="Carol").wait_for()
    assert await bob.get_by_text("添加成员", exact=True).count() == 1
    assert await bob.locator("textarea[name=announcement]").get_attribute("placeholder") == "暂无群公告。"
    await assert_accessible(bob, "group info (Chinese)")
    await shot(bob, "08-chinese-group-info")
    assert_no_errors(alice)


@pytest.mark.timeout(60)
async def test_the_mention_picker_opens_when_the_members_arrive_after_the_at(browser, base_url, deps, app):  # noqa: F811
    from app.services import groups

    a, b, c = await people(deps, "Alice", "Bob", "Carol")
    await groups.create_group(deps, a.user_id, groups.CreateIn(
        name="Slow members", member_ids=[b.user_id, c.user_id]))
    bob = await new_page(browser, base_url, person=b)
    held = await hold_requests(bob, "**/api/v1/groups/*")

    await open_chat(bob, "Slow members")
    await bob.locator(".composer-input").type("Ready? @ca")
    assert await bob.locator(".mention-picker").is_hidden()
    await release(held, "the group's members")
    await bob.locator(".mention-picker [role=option]", has_text="Carol").wait_for()
    assert_no_errors(bob)
