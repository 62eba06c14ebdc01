"""Draining a worker from the Workers page and resetting a rate limit from the Rate limits
page, in a real browser against an engine with real worker processes; roles and CSRF."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from stoker import Stoker
from tests.apps import dashboard_pages
from tests.browser.conftest import DashSite, off_loop
from tests.harness import WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(150)


def _worker(site: DashSite, folder: Path, name: str) -> WorkerProcess:
    return WorkerProcess(
        "tests.apps.dashboard_pages:app", site.tenant, site.engine.db_url, folder, name, slots=2
    )


@pytest.fixture
def client(site: DashSite) -> Iterator[Stoker]:
    app = off_loop(lambda: dashboard_pages.declare(site.tenant.client()))
    yield app
    off_loop(app.close)


def test_a_drained_worker_finishes_its_runs_takes_no_new_one_and_stops(
    page: Page,
    site: DashSite,
    client: Stoker,
    tmp_path: Path,
    shot: Callable[..., Path],
) -> None:
    proc = off_loop(lambda: _worker(site, tmp_path, "drain-box").start())
    try:
        hold = client.tasks["hold"]
        held = off_loop(lambda: [hold.run_no_wait({"seconds": 3}) for _ in range(2)])
        page.goto(f"{site.base}/ui/workers/{proc.worker_id}")
        expect(page.get_by_test_id("held").locator("tbody tr")).to_have_count(2, timeout=15_000)
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_test_id("drain").click()
        expect(page.get_by_test_id("draining")).to_be_visible()
        expect(page.get_by_test_id("worker-status")).to_contain_text("draining since")
        shot(page, "worker-draining")
        # Nothing new goes to it while it drains...
        late = off_loop(lambda: hold.run_no_wait({"seconds": 0}))
        # ...what it ran finishes, and the worker process stops by itself.
        for ref in held:
            off_loop(lambda ref=ref: ref.result(timeout=30))
        assert proc.proc is not None
        wait_until(lambda: proc.proc is not None and proc.proc.poll() is not None, 30, "exit")
        page.reload()
        expect(page.get_by_test_id("worker-status")).to_contain_text("stopped")
        expect(page.get_by_test_id("drain")).to_have_count(0)
        shot(page, "worker-drained")
        page.goto(f"{site.base}/ui/runs/{late.run_id}")
        expect(page.get_by_test_id("run-status")).to_have_text("QUEUED")
        off_loop(lambda: client.runs.cancel(late.run_id))
    finally:
        proc.kill()


def test_a_rate_limit_reset_lets_the_runs_it_held_back_start(
    page: Page,
    page_as: Callable[[str], Page],
    site: DashSite,
    client: Stoker,
    tmp_path: Path,
    shot: Callable[..., Path],
) -> None:
    proc = off_loop(lambda: _worker(site, tmp_path, "limits-box").start())
    try:
        key = dashboard_pages.LIMIT_KEY
        off_loop(lambda: client.rate_limits.put(key, 1, "1h"))
        refs = off_loop(lambda: [client.tasks["call_api"].run_no_wait({}) for _ in range(3)])
        off_loop(lambda: refs[0].result(timeout=30))  # the one the limit lets through
        page.goto(f"{site.base}/ui/rate-limits")
        limit = page.locator(f'[data-testid="limit-row"][data-key="{key}"]')
        expect(limit.get_by_test_id("waiting")).to_have_text("2", timeout=10_000)
        expect(limit.get_by_test_id("used")).to_have_text("1/1")
        # A viewer sees no reset button, and the server refuses theirs.
        viewer = page_as("viewer")
        viewer.goto(f"{site.base}/ui/rate-limits")
        expect(viewer.get_by_test_id("reset-limit")).to_have_count(0)
        refused = viewer.request.post(f"{site.base}/ui/rate-limits/{key}/reset")
        assert refused.status == 403
        page.once("dialog", lambda dialog: dialog.accept())
        limit.get_by_test_id("reset-limit").click()
        # The window is empty again: one held-back run starts at once, the other waits.
        off_loop(
            lambda: wait_until(
                lambda: sum(client.runs.get(r).status == "COMPLETED" for r in refs) == 2,
                20,
                "a held-back run to complete after the reset",
            )
        )
        page.reload()
        expect(limit.get_by_test_id("used")).to_have_text("1/1")
        expect(limit.get_by_test_id("waiting")).to_have_text("1")
        shot(page, "rate-limit-reset")
        off_loop(lambda: client.runs.cancel(refs[2].run_id))
    finally:
        proc.kill()
