"""Signing in to the dashboard through OpenID Connect, in a real browser: an engine
configured with a provider (a real HTTP server issuing signed ID tokens,
:mod:`tests.browser.oidc_provider`), the authorization code flow with PKCE, an existing
user signed in by their email, a new one created with the default role, and forged or
replayed answers refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from stoker.db import Executor, connect
from stoker.engine.auth import create_tenant
from tests.browser.conftest import DashSite
from tests.browser.oidc_provider import TinyProvider
from tests.harness import (
    SCHEMA,
    EngineProcess,
    create_database,
    drop_database,
    with_database,
)

pytestmark = pytest.mark.timeout(120)

OIDC_TENANT = f"oidc-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def provider() -> Iterator[TinyProvider]:
    idp = TinyProvider().start()
    yield idp
    idp.stop()


@pytest.fixture(scope="module")
def engine(
    pg_url: str,
    engine_template: str,
    provider: TinyProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EngineProcess]:
    """An engine of its own, configured to sign in through ``provider``."""
    name = create_database(pg_url, engine_template)
    url = with_database(pg_url, name)

    async def tenant() -> None:
        conn = await connect(url, SCHEMA)
        try:
            await create_tenant(Executor(conn), OIDC_TENANT)
        finally:
            await conn.close()

    asyncio.run(tenant())
    env = {
        "STOKER_OIDC_ISSUER": provider.issuer,
        "STOKER_OIDC_CLIENT_ID": provider.client_id,
        "STOKER_OIDC_CLIENT_SECRET": provider.client_secret,
        "STOKER_OIDC_NAME": "Test IdP",
        "STOKER_OIDC_DEFAULT_ROLE": "viewer",
        "STOKER_OIDC_TENANT": OIDC_TENANT,
    }
    proc = EngineProcess(url, tmp_path_factory.mktemp("engine-oidc"), env=env).start()
    try:
        yield proc
    finally:
        proc.stop()
        drop_database(pg_url, name)


@pytest.fixture
def anonymous(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


def sign_in_at_provider(page: Page, site: DashSite, email: str, next_url: str) -> None:
    page.goto(f"{site.base}/ui/login?next={next_url}")
    page.get_by_test_id("oidc-sign-in").click()
    expect(page).to_have_title("Test IdP")
    page.get_by_label("Your email").fill(email)
    page.get_by_role("button", name="Continue").click()


def test_an_existing_user_signs_in_through_the_provider(
    anonymous: Page, site: DashSite, provider: TinyProvider, shot: Callable[..., Path]
) -> None:
    page = anonymous
    page.goto(f"{site.base}/ui/login")
    expect(page.get_by_test_id("oidc-sign-in")).to_have_text("Sign in with Test IdP")
    shot(page, "login-oidc")
    sign_in_at_provider(page, site, site.emails["operator"].upper(), "/ui/runs")
    expect(page).to_have_url(f"{site.base}/ui/runs")
    expect(page.locator(".who")).to_contain_text(f"{site.emails['operator']} (operator)")
    shot(page, "signed-in-oidc")


def test_a_new_email_gets_a_user_with_the_default_role(
    anonymous: Page, site: DashSite, shot: Callable[..., Path]
) -> None:
    email = f"newcomer-{uuid.uuid4().hex[:6]}@example.test"
    sign_in_at_provider(anonymous, site, email, "/ui/account")
    expect(anonymous).to_have_url(f"{site.base}/ui/account")
    expect(anonymous.get_by_test_id("my-role")).to_have_text("viewer")
    expect(anonymous.locator("dl.facts")).to_contain_text(OIDC_TENANT)


def test_forged_tokens_unverified_emails_and_foreign_states_are_refused(
    anonymous: Page, site: DashSite, provider: TinyProvider, shot: Callable[..., Path]
) -> None:
    page = anonymous
    provider.sign_with_other_key = True
    try:
        sign_in_at_provider(page, site, site.emails["admin"], "/ui/")
        expect(page.locator("body")).to_contain_text("signature does not verify")
        shot(page, "oidc-forged")
    finally:
        provider.sign_with_other_key = False
    provider.verified = False
    try:
        sign_in_at_provider(page, site, site.emails["admin"], "/ui/")
        expect(page.locator("body")).to_contain_text("has not verified the email")
    finally:
        provider.verified = True
    # Still not signed in.
    page.goto(f"{site.base}/ui/")
    expect(page).to_have_url(f"{site.base}/ui/login?next=%2Fui%2F")
    # A callback this browser did not start (another state) is refused before any code is
    # exchanged.
    before = provider.token_requests
    answer = page.goto(f"{site.base}/ui/login/oidc/callback?code=abc&state=forged")
    assert answer is not None and answer.status == 400
    assert provider.token_requests == before
