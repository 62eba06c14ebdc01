"""Signing in to the dashboard in a real browser: redirects, errors, roles."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import PASSWORD, DashSite


def test_sign_in_sends_back_to_the_page_asked_for(
    browser: Browser, site: DashSite, shot: Callable[..., Path]
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{site.base}/ui/?window=6h")
        expect(page).to_have_url(f"{site.base}/ui/login?next=%2Fui%2F%3Fwindow%3D6h")
        page.get_by_label("Email").fill(site.emails["viewer"])
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_test_id("login-error")).to_have_text("Wrong email or password.")
        shot(page, "signin-error")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(f"{site.base}/ui/?window=6h")
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    finally:
        context.close()


def test_the_overview_shows_charts_and_the_user(
    page_as: Callable[[str], Page], shot: Callable[..., Path], site: DashSite
) -> None:
    page = page_as("viewer")
    expect(page.get_by_text(site.emails["viewer"])).to_be_visible()
    expect(page.get_by_role("img", name="Runs finished per bucket")).to_be_visible()
    expect(page.get_by_test_id("stuck")).to_be_visible()
    shot(page, "overview")
