"""Durable eviction, restore and timeouts through real engine and worker processes: a
blocked durable task leaves its worker and comes back when its timer fires, many sleeping
tasks share a few durable slots, a stopping worker evicts what is blocked, the execution
timeout counts only time spent running, and the whole-run timeout bounds evictions too."""

from __future__ import annotations

import signal
import time
from typing import Any

import psycopg
import pytest

from stoker import Stoker, TaskRunError
from tests.apps import durable_eviction
from tests.apps.durable_eviction import Nap, Work
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def app(engine: Any, tenant: Any) -> Stoker:
    return durable_eviction.declare(
        Stoker(address=engine.grpc_address, token=tenant.token, connect_timeout=30)
    )


def query(db_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(sql, args).fetchall()


def task_row(db_url: str, run_id: str) -> dict[str, Any] | None:
    rows = query(
        db_url,
        "SELECT t.id, t.status, t.attempt, t.retry_count,"
        " EXISTS (SELECT 1 FROM stoker.task_runtime r WHERE r.task_id = t.id) AS running"
        " FROM stoker.task t WHERE t.external_id = %s",
        run_id,
    )
    return rows[0] if rows else None


def event_kinds(db_url: str, run_ids: list[str]) -> list[str]:
    rows = query(
        db_url,
        "SELECT e.kind FROM stoker.task_event e"
        " JOIN (SELECT id FROM stoker.task WHERE external_id = ANY(%s::uuid[])"
        "       UNION ALL"
        "       SELECT id FROM stoker.task_history WHERE external_id = ANY(%s::uuid[])) t"
        "   ON t.id = e.task_id ORDER BY e.id",
        run_ids,
        run_ids,
    )
    return [r["kind"] for r in rows]


def evicted_now(db_url: str, run_id: str) -> bool:
    row = task_row(db_url, run_id)
    return row is not None and row["status"] == "EVICTED" and not row["running"]


def test_a_sleep_longer_than_the_ttl_is_evicted_at_once_and_restored_by_its_timer(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    worker_factory("tests.apps.durable_eviction:app", durable_slots=4)
    ref = app.tasks["hibernate"].run_no_wait(Nap(seconds=3))
    # Its only wait is a timer 3 s away, past the 1 s TTL: evicted at once, holding no slot.
    wait_until(lambda: evicted_now(engine.db_url, ref.run_id), 20, "the task to be evicted")
    # The timer restores it; the new attempt replays the step (not run again) and the sleep.
    out = ref.result(timeout=60)
    assert out == {"attempt": 1, "retry_count": 0, "step": "once"}
    kinds = event_kinds(engine.db_url, [ref.run_id])
    assert kinds == ["EVICTED"]


def test_a_blocked_durable_task_holds_no_normal_slot(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    # One normal and one durable slot; the durable task is never evicted and sleeps long.
    worker_factory("tests.apps.durable_eviction:app", slots=1, durable_slots=1)
    sleeper = app.tasks["stay"].run_no_wait(Nap(seconds=30))
    wait_until(
        lambda: (task_row(engine.db_url, sleeper.run_id) or {}).get("status") == "RUNNING",
        20,
        "the durable task to run",
    )
    # The normal slot is free meanwhile: ordinary tasks run one after the other.
    for _ in range(3):
        assert app.tasks["quick"].run_no_wait(Nap(seconds=0)).result(timeout=20) == "quick"
    row = task_row(engine.db_url, sleeper.run_id)
    assert row is not None and row["status"] == "RUNNING" and row["running"]
    app.runs.cancel(sleeper.run_id)


def test_cancelling_an_evicted_run_ends_it_at_once(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    worker_factory("tests.apps.durable_eviction:app", durable_slots=4)
    ref = app.tasks["hibernate"].run_no_wait(Nap(seconds=60))
    wait_until(lambda: evicted_now(engine.db_url, ref.run_id), 20, "the task to be evicted")
    app.runs.cancel(ref.run_id)
    with pytest.raises(TaskRunError) as failed:
        ref.result(timeout=10)
    assert failed.value.status == "CANCELLED"


def test_fifty_sleeping_tasks_share_two_durable_slots(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    worker_factory("tests.apps.durable_eviction:app", durable_slots=2)
    refs = app.tasks["doze"].run_many([Nap(seconds=1) for _ in range(50)])
    outs = [ref.result(timeout=120) for ref in refs]
    # No eviction counted as a retry, and capacity pressure evicted (most of) them.
    assert {o["retry_count"] for o in outs} == {0}
    assert sum(o["attempt"] > 0 for o in outs) >= 40
    kinds = event_kinds(engine.db_url, [r.run_id for r in refs])
    assert set(kinds) == {"EVICTED"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_thousand_sleeping_tasks_finish_on_one_worker_with_ten_durable_slots(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    worker_factory("tests.apps.durable_eviction:app", durable_slots=10)
    refs = app.tasks["doze"].run_many([Nap(seconds=2) for _ in range(1000)])
    outs = [ref.result(timeout=540) for ref in refs]
    assert len(outs) == 1000
    assert {o["retry_count"] for o in outs} == {0}


def test_a_stopping_worker_evicts_its_blocked_task_and_another_worker_finishes_it(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    first = worker_factory("tests.apps.durable_eviction:app", durable_slots=4, name="first")
    ref = app.tasks["stay"].run_no_wait(Nap(seconds=4))
    wait_until(
        lambda: bool(
            query(
                engine.db_url,
                "SELECT 1 FROM stoker.durable_entry e JOIN stoker.task t ON t.id = e.task_id"
                " WHERE t.external_id = %s AND e.status = 'pending'",
                ref.run_id,
            )
        ),
        20,
        "the sleep to be recorded",
    )
    assert first.proc is not None
    first.proc.send_signal(signal.SIGTERM)
    # Blocked, so evicted (not handed back): the worker exits without waiting for it.
    wait_until(lambda: evicted_now(engine.db_url, ref.run_id), 20, "the task to be evicted")
    assert first.proc.wait(timeout=20) == 0
    second = worker_factory("tests.apps.durable_eviction:app", durable_slots=4, name="second")
    out = ref.result(timeout=60)
    assert out == {"attempt": 1, "retry_count": 0}
    assert event_kinds(engine.db_url, [ref.run_id]) == ["EVICTED"]
    worker = query(
        engine.db_url,
        "SELECT w.name FROM stoker.worker w JOIN stoker.task t ON t.worker_id = w.id"
        " WHERE t.external_id = %s"
        " UNION ALL SELECT w.name FROM stoker.worker w"
        " JOIN stoker.task_history t ON t.worker_id = w.id WHERE t.external_id = %s",
        ref.run_id,
        ref.run_id,
    )
    assert worker == [{"name": second.name}]


def test_the_execution_timeout_counts_running_time_not_time_asleep(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    worker_factory("tests.apps.durable_eviction:app", durable_slots=4)
    timed = app.tasks["timed"]
    # Asleep for 3 s with a 1 s execution timeout: not tripped.
    slept = timed.run_no_wait(Work(nap=3, busy=0.1))
    # Running for 3 s after a short sleep: tripped.
    busy = timed.run_no_wait(Work(nap=0.2, busy=3))
    assert slept.result(timeout=60) == {"attempt": 0}
    with pytest.raises(TaskRunError) as failed:
        busy.result(timeout=60)
    assert failed.value.error_type == "TaskTimeoutError"


def test_the_whole_run_timeout_fails_an_evicted_run(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    worker_factory("tests.apps.durable_eviction:app", durable_slots=4)
    started = time.monotonic()
    ref = app.tasks["bounded"].run_no_wait(Nap(seconds=60))
    with pytest.raises(TaskRunError) as failed:
        ref.result(timeout=60)
    took = time.monotonic() - started
    assert failed.value.error_type == "RunTimeoutError"
    assert "whole-run timeout" in str(failed.value)
    assert 2.5 < took < 15
    # It was evicted (asleep for 60 s, TTL 1 s) when its deadline failed it.
    assert event_kinds(engine.db_url, [ref.run_id]) == ["EVICTED", "TIMED_OUT"]
