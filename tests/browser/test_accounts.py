"""Users, passwords and webhooks in a real browser: an admin changes a user's role, a user
changes their own password, webhooks are created and edited; the Settings link is for
admins only; roles and CSRF are enforced by the server."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from stoker.db import Executor, connect
from stoker.engine.dashboard import users
from tests.browser.conftest import PASSWORD, DashSite, off_loop
from tests.harness import SCHEMA

pytestmark = pytest.mark.timeout(120)


def nav_links(page: Page) -> list[str]:
    return page.locator("nav.side ul a").all_inner_texts()


def test_the_settings_link_is_shown_to_admins_only(
    page_as: Callable[[str], Page], site: DashSite
) -> None:
    admin = page_as("admin")
    assert "Settings" in nav_links(admin)
    for role in ("operator", "viewer"):
        other = page_as(role)
        other.goto(f"{site.base}/ui/")
        assert "Settings" not in nav_links(other)
        answer = other.goto(f"{site.base}/ui/settings")
        assert answer is not None and answer.status == 403


def _restore(site: DashSite, email: str) -> None:
    """Gives the module's viewer back their role and password (other tests sign in as them)."""

    async def run() -> None:
        conn = await connect(site.engine.db_url, SCHEMA)
        try:
            db = Executor(conn)
            await users.set_role(db, site.tenant.tenant_id, email, "viewer")
            await users.set_password(db, email, PASSWORD)
        finally:
            await conn.close()

    off_loop(lambda: asyncio.run(run()))


def test_an_admin_changes_a_role_and_a_user_changes_their_password(
    page_as: Callable[[str], Page], browser: Browser, site: DashSite, shot: Callable[..., Path]
) -> None:
    try:
        _role_and_password(page_as, browser, site, shot)
    finally:
        _restore(site, site.emails["viewer"])


def _role_and_password(
    page_as: Callable[[str], Page], browser: Browser, site: DashSite, shot: Callable[..., Path]
) -> None:
    viewer_email = site.emails["viewer"]
    viewer = page_as("viewer")
    viewer.goto(f"{site.base}/ui/account")
    expect(viewer.get_by_test_id("my-role")).to_have_text("viewer")
    # A viewer may change their own password, but only with the session's token...
    refused = viewer.request.post(
        f"{site.base}/ui/account/password",
        form={"current_password": PASSWORD, "new_password": "x" * 12, "confirm_password": "x" * 12},
    )
    assert refused.status == 403
    # ...and the current password.
    viewer.get_by_label("Current password").fill("not the password")
    viewer.get_by_label("New password (8 characters or more)").fill("a new passphrase")
    viewer.get_by_label("New password again").fill("a new passphrase")
    viewer.get_by_test_id("change-password").click()
    expect(viewer.get_by_test_id("form-error")).to_contain_text("current password is not right")
    viewer.get_by_label("Current password").fill(PASSWORD)
    viewer.get_by_label("New password (8 characters or more)").fill("a new passphrase")
    viewer.get_by_label("New password again").fill("a new passphrase")
    viewer.get_by_test_id("change-password").click()
    expect(viewer.get_by_test_id("form-ok")).to_have_text("Your password was changed.")
    shot(viewer, "account-password")
    # The admin makes the viewer an operator; a viewer's own role is not theirs to change.
    admin = page_as("admin")
    admin.goto(f"{site.base}/ui/settings")
    row = admin.locator(f'[data-testid="user-row"][data-email="{viewer_email}"]')
    row.get_by_label(f"Role of {viewer_email}").select_option("operator")
    row.get_by_test_id("set-role").click()
    expect(admin.locator(".notice.ok")).to_contain_text(f"{viewer_email} is now operator")
    expect(
        admin.locator(
            f'[data-testid="user-row"][data-email="{site.emails["admin"]}"]'
        ).get_by_test_id("role-select")
    ).to_have_count(0)
    shot(admin, "settings-roles")
    # Signed in afresh with the new password, the user is an operator now.
    context = browser.new_context()
    try:
        fresh = context.new_page()
        fresh.goto(f"{site.base}/ui/login")
        fresh.get_by_label("Email").fill(viewer_email)
        fresh.get_by_label("Password").fill(PASSWORD)
        fresh.get_by_role("button", name="Sign in").click()
        expect(fresh.get_by_test_id("login-error")).to_be_visible()
        fresh.get_by_label("Email").fill(viewer_email)
        fresh.get_by_label("Password").fill("a new passphrase")
        fresh.get_by_role("button", name="Sign in").click()
        fresh.goto(f"{site.base}/ui/account")
        expect(fresh.get_by_test_id("my-role")).to_have_text("operator")
    finally:
        context.close()
    # An operator cannot change roles.
    operator = page_as("operator")
    operator.goto(f"{site.base}/ui/account")
    denied = operator.request.post(
        f"{site.base}/ui/settings/users/role",
        form={"email": viewer_email, "role": "admin"},
        headers={"X-CSRF-Token": operator.locator("input[name=csrf]").first.input_value()},
    )
    assert denied.status == 403


def test_a_webhook_is_created_and_edited_in_the_browser(
    page: Page, page_as: Callable[[str], Page], site: DashSite, shot: Callable[..., Path]
) -> None:
    page.goto(f"{site.base}/ui/webhooks")
    page.get_by_test_id("new-webhook").click()
    page.get_by_label("Name (part of its URL)").fill("shop-orders")
    page.get_by_label("Kind").select_option("HMAC")
    page.get_by_label("Secret (HMAC secret, Basic password or API key)").fill("s3cret-value")
    page.get_by_label("Header (HMAC, API_KEY)").fill("X-Shop-Signature")
    page.get_by_label("Event key (CEL over input and headers)").fill("'shop:' + ")
    page.get_by_test_id("save-webhook").click()
    # A bad expression: named on the page, nothing stored.
    expect(page.get_by_test_id("form-error")).to_contain_text("invalid CEL expression")
    expect(page.get_by_label("Header (HMAC, API_KEY)")).to_have_value("X-Shop-Signature")
    page.goto(f"{site.base}/ui/webhooks")
    expect(page.get_by_test_id("webhook-row")).to_have_count(0)
    page.get_by_test_id("new-webhook").click()
    page.get_by_label("Name (part of its URL)").fill("shop-orders")
    page.get_by_label("Secret (HMAC secret, Basic password or API key)").fill("s3cret-value")
    page.get_by_label("Header (HMAC, API_KEY)").fill("X-Shop-Signature")
    page.get_by_label("Event key (CEL over input and headers)").fill("'shop:' + input.event")
    page.get_by_test_id("save-webhook").click()
    row = page.locator('[data-testid="webhook-row"][data-name="shop-orders"]')
    expect(row).to_contain_text("'shop:' + input.event")
    url = site.base + row.locator("code").first.inner_text()
    # Edit: a new event key; the secret left empty keeps the authentication.
    row.get_by_test_id("edit-webhook").click()
    key = page.get_by_label("Event key (CEL over input and headers)")
    expect(key).to_have_value("'shop:' + input.event")
    key.fill("'orders:' + input.event")
    page.get_by_label("Scope (CEL, optional)").fill("headers['x-shop-id']")
    page.get_by_test_id("save-webhook").click()
    expect(row).to_contain_text("'orders:' + input.event")
    shot(page, "webhooks-edited")
    body = json.dumps({"event": "paid"}).encode()
    signature = hmac.new(b"s3cret-value", body, hashlib.sha256).hexdigest()
    sent = page.request.post(
        url,
        data=body,
        headers={
            "X-Shop-Signature": signature,
            "X-Shop-Id": "eu-1",
            "content-type": "application/json",
        },
    )
    assert sent.status == 202, sent.text()
    assert sent.json()["key"] == "orders:paid"
    assert sent.json()["scope"] == "eu-1"
    # A viewer sees no webhook buttons, and the server refuses their edits.
    viewer = page_as("viewer")
    viewer.goto(f"{site.base}/ui/webhooks")
    expect(viewer.get_by_test_id("new-webhook")).to_have_count(0)
    expect(viewer.get_by_test_id("edit-webhook")).to_have_count(0)
    answer = viewer.goto(f"{site.base}/ui/webhooks/shop-orders/edit")
    assert answer is not None and answer.status == 403
