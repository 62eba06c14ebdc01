"""Accessibility of the main pages: labels and names of controls, text for pictures,
colour contrast (WCAG AA, checked in the page by ``a11y.js``) and keyboard navigation."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from stoker import Stoker
from tests.apps.dashboard import Work
from tests.browser.conftest import DashSite, off_loop
from tests.harness import WorkerProcess

pytestmark = pytest.mark.timeout(120)

CHECKS = (Path(__file__).parent / "a11y.js").read_text()


def problems(page: Page) -> list[str]:
    found: list[str] = page.evaluate(CHECKS)
    return found


def test_main_pages_pass_the_accessibility_checks(
    page: Page,
    browser: Browser,
    site: DashSite,
    worker: WorkerProcess,
    app: Stoker,
    shot: Callable[..., Path],
) -> None:
    ref = off_loop(lambda: app.workflows["dash_diamond"].run_no_wait(Work(fail=True)))
    off_loop(lambda: [app.tasks["dash_work"].run(Work()) for _ in range(3)])
    page.goto(f"{site.base}/ui/runs/{ref.run_id}")
    expect(page.get_by_test_id("run-status")).to_have_text("FAILED", timeout=20_000)
    for path in ("/ui/", "/ui/runs?window=15m", f"/ui/runs/{ref.run_id}?task=c"):
        page.goto(site.base + path)
        page.wait_for_load_state("networkidle")
        assert problems(page) == [], path
    page.goto(f"{site.base}/ui/")
    page.wait_for_load_state("networkidle")
    shot(page, "overview", readme=True)
    # The checks do find problems: an unlabelled field and pale text.
    page.evaluate(
        """document.querySelector("main").insertAdjacentHTML("beforeend",
        '<input id="bare"><p style="color:#bbbbbb">pale words</p>')"""
    )
    found = problems(page)
    assert any("no label: input#bare" in p for p in found), found
    assert any("pale words" in p and p.startswith("contrast") for p in found), found
    context = browser.new_context()
    try:
        signin = context.new_page()
        signin.goto(f"{site.base}/ui/login")
        assert problems(signin) == []
    finally:
        context.close()


def test_the_pages_work_with_the_keyboard(page: Page, site: DashSite) -> None:
    page.goto(f"{site.base}/ui/runs?window=15m")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{site.base}/ui/runs?window=15m#main")
    # From the top, Tab walks the navigation in order; Enter follows a link.
    page.goto(f"{site.base}/ui/runs?window=15m")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Stoker", exact=True)).to_be_focused()
    page.keyboard.press("Tab")
    expect(
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Overview")
    ).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    # The filter form is reachable and submits with Enter.
    page.goto(f"{site.base}/ui/runs?window=15m")
    page.get_by_label("Task or workflow").focus()
    page.keyboard.type("dash_work")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"name=dash_work"))
