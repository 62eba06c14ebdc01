"""The dashboard's Workers, Tasks, Queues, Crons, Events and Settings pages in a real
browser against the session engine with a real worker: what a person sees and does.
Each test saves a screenshot."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from stoker import Stoker
from stoker.errors import AuthenticationError
from tests.apps import dashboard_pages
from tests.browser.conftest import DashSite
from tests.browser.test_accessibility import problems
from tests.harness import WorkerProcess


@pytest.fixture(scope="module")
def worker(site: DashSite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(
        "tests.apps.dashboard_pages:app",
        site.tenant,
        site.engine.db_url,
        tmp_path_factory.mktemp("dash-pages"),
        "gpu-box",
        slots=4,
        labels={"gpu": "a100"},
    )
    proc.start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def client(site: DashSite, worker: WorkerProcess) -> Iterator[Stoker]:
    app = dashboard_pages.declare(site.tenant.client())
    yield app
    app.close()


def test_workers_show_slots_labels_and_pause(
    page: Page, site: DashSite, worker: WorkerProcess, client: Stoker, shot: Callable[..., Path]
) -> None:
    page.goto(f"{site.base}/ui/workers")
    row = page.locator('[data-testid="worker-row"][data-worker="gpu-box"]')
    expect(row).to_contain_text("gpu=a100")
    expect(row.get_by_test_id("running")).to_have_text("0")
    hold = client.tasks["hold"]
    held = [hold.run_no_wait({"seconds": 20}) for _ in range(3)]
    # The page updates itself (live updates), without a reload.
    expect(row.get_by_test_id("running")).to_have_text("3", timeout=15_000)
    expect(row).to_contain_text("3/4")
    shot(page, "workers")
    row.get_by_role("link", name="gpu-box").click()
    expect(page.get_by_test_id("held").locator("tbody tr")).to_have_count(3)
    page.get_by_test_id("pause").click()
    expect(page.get_by_test_id("paused")).to_be_visible()
    shot(page, "worker-paused")
    page.get_by_test_id("resume").click()
    expect(page.get_by_test_id("paused")).to_have_count(0)
    for ref in held:
        client.runs.cancel(ref.run_id)


def test_the_trigger_form_shows_bad_input_beside_the_field_then_runs(
    page: Page, site: DashSite, client: Stoker, shot: Callable[..., Path]
) -> None:
    page.goto(f"{site.base}/ui/tasks")
    page.locator('[data-testid="definition-row"][data-name="place_order"]').get_by_role(
        "link", name="place_order"
    ).click()
    page.get_by_label("customer").fill("acme")
    page.get_by_label("quantity").fill("2")
    page.get_by_label("lines").fill('[{"sku": ')
    page.get_by_test_id("trigger").click()
    error = page.get_by_test_id("error-lines")
    expect(error).to_contain_text("not valid JSON")
    expect(page.get_by_label("customer")).to_have_value("acme")  # what was typed stays
    shot(page, "trigger-form-error")
    page.get_by_label("lines").fill('[{"sku": "a"}, {"sku": "b"}]')
    page.get_by_test_id("trigger").click()
    expect(page).to_have_url(re.compile(r"/ui/runs/[0-9a-f-]{36}$"))
    run_id = page.url.rsplit("/", 1)[1]
    assert client.get_run(run_id).result(timeout=30) == {"customer": "acme", "items": 4}
    page.goto(f"{site.base}/ui/tasks/task/place_order")
    recent = page.get_by_test_id("recent")
    expect(recent.locator(f'a[href="/ui/runs/{run_id}"]')).to_be_visible()
    expect(recent.locator('.chip[data-status="COMPLETED"]').first).to_be_visible()
    shot(page, "task")


def test_a_paused_task_keeps_its_runs_queued_until_resumed(
    page: Page, site: DashSite, client: Stoker, shot: Callable[..., Path]
) -> None:
    page.goto(f"{site.base}/ui/tasks/task/on_order")
    page.get_by_test_id("pause").click()
    expect(page.get_by_test_id("paused")).to_be_visible()
    ref = client.tasks["on_order"].run_no_wait({"held": True})
    page.goto(f"{site.base}/ui/queues")
    row = page.locator('[data-testid="queue-row"][data-task="on_order"]')
    expect(row).to_contain_text("paused: 1", timeout=10_000)
    shot(page, "queues-paused")
    page.goto(f"{site.base}/ui/tasks/task/on_order")
    page.get_by_test_id("resume").click()
    expect(page.get_by_test_id("paused")).to_have_count(0)
    assert ref.result(timeout=30) == {"seen": {"held": True}}


def test_queues_say_why_runs_wait(
    page: Page, site: DashSite, client: Stoker, shot: Callable[..., Path]
) -> None:
    refs = [client.tasks["nobody_serves"].run_no_wait({}) for _ in range(2)]
    page.goto(f"{site.base}/ui/queues")
    row = page.locator('[data-testid="queue-row"][data-task="nobody_serves"]')
    expect(row.get_by_test_id("waiting")).to_have_text("2", timeout=10_000)
    expect(row).to_contain_text("no eligible worker: 2")
    shot(page, "queues")
    for ref in refs:
        client.runs.cancel(ref.run_id)


def test_runs_blocked_by_a_rate_limit_drain_when_it_is_raised(
    page: Page, site: DashSite, client: Stoker, shot: Callable[..., Path]
) -> None:
    client.rate_limits.put(dashboard_pages.LIMIT_KEY, 1, "1h")
    refs = [client.tasks["call_api"].run_no_wait({}) for _ in range(5)]
    refs[0].result(timeout=30)  # the one the limit lets through
    page.goto(f"{site.base}/ui/queues")
    row = page.locator('[data-testid="queue-row"][data-task="call_api"]')
    expect(row).to_contain_text("rate limit: 4", timeout=10_000)
    shot(page, "queues-rate-limited")
    page.goto(f"{site.base}/ui/rate-limits")
    limit = page.locator(f'[data-testid="limit-row"][data-key="{dashboard_pages.LIMIT_KEY}"]')
    expect(limit.get_by_test_id("waiting")).to_have_text("4")
    limit.get_by_label(f"Limit of {dashboard_pages.LIMIT_KEY}").fill("100")
    limit.get_by_test_id("save-limit").click()
    expect(limit.get_by_test_id("limit")).to_contain_text("100 per 1 h")
    for ref in refs[1:]:
        ref.result(timeout=30)
    page.reload()
    expect(limit.get_by_test_id("used")).to_have_text("5/100")
    shot(page, "rate-limits")


def test_a_scheduled_run_is_rescheduled_and_deleted(
    page: Page, site: DashSite, client: Stoker
) -> None:
    scheduled = client.tasks["place_order"].schedule(
        timedelta(days=2), {"customer": "later", "quantity": 1}
    )
    page.goto(f"{site.base}/ui/crons")
    row = page.locator(f'[data-testid="scheduled-row"][data-id="{scheduled.id}"]')
    expect(row).to_contain_text("in 1 d 23 h")
    row.get_by_label("New time (UTC)").fill("2099-01-02T03:04")
    row.get_by_role("button", name="Reschedule").click()
    expect(row).to_contain_text("Fri 02 Jan 03:04")
    assert client.schedules.get(scheduled.id).at.year == 2099
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)


def test_a_berlin_cron_is_created_edited_triggered_and_disabled(
    page: Page, site: DashSite, client: Stoker, shot: Callable[..., Path]
) -> None:
    page.goto(f"{site.base}/ui/crons")
    page.get_by_text("New cron").click()
    page.get_by_label("Name").fill("weekday-orders")
    page.get_by_label("Task or workflow").select_option("task:place_order")
    page.get_by_label("Expression").fill("0 9 * * 1-5")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_label("Input (JSON)").fill('{"customer": "cron", "quantity": 1}')
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_test_id("cron-words")).to_contain_text(
        "at 09:00 on Monday to Friday (Europe/Berlin)"
    )
    fires = page.get_by_test_id("next-fires").locator("li")
    expect(fires).to_have_count(5)
    expect(fires.first).to_contain_text(re.compile(r"^in .*\(\w{3} \d\d \w{3} 09:00 CE"))
    shot(page, "cron")
    page.get_by_label("Expression").fill("30 8 * * *")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_test_id("cron-words")).to_contain_text("at 08:30 every day")
    page.get_by_test_id("trigger-now").click()
    expect(page).to_have_url(re.compile(r"/ui/runs/[0-9a-f-]{36}$"))
    page.goto(f"{site.base}/ui/crons/weekday-orders")
    page.get_by_test_id("toggle").click()
    expect(page.get_by_test_id("cron-state")).to_have_text("disabled")
    expect(page.get_by_text("manual").first).to_be_visible()


def test_an_event_links_its_runs_and_pushing_again_runs_them_again(
    page: Page, site: DashSite, client: Stoker, shot: Callable[..., Path]
) -> None:
    page.goto(f"{site.base}/ui/events")
    page.get_by_text("Push a test event").click()
    page.get_by_label("Event key").fill("shop:order")
    page.get_by_label("Payload (JSON)").fill('{"order": 7')
    page.get_by_test_id("push").click()
    expect(page.get_by_test_id("filter-error")).to_contain_text("not valid JSON")
    page.get_by_label("Payload (JSON)").fill('{"order": 7}')
    page.get_by_test_id("push").click()
    expect(page).to_have_url(re.compile(r"/ui/events/[0-9a-f-]{36}$"))
    expect(page.get_by_test_id("payload")).to_contain_text('"order": 7')
    expect(page.get_by_test_id("event-run")).to_have_count(1)
    page.get_by_test_id("repush").click()
    expect(page.get_by_test_id("repushed")).to_contain_text("1 new run")
    expect(page.get_by_test_id("event-run")).to_have_count(2)
    expect(page.locator('[data-testid="event-run"] .chip[data-status="COMPLETED"]')).to_have_count(
        2, timeout=15_000
    )
    shot(page, "event")


def test_a_filter_created_on_the_page_holds_back_events_it_does_not_match(
    page: Page, site: DashSite, client: Stoker, shot: Callable[..., Path]
) -> None:
    page.goto(f"{site.base}/ui/webhooks")
    page.get_by_text("New filter").click()
    page.get_by_label("Task or workflow").select_option("task:on_order")
    page.get_by_label("When (CEL)").fill("input.order >")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_test_id("form-error")).to_contain_text("not valid CEL")
    page.get_by_label("When (CEL)").fill("input.order > 100")
    page.get_by_role("button", name="Create").click()
    row = page.get_by_test_id("filter-row").filter(has_text="input.order > 100")
    expect(row).to_have_count(1)
    shot(page, "webhooks-filters")
    small = client.events.push("shop:order", {"order": 7})
    big = client.events.push("shop:order", {"order": 700})
    assert (len(small.run_ids), len(big.run_ids)) == (0, 1)
    row.get_by_role("button", name="Delete").click()
    expect(page.get_by_test_id("filter-row").filter(has_text="input.order > 100")).to_have_count(0)


def test_a_token_is_shown_once_works_from_the_sdk_and_fails_after_revocation(
    page_as: Callable[[str], Page], site: DashSite, client: Stoker, shot: Callable[..., Path]
) -> None:
    page = page_as("admin")
    page.goto(f"{site.base}/ui/settings")
    page.get_by_label("Name").fill("from-browser")
    page.get_by_test_id("create-token").click()
    secret = page.get_by_test_id("token-secret").inner_text()
    shot(page, "token-created")
    sdk = Stoker(address=site.tenant.address, token=secret, connect_timeout=10)
    try:
        assert sdk.events.push("dash:token-check", {}).event_id
        page.goto(f"{site.base}/ui/settings")
        assert secret not in page.content()
        row = page.locator('[data-testid="token-row"][data-name="from-browser"]')
        row.get_by_test_id("revoke").click()
        expect(row.get_by_test_id("token-state")).to_have_text("revoked")
        with pytest.raises(AuthenticationError):
            sdk.events.push("dash:token-check", {})
    finally:
        sdk.close()


def test_these_pages_pass_the_accessibility_checks(
    page_as: Callable[[str], Page], site: DashSite, worker: WorkerProcess, client: Stoker
) -> None:
    page = page_as("admin")
    pushed = client.events.push("shop:order", {"order": 1})
    page.goto(f"{site.base}/ui/crons")
    page.get_by_text("New cron").click()
    page.get_by_label("Name").fill("a11y-check")
    page.get_by_label("Expression").fill("*/5 * * * *")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_test_id("cron-words")).to_contain_text("every 5 minutes")
    paths = [
        "/ui/workers",
        f"/ui/workers/{worker.worker_id}",
        "/ui/tasks",
        "/ui/tasks/task/place_order",
        "/ui/queues",
        "/ui/crons",
        "/ui/crons/a11y-check",
        "/ui/events",
        f"/ui/events/{pushed.event_id}",
        "/ui/rate-limits",
        "/ui/webhooks",
        "/ui/webhooks/new",
        "/ui/logs",
        "/ui/settings",
        "/ui/account",
    ]
    for path in paths:
        page.goto(site.base + path)
        page.wait_for_load_state("networkidle")
        for opened in page.locator("details").all():  # the forms folded away count too
            opened.evaluate("d => { d.open = true; }")
        assert problems(page) == [], path
