"""The web client with other sign-in providers, in real Chromium against the real
OpenID Connect provider (npm oidc-provider): provider buttons, the whole flow
back into the app, the error page, linked accounts, password change and the
avatar editor."""

from __future__ import annotations

import json

import pytest

from app.models.accounts import OAuthIdentity, User
from tests.factories import make_user
from tests.oauth_helpers import (  # noqa: F401 - fixtures
    WEB_SECRET,
    OidcProvider,
    parley_port,
    server,
)
from tests.web_helpers import (  # noqa: F401 - fixtures
    assert_accessible,
    assert_no_errors,
    browser,
    new_page,
    sqlite_only,
)


@pytest.fixture(scope="module")
def oidc(parley_port):
    provider = OidcProvider([
        {"client_id": "parley-web", "client_secret": WEB_SECRET,
         "redirect_uris": [f"http://127.0.0.1:{parley_port}/api/v1/auth/oauth/company/callback"]},
    ])
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture
def settings_overrides(oidc, parley_port):
    providers = {
        "company": {"issuer": oidc.issuer, "client_id": "parley-web",
                    "client_secret": WEB_SECRET, "label": "Company SSO"},
        # Configured but never reached in these tests: only its button shows.
        "github": {"client_id": "gh", "client_secret": "x"},
    }
    return {"oauth_providers": json.dumps(providers),
            "public_url": f"http://127.0.0.1:{parley_port}"}


@pytest.fixture
def base_url(server):
    return f"http://127.0.0.1:{server.port}"


async def provider_login(page, login: str, back_to: str) -> None:
    """oidc-provider's development pages: any login name, then consent."""
    await page.wait_for_selector("input[name=login]")
    await page.fill("input[name=login]", login)
    await page.fill("input[name=password]", "any")
    await page.click("button[type=submit]")
    await page.wait_for_selector("button[type=submit]:has-text('Continue')")
    await page.click("button[type=submit]:has-text('Continue')")
    await page.wait_for_url(f"{back_to}/**", wait_until="commit")
    # What the provider's own pages logged (they load web fonts from the internet)
    # is not ours to judge.
    page.errors.clear()


async def test_sign_in_with_the_provider_and_back_into_the_app(browser, base_url):  # noqa: F811
    page = await new_page(browser, base_url)
    await page.wait_for_selector("form[data-form=signin]")
    buttons = page.locator(".oauth-btn")
    await buttons.first.wait_for()
    assert await buttons.all_inner_texts() == ["Continue with Company SSO", "Continue with GitHub"]
    await assert_accessible(page, "sign-in with providers")

    await page.click(".oauth-btn[data-provider=company]")
    assert page.url.startswith("http://127.0.0.1:") and base_url not in page.url
    await provider_login(page, "carol", base_url)
    await page.wait_for_selector("body[data-connected=true]")
    me = await page.evaluate("window.__parley.me")
    assert me["display_name"] == "Name carol" and me["email"] is None
    assert "oauth_code" not in page.url  # the one-time code left the address bar
    assert await page.evaluate("!!localStorage.getItem('parley.refresh')")
    user = await User.get(id=me["id"])
    assert await OAuthIdentity.filter(user_id=user.id, provider="company").count() == 1
    assert_no_errors(page)


async def test_a_failed_sign_in_shows_the_error_page(browser, base_url):  # noqa: F811
    page = await new_page(browser, base_url, path=None)
    # A callback this browser never started (e.g. a link someone sent).
    await page.goto(f"{base_url}/api/v1/auth/oauth/company/callback?state=forged&code=x")
    await page.wait_for_selector("[data-page=oauth-error]")
    text = await page.locator("[data-page=oauth-error] .form-error").inner_text()
    assert "started elsewhere" in text
    assert await page.get_attribute("[data-page=oauth-error] .form-error", "data-code") == \
        "oauth_state_invalid"
    await assert_accessible(page, "sign-in error")
    await page.click("[data-action=back-to-signin]")
    await page.wait_for_selector("form[data-form=signin]")
    assert await User.all().count() == 0
    page.errors.clear()


async def test_link_change_password_and_avatar_in_settings(browser, base_url, deps):  # noqa: F811
    ann = await make_user(deps, "Ann")
    page = await new_page(browser, base_url, person=ann, path="/#/settings/account")
    await page.wait_for_selector("[data-section=identities] [data-action=link][data-provider=company]")
    await assert_accessible(page, "account settings")
    await page.click("[data-action=link][data-provider=company]")
    await provider_login(page, "ann-at-work", base_url)
    card = page.locator("[data-section=identities] [data-identity]")
    await card.wait_for()
    assert "Company SSO" in await card.inner_text()
    assert await OAuthIdentity.filter(user_id=ann.user_id).count() == 1

    # Unlink (Ann has a password, so it may go).
    await page.click("[data-action=unlink]")
    await card.wait_for(state="detached")
    assert await OAuthIdentity.filter(user_id=ann.user_id).count() == 0

    # Change the password: this device stays signed in.
    await page.fill("form[data-form=password] input[name=current_password]", ann.password)
    await page.fill("form[data-form=password] input[name=new_password]", "brand new secret")
    await page.click("form[data-form=password] button[type=submit]")
    await page.locator("#toast", has_text="Password changed").wait_for()

    # Avatar: choose, preview the square, save; the picture replaces the initials.
    await page.click("[data-section=profile]")
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (400, 300), (200, 30, 30)).save(buf, format="PNG")
    await page.set_input_files("input[name=avatar]", files=[
        {"name": "me.png", "mimeType": "image/png", "buffer": buf.getvalue()}])
    await page.wait_for_selector("canvas[data-role=avatar-preview]:visible")
    await page.fill("input[name=zoom]", "2")
    await page.click("[data-action=avatar-save]")
    await page.locator("#toast", has_text="Photo updated").wait_for()
    await page.wait_for_selector(".profile-head .avatar.has-img img")
    src = await page.get_attribute(".profile-head .avatar img", "src")
    assert src.startswith("/api/v1/avatars/") and src.endswith("/160.jpg")
    assert (await User.get(id=ann.user_id)).avatar_key
    # Devices & activity lists this browser with its address.
    await page.click("[data-section=devices]")
    await page.locator("[data-session]", has_text="127.0.0.1").first.wait_for()
    assert_no_errors(page)


async def test_group_photo_set_by_the_owner_reaches_a_member(browser, base_url, deps):  # noqa: F811
    import io

    from PIL import Image

    from app.services import groups
    from tests.factories import make_contacts

    owner, member = await make_user(deps, "Olga"), await make_user(deps, "Max")
    await make_contacts(deps, owner, member)
    conv = await groups.create_group(deps, owner.user_id,
                                     groups.CreateIn(name="Hikers", member_ids=[member.user_id]))
    max_page = await new_page(browser, base_url, person=member)
    await max_page.wait_for_selector("body[data-connected=true]")
    page = await new_page(browser, base_url, person=owner, path=f"/#/chats/{conv['id']}/info")
    await page.wait_for_selector("[data-section=group-avatar] input[name=avatar]")
    buf = io.BytesIO()
    Image.new("RGB", (300, 500), (20, 90, 200)).save(buf, format="JPEG")
    await page.set_input_files("[data-section=group-avatar] input[name=avatar]", files=[
        {"name": "g.jpg", "mimeType": "image/jpeg", "buffer": buf.getvalue()}])
    await page.click("[data-section=group-avatar] [data-action=avatar-save]")
    await page.locator("#toast", has_text="Photo updated").wait_for()
    await page.wait_for_selector("[data-section=group-avatar] .avatar.has-img img")
    # Max's chat list swaps the group icon for the photo without a reload.
    await max_page.wait_for_selector(".avatar.has-img img[src$='/160.jpg']")
    assert_no_errors(page, max_page)
