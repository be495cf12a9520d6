"""Browser: Me → Privacy & data — download my data (ready while the page is
open, via export:ready), delete my account with the grace period explained
and a password confirmation, and the notice when signing in again cancels it."""

from __future__ import annotations

import asyncio

import pytest

from app.models.accounts import User
from tests.web_helpers import (  # noqa: F401 - fixtures
    assert_accessible,
    browser,
    new_page,
    people,
    shot,
    sqlite_only,
)


@pytest.mark.timeout(120)
async def test_download_my_data_then_delete_and_cancel_by_signing_in(browser, base_url, deps):  # noqa: F811
    (a,) = await people(deps, "Alice")
    page = await new_page(browser, base_url, person=a)
    await page.click("a.nav-btn[data-view=settings]")
    await page.click("[data-section=privacy]")
    await page.locator("h2", has_text="Privacy & data").wait_for()
    # Download my data: asked, then ready while the page is open (export:ready).
    await page.click("[data-action=export-data]")
    link = page.locator("[data-export-link]")
    await link.wait_for(timeout=30_000)
    assert await page.locator("[data-action=export-data]").is_disabled()  # one a day
    href = await link.get_attribute("href")
    resp = await page.request.get(href if href.startswith("http") else base_url + href)
    assert resp.status == 200 and resp.headers["content-type"] == "application/zip"
    assert (await resp.body())[:2] == b"PK"
    await assert_accessible(page, "privacy & data")

    # Delete: explained, then confirmed with the password (a wrong one is refused).
    block = page.locator("[data-block=delete]")
    assert "7 days" in await block.inner_text()
    await page.click("[data-action=delete-account]")
    form = page.locator("form[data-form=delete-account]")
    await form.locator("input[name=delete_password]").fill("not my password")
    await form.locator("button[type=submit]").click()
    await form.locator(".form-error", has_text="not valid").wait_for()
    assert (await User.get(id=a.user_id)).deactivated_at is None
    await shot(page, "privacy-delete-confirm")
    await form.locator("input[name=delete_password]").fill(a.password)
    await form.locator("button[type=submit]").click()
    # Signed out, told when the account goes and how to keep it.
    await page.locator("form[data-form=signin]").wait_for()
    await page.locator("#notice", has_text="Sign in before then to cancel").wait_for()
    assert (await User.get(id=a.user_id)).deactivated_at is not None

    await page.click("[data-action=dismiss-notice]")
    await page.fill("form[data-form=signin] input[name=login]", a.email)
    await page.fill("form[data-form=signin] input[type=password]", a.password)
    await page.click("form[data-form=signin] button[type=submit]")
    await page.wait_for_selector(".shell")
    await page.locator("#notice", has_text="deletion of your account has been cancelled").wait_for()
    await shot(page, "privacy-deletion-cancelled")
    row = await User.get(id=a.user_id)
    assert row.deactivated_at is None and row.erase_after is None
    # The console may show only the refused password's 400 and the 401s of
    # requests racing the end of the sessions the deletion ended.
    assert [e for e in page.errors
            if "status of 400" not in e and "status of 401" not in e] == [], page.errors


@pytest.mark.timeout(120)
async def test_the_export_link_stays_when_ready_arrives_before_the_answer_that_asked(
        browser, base_url, deps):  # noqa: F811
    """A small export is built and announced (export:ready) at once; the
    answer to the request that asked for it, saying "pending", can arrive
    after it. Here that answer is held back until the link is on screen."""
    (a,) = await people(deps, "Alice")
    page = await new_page(browser, base_url, person=a)
    await page.click("a.nav-btn[data-view=settings]")
    await page.click("[data-section=privacy]")
    await page.locator("h2", has_text="Privacy & data").wait_for()
    link = page.locator("[data-export-link]")
    held = asyncio.Event()

    async def hold_answer(route):
        answer = await route.fetch()  # the server handles the request now
        held.set()
        await link.wait_for(timeout=30_000)  # export:ready came first
        await route.fulfill(response=answer)

    await page.route("**/api/v1/me/export", lambda route: asyncio.ensure_future(
        hold_answer(route)) if route.request.method == "POST" else route.continue_())
    async with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith(
            "/api/v1/me/export"), timeout=40_000) as answered:
        await page.click("[data-action=export-data]")
    assert held.is_set()
    assert (await (await answered.value).json())["export"]["status"] == "pending"
    await page.wait_for_timeout(300)  # the late answer has been shown, or ignored
    assert await link.is_visible()
    assert await page.locator("[data-action=export-data]").is_disabled()  # one a day
