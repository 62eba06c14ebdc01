"""Replay from a chosen step and replay with edited input, in a real browser against an
engine with a real worker; roles and CSRF on both."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from stoker import Stoker
from tests.apps.dashboard import Work
from tests.browser.conftest import DashSite, off_loop
from tests.browser.test_accessibility import problems
from tests.harness import WorkerProcess

pytestmark = pytest.mark.timeout(120)


def attempts_of(page: Page, base: str, run_id: str, step: str) -> int:
    """The number of the step's latest attempt (a completed attempt keeps no row of its
    own once the step runs again, so the rows are not counted)."""
    page.goto(f"{base}/ui/runs/{run_id}?task={step}")
    numbers = (
        page.get_by_test_id("attempts")
        .locator("tbody tr")
        .evaluate_all("rows => rows.map(r => Number(r.dataset.attempt))")
    )
    return max(numbers)


def test_a_completed_workflow_replays_from_a_chosen_step(
    page: Page, site: DashSite, worker: WorkerProcess, app: Stoker, shot: Callable[..., Path]
) -> None:
    ref = off_loop(lambda: app.workflows["dash_diamond"].run_no_wait(Work()))
    off_loop(lambda: ref.result())
    run = str(ref.run_id)
    before = {s: attempts_of(page, site.base, run, s) for s in "abcd"}
    page.goto(f"{site.base}/ui/runs/{run}?task=b")
    expect(page.get_by_test_id("run-status")).to_have_text("COMPLETED")
    page.get_by_test_id("replay-from").click()
    expect(page).to_have_url(f"{site.base}/ui/runs/{run}?task=b")
    expect(page.get_by_test_id("run-status")).to_have_text("COMPLETED", timeout=20_000)
    expect(
        page.locator(f"[data-testid=attempts] tbody tr[data-attempt='{before['b'] + 1}']")
    ).to_have_count(1)
    shot(page, "replay-from-step")
    # b and what follows it ran again; a and c kept their attempt and their output.
    after = {s: attempts_of(page, site.base, run, s) for s in "abcd"}
    assert after == {**before, "b": before["b"] + 1, "d": before["d"] + 1}


def test_a_run_replays_with_edited_input_and_a_bad_edit_changes_nothing(
    page: Page, site: DashSite, worker: WorkerProcess, app: Stoker, shot: Callable[..., Path]
) -> None:
    ref = off_loop(lambda: app.workflows["dash_diamond"].run_no_wait(Work(fail=True, n=3)))
    run = str(ref.run_id)
    page.goto(f"{site.base}/ui/runs/{run}")
    expect(page.get_by_test_id("run-status")).to_have_text("FAILED", timeout=20_000)
    page.get_by_test_id("edit-input-link").click()
    box = page.get_by_label("Input (JSON)")
    expect(box).to_have_value('{\n  "fail": true,\n  "hold_s": 0.0,\n  "n": 3\n}')
    # An input the model refuses: the message beside the field, the run as it was.
    box.fill('{"fail": false, "n": "many"}')
    page.get_by_test_id("replay-with-input").click()
    expect(page.get_by_test_id("edit-input-error")).to_contain_text("input.n: expected integer")
    expect(box).to_have_value('{"fail": false, "n": "many"}')
    shot(page, "replay-edit-refused")
    assert problems(page) == []
    box.fill('{"fail": false, ')
    page.get_by_test_id("replay-with-input").click()
    expect(page.get_by_test_id("edit-input-error")).to_contain_text("not valid JSON")
    page.goto(f"{site.base}/ui/runs/{run}?task=c")
    expect(page.get_by_test_id("run-status")).to_have_text("FAILED")
    tries = attempts_of(page, site.base, run, "c")
    a_before = attempts_of(page, site.base, run, "a")
    # A good edit: the whole run runs again with it, and completes.
    page.get_by_test_id("edit-input-link").click()
    page.get_by_label("Input (JSON)").fill('{"fail": false, "n": 4}')
    page.get_by_test_id("replay-with-input").click()
    expect(page).to_have_url(f"{site.base}/ui/runs/{run}")
    expect(page.get_by_test_id("run-status")).to_have_text("COMPLETED", timeout=20_000)
    assert attempts_of(page, site.base, run, "a") == a_before + 1
    assert attempts_of(page, site.base, run, "c") == tries + 1
    expect(page.get_by_test_id("input")).to_contain_text('"n": 4')
    shot(page, "replay-edited-input")
    # A single-task run too: a failed one completes with the edited input.
    one = off_loop(lambda: app.tasks["dash_work"].run_no_wait(Work(fail=True)))
    page.goto(f"{site.base}/ui/runs/{one.run_id}")
    expect(page.get_by_test_id("run-status")).to_have_text("FAILED", timeout=20_000)
    page.get_by_test_id("edit-input-link").click()
    page.get_by_label("Input (JSON)").fill('{"fail": false, "hold_s": 0.1}')
    page.get_by_test_id("replay-with-input").click()
    expect(page.get_by_test_id("run-status")).to_have_text("COMPLETED", timeout=20_000)
    expect(page.get_by_test_id("output")).to_contain_text('"held": 0.1')


def test_a_viewer_cannot_replay_and_a_post_without_the_token_is_refused(
    page: Page,
    page_as: Callable[[str], Page],
    site: DashSite,
    worker: WorkerProcess,
    app: Stoker,
) -> None:
    ref = off_loop(lambda: app.workflows["dash_diamond"].run_no_wait(Work()))
    off_loop(lambda: ref.result())
    before = attempts_of(page, site.base, str(ref.run_id), "b")
    viewer = page_as("viewer")
    viewer.goto(f"{site.base}/ui/runs/{ref.run_id}?task=b")
    expect(viewer.get_by_test_id("run-status")).to_have_text("COMPLETED")
    expect(viewer.get_by_test_id("replay-from")).to_have_count(0)
    expect(viewer.get_by_test_id("edit-input-link")).to_have_count(0)
    answer = viewer.goto(f"{site.base}/ui/runs/{ref.run_id}/edit-input")
    assert answer is not None and answer.status == 403
    # The operator's own session without the CSRF token is refused, and nothing changes.
    refused = page.request.post(f"{site.base}/ui/runs/{ref.run_id}/replay-from", form={"step": "b"})
    assert refused.status == 403
    assert attempts_of(page, site.base, str(ref.run_id), "b") == before
