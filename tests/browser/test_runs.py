"""The runs list and a run's page in a real browser, against an engine with a real worker:
live updates, filters in the URL, the DAG picture, children, bulk cancel, roles."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from stoker import Stoker
from tests.apps.dashboard import Work
from tests.browser.conftest import DashSite, off_loop
from tests.harness import WorkerProcess

pytestmark = pytest.mark.timeout(120)


def rows(page: Page) -> int:
    return page.locator("[data-testid=runs-table] tbody tr[data-run]").count()


def test_runs_appear_and_finish_without_a_reload(
    page: Page, site: DashSite, worker: WorkerProcess, app: Stoker, shot: Callable[..., Path]
) -> None:
    page.goto(f"{site.base}/ui/runs?name=dash_work&window=15m")
    expect(page.locator("#live-state")).to_have_text("live")
    task = app.tasks["dash_work"]
    off_loop(
        lambda: [
            task.run_no_wait(
                Work(hold_s=0.5),
                additional_metadata={"customer": "acme" if i % 2 else "globex", "region": "eu"},
            )
            for i in range(20)
        ]
    )
    table = page.get_by_test_id("runs-table")
    expect(table.locator("tbody tr[data-run]")).to_have_count(20, timeout=5_000)
    expect(table.locator("[data-testid=status][data-status=COMPLETED]")).to_have_count(
        20, timeout=15_000
    )
    expect(page.get_by_test_id("run-count")).to_have_text("20")
    shot(page, "runs", readme=True)


def test_url_filters_survive_a_reload(
    page: Page, site: DashSite, worker: WorkerProcess, app: Stoker, shot: Callable[..., Path]
) -> None:
    task = app.tasks["dash_work"]
    off_loop(
        lambda: [
            ref.result()
            for ref in [
                task.run_no_wait(Work(), additional_metadata={"customer": c, "tier": "gold"})
                for c in ("initech", "umbrella", "umbrella", "hooli")
            ]
        ]
    )
    page.goto(f"{site.base}/ui/runs?window=15m")
    page.get_by_test_id("chip-COMPLETED").click()
    page.get_by_label("Task or workflow").fill("dash_work")
    page.get_by_label("Metadata (key=value, key=v1|v2; one per line)").fill(
        "customer=initech|umbrella\ntier=gold"
    )
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("[data-testid=runs-table] tbody tr[data-run]")).to_have_count(3)
    url = page.url
    page.reload()
    assert page.url == url
    expect(page.locator("[data-testid=runs-table] tbody tr[data-run]")).to_have_count(3)
    expect(page.get_by_test_id("chip-COMPLETED")).to_have_attribute("aria-current", "true")
    expect(page.get_by_test_id("meta-input")).to_have_value("customer=initech|umbrella\ntier=gold")
    # A malformed filter is a message on the page, not an error.
    page.goto(f"{site.base}/ui/runs?status=DONE&meta=broken")
    expect(page.get_by_test_id("filter-error").first).to_contain_text("status 'DONE'")
    shot(page, "runs-bad-filter")


def test_the_dag_shows_a_failed_step_and_its_attempts(
    page: Page, site: DashSite, worker: WorkerProcess, app: Stoker, shot: Callable[..., Path]
) -> None:
    ref = off_loop(lambda: app.workflows["dash_diamond"].run_no_wait(Work(fail=True)))
    page.goto(f"{site.base}/ui/runs/{ref.run_id}")
    expect(page.get_by_test_id("run-status")).to_have_text("FAILED", timeout=20_000)
    dag = page.get_by_test_id("dag")
    expect(dag).to_have_attribute("data-nodes", "4")
    expect(dag).to_have_attribute("data-edges", "4")
    expect(dag.locator("[data-step=c]")).to_have_attribute("data-status", "FAILED")
    expect(dag.locator("[data-step=b]")).to_have_attribute("data-status", "COMPLETED")
    assert dag.locator("[data-step=d]").get_attribute("data-status") != "COMPLETED"
    dag.locator("[data-step=c]").click()
    expect(page).to_have_url(re.compile(r"task=c"))
    attempts = page.get_by_test_id("attempts").locator("tbody tr")
    expect(attempts).to_have_count(2)  # retries=1: two attempts
    page.get_by_text("RuntimeError: c cannot go on").first.click()
    expect(page.get_by_test_id("traceback").first).to_contain_text("Traceback")
    expect(page.get_by_test_id("timeline")).to_be_visible()
    shot(page, "dag", readme=True)
    download = page.get_by_role("link", name="Download JSON")
    with page.expect_download() as info:
        download.click()
    assert info.value.suggested_filename == f"run-{ref.run_id}.json"


def test_many_children_collapse_into_one_node(
    page: Page, site: DashSite, worker: WorkerProcess, app: Stoker, shot: Callable[..., Path]
) -> None:
    ref = off_loop(lambda: app.tasks["dash_fanout"].run_no_wait(Work(n=25)))
    off_loop(lambda: ref.result())
    page.goto(f"{site.base}/ui/runs/{ref.run_id}")
    collapsed = page.get_by_test_id("dag").locator("[data-collapsed]")
    expect(collapsed).to_have_attribute("data-collapsed", "25")
    collapsed.click()
    expect(page.get_by_test_id("children").locator("a")).to_have_count(25)
    shot(page, "children")


def test_selected_runs_are_cancelled_after_a_confirmation(
    page: Page, site: DashSite, worker: WorkerProcess, app: Stoker, shot: Callable[..., Path]
) -> None:
    task = app.tasks["dash_work"]
    refs = off_loop(
        lambda: [
            task.run_no_wait(Work(hold_s=60), additional_metadata={"batch": "cancel-me"})
            for _ in range(3)
        ]
    )
    page.goto(f"{site.base}/ui/runs?meta=batch%3Dcancel-me&window=15m")
    expect(page.locator("[data-testid=status][data-status=RUNNING]")).to_have_count(
        3, timeout=15_000
    )
    for ref in refs:
        page.get_by_label(f"Select run {ref.run_id}").check()
    page.get_by_role("button", name="Cancel selected").click()
    confirm = page.get_by_test_id("confirm")
    expect(confirm.get_by_role("heading")).to_have_text("Cancel 3 runs?")
    shot(page, "bulk-confirm")
    confirm.get_by_test_id("confirm-button").click()
    expect(page).to_have_url(re.compile(r"/ui/bulk/"))
    expect(page.get_by_test_id("bulk-state")).to_have_text("COMPLETED", timeout=15_000)
    expect(page.get_by_test_id("bulk-progress")).to_contain_text("3 of 3 processed")
    page.goto(f"{site.base}/ui/runs?meta=batch%3Dcancel-me&window=15m")
    expect(page.locator("[data-testid=status][data-status=CANCELLED]")).to_have_count(3)


def test_a_viewer_sees_no_actions(
    page_as: Callable[[str], Page], site: DashSite, worker: WorkerProcess, app: Stoker
) -> None:
    ref = off_loop(lambda: app.tasks["dash_work"].run_no_wait(Work(fail=True)))
    page = page_as("viewer")
    page.goto(f"{site.base}/ui/runs/{ref.run_id}")
    expect(page.get_by_test_id("run-status")).to_have_text("FAILED", timeout=15_000)
    expect(page.get_by_test_id("replay-run")).to_have_count(0)
    page.goto(f"{site.base}/ui/runs")
    expect(page.get_by_role("button", name="Cancel selected")).to_have_count(0)
    expect(page.locator("input[name=run]")).to_have_count(0)


def test_logs_and_stream_show_live_and_stay(
    page: Page, site: DashSite, worker: WorkerProcess, app: Stoker, shot: Callable[..., Path]
) -> None:
    ref = off_loop(lambda: app.tasks["dash_talk"].run_no_wait(Work(n=30)))
    page.goto(f"{site.base}/ui/runs/{ref.run_id}")
    stream = page.get_by_test_id("stream")
    # Words arrive while the run goes on, in order.
    expect(stream).to_contain_text("word0 word1 word2", timeout=15_000)
    expect(page.get_by_test_id("run-status")).to_have_text("COMPLETED", timeout=20_000)
    expect(stream).to_contain_text("word29")
    assert stream.text_content().split() == [f"word{i}" for i in range(30)]
    page.reload()
    expect(page.get_by_test_id("log-lines").locator("tbody tr")).to_have_count(30)
    expect(page.get_by_test_id("stream")).to_contain_text("word0 word1")
    expect(page.get_by_test_id("stream")).to_contain_text("word29")
    shot(page, "logs-stream")
