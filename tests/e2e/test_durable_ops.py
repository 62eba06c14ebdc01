"""Operations on durable runs through real engine and worker processes: a replay runs
with the log (completed steps do not run again), a reset branches the log and runs again
only from its position, a run failed by non-determinism is fixed and replayed (or reset),
and the REST log shows what was recorded and what the task waits for, per tenant."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from stoker import InvalidRequestError, NotFoundError, Stoker, TaskRunError
from tests.apps import durable, durable_ops
from tests.apps.durable import Chores
from tests.apps.durable_ops import Errand, Ledger, side_effects
from tests.e2e.test_durable import entries, query
from tests.harness import WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def app(engine: Any, tenant: Any) -> Stoker:
    return durable_ops.declare(
        Stoker(address=engine.grpc_address, token=tenant.token, connect_timeout=30)
    )


def rest(engine: Any, tenant: Any) -> httpx.Client:
    return httpx.Client(
        base_url=engine.http_url,
        headers={"authorization": f"Bearer {tenant.token}"},
        timeout=10,
    )


def all_entries(db_url: str, run_id: str) -> list[tuple[int, int, str, str]]:
    """Every recorded call of the run, of every branch: (branch, position, name, status)."""
    rows = query(
        db_url,
        "SELECT e.branch, e.position, e.name, e.status FROM stoker.durable_entry e"
        " JOIN stoker.all_tasks t ON t.id = e.task_id AND t.created_at = e.created_at"
        " WHERE t.external_id = %s ORDER BY e.branch, e.position",
        run_id,
    )
    return [(r["branch"], r["position"], r["name"], r["status"]) for r in rows]


def test_a_failed_durable_run_replays_with_its_log_and_its_steps_do_not_run_again(
    app: Stoker, engine: Any, worker_factory: Any, tmp_path: Path
) -> None:
    worker_factory("tests.apps.durable_ops:app", durable_slots=2)
    (tmp_path / "fail").touch()
    ref = app.tasks["errands"].run_no_wait(Errand(dir=str(tmp_path)))
    with pytest.raises(TaskRunError, match="the errands failed after their steps"):
        ref.result(timeout=60)
    assert side_effects(str(tmp_path)) == ["a", "b", "c"]
    (tmp_path / "fail").unlink()  # the fix
    outcome = app.runs.replay(ref.run_id)
    assert (outcome.outcome, outcome.status) == ("replayed", "RUNNING")
    out = ref.result(timeout=60)
    assert out == {"steps": ["a done", "b done", "c done"], "attempt": 1}
    # Every step came back from the log: none ran a second time.
    assert side_effects(str(tmp_path)) == ["a", "b", "c"]
    assert [(e["position"], e["invocation"]) for e in entries(engine.db_url, ref.run_id)] == [
        (1, 1),
        (2, 1),
        (3, 1),
        (4, 1),
    ]


def replay_ledger(app: Stoker, tmp_path: Path, steps: int, size: int) -> None:
    """A ledger run records its steps, fails, and is replayed: the replay reads the whole
    log (in pages) and no step runs again."""
    ref = app.tasks["ledger"].run_no_wait(Ledger(dir=str(tmp_path), steps=steps, size=size))
    with pytest.raises(TaskRunError, match="fails once"):
        ref.result(timeout=600)
    assert len(side_effects(str(tmp_path))) == steps
    assert app.runs.replay(ref.run_id).outcome == "replayed"
    assert ref.result(timeout=600) == {"steps": steps, "bytes": steps * size}
    assert len(side_effects(str(tmp_path))) == steps


def test_a_log_larger_than_a_page_is_replayed_from_its_pages(
    app: Stoker, worker_factory: Any, tmp_path: Path
) -> None:
    # Five results of 700 kB: about 3.5 MB of log, read in pages of about 1 MB.
    worker_factory("tests.apps.durable_ops:app", durable_slots=2)
    replay_ledger(app, tmp_path, 5, 700_000)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_log_of_10_000_entries_is_replayed_from_its_pages(
    app: Stoker, worker_factory: Any, tmp_path: Path
) -> None:
    worker_factory("tests.apps.durable_ops:app", durable_slots=2)
    replay_ledger(app, tmp_path, 10_000, 500)


def test_a_reset_runs_a_finished_run_again_only_from_its_position(
    app: Stoker, engine: Any, tenant: Any, worker_factory: Any, tmp_path: Path
) -> None:
    worker_factory("tests.apps.durable_ops:app", durable_slots=2)
    ref = app.tasks["errands"].run_no_wait(Errand(dir=str(tmp_path)))
    assert ref.result(timeout=60)["attempt"] == 0
    done = app.runs.reset(ref, 2)
    assert (done.run_id, done.position, done.branch, done.dropped, done.status) == (
        ref.run_id,
        2,
        2,
        0,
        "QUEUED",
    )
    assert ref.result(timeout=60) == {"steps": ["a done", "b done", "c done"], "attempt": 1}
    # Step a (position 1) replayed; b, the sleep and c (positions 2..4) ran again.
    assert side_effects(str(tmp_path)) == ["a", "b", "c", "b", "c"]
    with rest(engine, tenant) as http:
        body = http.get(f"/api/v1/runs/{ref.run_id}/log").json()
    assert (body["status"], body["branch"], body["waiting_for"]) == ("COMPLETED", 2, [])
    assert [(e["position"], e["branch"], e["kind"], e["name"]) for e in body["entries"]] == [
        (1, 1, "step", "a"),
        (2, 2, "step", "b"),
        (3, 2, "wait", "sleep"),
        (4, 2, "step", "c"),
    ]
    # The old branch keeps what it recorded.
    assert [e[:3] for e in all_entries(engine.db_url, ref.run_id) if e[0] == 1] == [
        (1, 1, "a"),
        (1, 2, "b"),
        (1, 3, "sleep"),
        (1, 4, "c"),
    ]


def test_a_reset_of_a_sleeping_run_drops_its_wait_and_stops_the_attempt(
    app: Stoker, engine: Any, tenant: Any, worker_factory: Any, tmp_path: Path
) -> None:
    worker_factory("tests.apps.durable_ops:app", durable_slots=2)
    (tmp_path / "nap").write_text("600")
    ref = app.tasks["errands_held"].run_no_wait(Errand(dir=str(tmp_path)))
    wait_until(
        lambda: len(entries(engine.db_url, ref.run_id)) == 3, what="the sleep to be recorded"
    )
    with rest(engine, tenant) as http:
        body = http.get(f"/api/v1/runs/{ref.run_id}/log").json()
        assert body["status"] == "RUNNING" and body["invocation"] == 1
        [waiting] = body["waiting_for"]
        assert (waiting["position"], waiting["kind"], waiting["status"]) == (3, "wait", "pending")
        assert waiting["wake_at"] is not None and waiting["satisfied_at"] is None
        step_a = body["entries"][0]
        assert (step_a["status"], step_a["result"], step_a["error"]) == ("ok", "a done", None)
        assert step_a["recorded_at"] is not None and step_a["satisfied_at"] is not None
        (tmp_path / "nap").write_text("0.2")  # the fix: the sleep at 3 runs again, shorter
        resp = http.post(f"/api/v1/runs/{ref.run_id}/reset", json={"position": 3})
    assert resp.status_code == 200, resp.text
    assert {k: resp.json()[k] for k in ("branch", "dropped", "status")} == {
        "branch": 2,
        "dropped": 1,
        "status": "QUEUED",
    }
    assert ref.result(timeout=60) == {"steps": ["a done", "b done", "c done"], "attempt": 1}
    assert side_effects(str(tmp_path)) == ["a", "b", "c"]
    assert all_entries(engine.db_url, ref.run_id) == [
        (1, 1, "a", "ok"),
        (1, 2, "b", "ok"),
        (1, 3, "sleep", "dropped"),
        (2, 3, "sleep", "ok"),
        (2, 4, "c", "ok"),
    ]
    # The stopped attempt is listed as ended by the reset.
    with rest(engine, tenant) as http:
        attempts = http.get(f"/api/v1/runs/{ref.run_id}").json()["attempts"]
    assert [(a["number"], a["status"]) for a in attempts] == [(0, "RESET"), (1, "COMPLETED")]


def test_a_reset_of_an_evicted_run_queues_it_on_the_new_branch(
    app: Stoker, engine: Any, tenant: Any, worker_factory: Any, tmp_path: Path
) -> None:
    # A long sleep is evicted at once: the run holds no slot and waits for its timer. A
    # reset drops that wait, so the reset itself must queue the run again.
    worker_factory("tests.apps.durable_ops:app", durable_slots=2)
    (tmp_path / "nap").write_text("600")
    ref = app.tasks["errands"].run_no_wait(Errand(dir=str(tmp_path)))
    with rest(engine, tenant) as http:
        wait_until(
            lambda: http.get(f"/api/v1/runs/{ref.run_id}/log").json()["status"] == "EVICTED",
            what="the sleeping run to be evicted",
        )
        (tmp_path / "nap").write_text("0.2")
        resp = http.post(f"/api/v1/runs/{ref.run_id}/reset", json={"position": 3})
    assert resp.status_code == 200, resp.text
    assert {k: resp.json()[k] for k in ("branch", "dropped", "status")} == {
        "branch": 2,
        "dropped": 1,
        "status": "QUEUED",
    }
    assert ref.result(timeout=60)["steps"] == ["a done", "b done", "c done"]
    assert side_effects(str(tmp_path)) == ["a", "b", "c"]


def test_bad_reset_positions_and_runs_are_refused_with_a_clear_error(
    app: Stoker, engine: Any, tenant: Any, worker_factory: Any, tmp_path: Path
) -> None:
    worker_factory("tests.apps.durable_ops:app", durable_slots=2)
    ref = app.tasks["errands"].run_no_wait(Errand(dir=str(tmp_path)))
    ref.result(timeout=60)
    with pytest.raises(InvalidRequestError, match="positions start at 1"):
        app.runs.reset(ref, 0)
    with pytest.raises(InvalidRequestError, match=r"has positions 1\.\.4, so a reset takes 1\.\.5"):
        app.runs.reset(ref, 6)
    with pytest.raises(NotFoundError):
        app.runs.reset("00000000-0000-0000-0000-000000000000", 1)
    with rest(engine, tenant) as http:
        resp = http.post(f"/api/v1/runs/{ref.run_id}/reset", json={"position": 6})
        assert resp.status_code == 422
        assert "reset position 6 is out of range" in resp.json()["error"]["message"]
        resp = http.post(f"/api/v1/runs/{ref.run_id}/reset", json={"position": 0})
        assert resp.status_code == 422 and "position" in resp.json()["error"]["message"]
    # Nothing was reset: the run is as it finished, its step ran once.
    assert ref.result(timeout=10)["attempt"] == 0
    assert side_effects(str(tmp_path)) == ["a", "b", "c"]
    # Position 5 (last + 1) is allowed: nothing runs again, the body continues after.
    assert asyncio.run(app.runs.aio_reset(ref.run_id, 5)).status == "QUEUED"
    assert ref.result(timeout=60)["attempt"] == 1
    assert side_effects(str(tmp_path)) == ["a", "b", "c"]


def test_the_rest_log_is_scoped_to_the_tenant(
    app: Stoker,
    engine: Any,
    tenant: Any,
    tenant_factory: Any,
    worker_factory: Any,
    tmp_path: Path,
) -> None:
    worker_factory("tests.apps.durable_ops:app", durable_slots=2)
    ref = app.tasks["errands"].run_no_wait(Errand(dir=str(tmp_path)))
    ref.result(timeout=60)
    other = tenant_factory(engine)
    with rest(engine, other) as http:
        resp = http.get(f"/api/v1/runs/{ref.run_id}/log")
        assert resp.status_code == 404, resp.text
        assert resp.json()["error"]["type"] == "NotFoundError"
        assert (
            http.post(f"/api/v1/runs/{ref.run_id}/reset", json={"position": 1}).status_code == 404
        )
    with rest(engine, tenant) as http:
        assert http.get(f"/api/v1/runs/{ref.run_id}/log").status_code == 200
        assert (
            http.get(f"/api/v1/runs/{ref.run_id}/log", params={"limit": 2}).json()["next_cursor"]
            == 2
        )
    other_app = durable_ops.declare(
        Stoker(address=engine.grpc_address, token=other.token, connect_timeout=30)
    )
    with pytest.raises(NotFoundError):
        other_app.runs.reset(ref.run_id, 1)
    assert side_effects(str(tmp_path)) == ["a", "b", "c"]


def test_a_run_failed_by_non_determinism_is_fixed_then_replayed_or_reset(
    engine: Any, tenant: Any, tmp_path: Path
) -> None:
    app = durable.declare(Stoker(address=engine.grpc_address, token=tenant.token))

    def worker(name: str, version: str) -> WorkerProcess:
        return WorkerProcess(
            "tests.apps.durable:app", tenant, engine.db_url, tmp_path, name,
            durable_slots=2, env={"DURABLE_APP_VERSION": version},
        ).start()  # fmt: skip

    running = [worker("v1", "1")]
    try:
        ref = app.tasks["shifty"].run_no_wait(Chores(dir=str(tmp_path), seconds=2))
        wait_until(
            lambda: len(entries(engine.db_url, ref.run_id)) == 2, what="the sleep to be recorded"
        )
        running[-1].kill()  # version 2 takes over mid-sleep and diverges
        running.append(worker("v2", "2"))
        with pytest.raises(TaskRunError) as failed:
            ref.result(timeout=60)
        assert failed.value.error_type == "NonDeterminismError"
        # The fix: code that makes the recorded call again. The replay gets it from the log.
        running[-1].kill()
        running.append(worker("v3", "1"))
        assert app.runs.replay(ref.run_id).outcome == "replayed"
        assert ref.result(timeout=60) == "alpha"
        # Or keep version 2 and reset the log to where it diverged: beta runs at 1.
        running[-1].kill()
        running.append(worker("v4", "2"))
        assert app.runs.reset(ref.run_id, 1).branch == 2
        assert ref.result(timeout=60) == "beta"
        assert sorted((e["position"], e["name"]) for e in entries(engine.db_url, ref.run_id)) == [
            (1, "alpha"),
            (1, "beta"),
            (2, "sleep"),
            (2, "sleep"),
        ]
    finally:
        for w in running:
            w.kill()
