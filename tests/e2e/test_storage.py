"""Run history and retention: finished runs leave the live tables and stay readable; day
partitions are created ahead and dropped past the retention (docs/storage.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from stoker import Stoker, TaskRunError
from tests.apps import workflows
from tests.apps.workflows import Count, Job
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(120)

FAST_HISTORY = {"STOKER_HISTORY_AFTER_S": "0.3", "STOKER_ARCHIVE_INTERVAL_S": "0.2"}


def where(db_url: str, table: str, run_id: str) -> bool:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT 1 FROM stoker.{table} WHERE external_id = %s", (run_id,)
        ).fetchone()
    return row is not None


def test_finished_runs_move_to_history_and_stay_readable(
    engine_factory: Any, tenant_factory: Any, worker_factory: Any, tmp_path: Path
) -> None:
    eng = engine_factory(env=FAST_HISTORY)
    ten = tenant_factory(eng)
    worker_factory("tests.apps.workflows:app", slots=10, engine=eng, tenant=ten)
    app = workflows.declare(Stoker(address=eng.grpc_address, token=ten.token))

    single = app.tasks["square"].run_no_wait(Count(n=7))
    assert single.result(timeout=30) == 49
    dag = app.workflows["diamond"].run_no_wait(Job(value=2), additional_metadata={"k": "v"})
    assert dag.result(timeout=30)["d"]["sum"] == 20 + 7
    wait_until(lambda: where(eng.db_url, "task_history", single.run_id), 30, "the task to move")
    wait_until(lambda: where(eng.db_url, "dag_history", dag.run_id), 30, "the DAG run to move")
    assert not where(eng.db_url, "task", single.run_id)
    assert not where(eng.db_url, "dag", dag.run_id)
    with psycopg.connect(eng.db_url, autocommit=True) as conn:
        live_steps = conn.execute(
            "SELECT count(*) FROM stoker.task t JOIN stoker.dag_history d ON d.id = t.dag_id"
            " WHERE d.external_id = %s",
            (dag.run_id,),
        ).fetchone()
    assert live_steps == (0,)  # the steps moved with their run

    # Results, the REST API and filters still find them.
    assert single.result(timeout=5) == 49
    assert dag.result(timeout=5)["d"]["sum"] == 27
    headers = {"authorization": f"Bearer {ten.token}"}
    with httpx.Client(base_url=eng.http_url, headers=headers, timeout=10) as http:
        run = http.get(f"/api/v1/runs/{single.run_id}").json()
        assert run["status"] == "COMPLETED" and run["output"] == 49
        listed = http.get("/api/v1/runs", params={"task_name": "square"}).json()
        assert single.run_id in [r["run_id"] for r in listed["items"]]
        body = http.get(f"/api/v1/workflow-runs/{dag.run_id}").json()
        assert body["status"] == "COMPLETED"
        assert {s["step"]: s["status"] for s in body["steps"]} == dict.fromkeys("abcd", "COMPLETED")
        page = http.get("/api/v1/workflow-runs", params={"metadata": "k:v"}).json()
        assert [r["run_id"] for r in page["items"]] == [dag.run_id]


def test_replay_brings_a_run_back_from_history(
    engine_factory: Any, tenant_factory: Any, worker_factory: Any, tmp_path: Path
) -> None:
    eng = engine_factory(env=FAST_HISTORY)
    ten = tenant_factory(eng)
    worker_factory("tests.apps.workflows:app", slots=10, engine=eng, tenant=ten)
    app = workflows.declare(Stoker(address=eng.grpc_address, token=ten.token))
    log = tmp_path / "log"
    ref = app.workflows["replayable"].run_no_wait(Job(log=str(log), value=4))
    with pytest.raises(TaskRunError, match="second"):
        ref.result(timeout=30)
    child = app.tasks["parent_of_failing_child"].run_no_wait(Job(log=str(tmp_path / "c")))
    with pytest.raises(TaskRunError, match="the child fails the first time"):
        child.result(timeout=30)
    for run_id, table in ((ref.run_id, "dag_history"), (child.run_id, "task_history")):
        wait_until(lambda r=run_id, t=table: where(eng.db_url, t, r), 30, f"{run_id} to move")

    assert app.runs.replay(ref).outcome == "replayed"
    assert ref.result(timeout=30) == {"first": {"v": 4}, "second": {"v": 5}}
    assert log.read_text().split().count("first") == 1  # kept its output, not run again
    # The failed child had moved to history too: it came back and ran again.
    assert app.runs.replay(child).outcome == "replayed"
    assert child.result(timeout=30) == {"child": "child ok"}


def test_replay_brings_back_a_child_that_moved_before_its_parent(
    engine_factory: Any, tenant_factory: Any, worker_factory: Any, tmp_path: Path
) -> None:
    # A child finishes (fails) before its parent, so it can move to history while the parent
    # is still live; a replay of the parent must still bring the child back and re-run it.
    eng = engine_factory(env={"STOKER_HISTORY_AFTER_S": "2", "STOKER_ARCHIVE_INTERVAL_S": "0.2"})
    ten = tenant_factory(eng)
    worker_factory("tests.apps.workflows:app", slots=10, engine=eng, tenant=ten)
    app = workflows.declare(Stoker(address=eng.grpc_address, token=ten.token))
    parent = app.tasks["parent_of_failing_child"].run_no_wait(Job(log=str(tmp_path / "c")))
    with pytest.raises(TaskRunError, match="the child fails the first time"):
        parent.result(timeout=30)
    with psycopg.connect(eng.db_url, autocommit=True) as conn:
        # The parent looks as if it finished in the future: the archiver leaves it alone.
        conn.execute(
            "UPDATE stoker.task SET finished_at = now() + interval '1 hour' WHERE external_id = %s",
            (parent.run_id,),
        )
        row = conn.execute(
            "SELECT c.external_id::text FROM stoker.child_run c"
            " JOIN stoker.task t ON t.id = c.parent_task_id WHERE t.external_id = %s",
            (parent.run_id,),
        ).fetchone()
    assert row is not None
    child_id = row[0]
    wait_until(lambda: where(eng.db_url, "task_history", child_id), 30, "the child to move")
    assert where(eng.db_url, "task", parent.run_id)

    assert app.runs.replay(parent).outcome == "replayed"
    assert parent.result(timeout=30) == {"child": "child ok"}
    assert where(eng.db_url, "task", child_id)


def test_partition_upkeep_by_two_callers_at_once_neither_fails_nor_waits(
    engine_factory: Any,
) -> None:
    # Two replicas both create partitions at start, and an attach needs the DEFAULT
    # partition to itself: upkeep leaves the work to whoever holds it instead of failing,
    # and gives up on a busy DEFAULT partition after lock_timeout (2 s) until the next round.
    eng = engine_factory()
    a = psycopg.connect(eng.db_url)
    b = psycopg.connect(eng.db_url, autocommit=True)
    try:
        for c in (a, b):
            c.execute("SET search_path TO stoker")
        assert a.execute("SELECT ensure_partition('task_event', current_date + 20)").fetchone()
        # ``a`` holds the upkeep lock until it commits: ``b`` has nothing to do, at once.
        assert b.execute("SELECT ensure_partition('task_event', current_date + 21)").fetchone() == (
            False,
        )
        assert (
            b.execute("SELECT drop_partitions_before('task_event', '2000-01-01')").fetchall() == []
        )
        a.commit()
        assert b.execute("SELECT ensure_partition('task_event', current_date + 21)").fetchone() == (
            True,
        )
        # A reader holding the DEFAULT partition: the attach gives up after 2 s, no error.
        a.execute("SELECT count(*) FROM task_event_default").fetchone()
        assert b.execute("SELECT ensure_partition('task_event', current_date + 22)").fetchone() == (
            False,
        )
        a.commit()
        assert b.execute("SELECT ensure_partition('task_event', current_date + 22)").fetchone() == (
            True,
        )
    finally:
        a.close()
        b.close()


def test_partitions_are_made_ahead_and_dropped_after_the_retention(
    engine_factory: Any, tenant_factory: Any
) -> None:
    eng = engine_factory(env={"STOKER_RETENTION_DAYS": "30"})
    with psycopg.connect(eng.db_url, autocommit=True) as conn:
        conn.execute("SET search_path TO stoker")

        def partitions(parent: str) -> set[str]:
            rows = conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = %s::regclass",
                (parent,),
            ).fetchall()
            return {r[0] for r in rows}

        days = conn.execute(
            "SELECT to_char(d, 'YYYYMMDD') FROM generate_series("
            " (now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 7,"
            " interval '1 day') AS d"
        ).fetchall()
        for parent in ("task_history", "dag_history", "task_event", "user_event"):
            assert {f"{parent}_p{d[0]}" for d in days} <= partitions(parent)
        # A day 40 days back, with an event in it (as if written then).
        conn.execute("SELECT ensure_partition('task_event', current_date - 40)")
        conn.execute(
            "INSERT INTO task_event (tenant_id, task_id, attempt, kind, created_at)"
            " VALUES (1, 1, 0, 'FAILED', now() - interval '40 days')"
        )
        old = conn.execute("SELECT to_char(current_date - 40, 'YYYYMMDD')").fetchone()
        assert old is not None and f"task_event_p{old[0]}" in partitions("task_event")
        # Today's events land in today's partition, not in DEFAULT.
        conn.execute(
            "INSERT INTO task_event (tenant_id, task_id, attempt, kind) VALUES (1, 2, 0, 'X')"
        )
        where_today = conn.execute(
            "SELECT tableoid::regclass::text FROM task_event WHERE task_id = 2"
        ).fetchone()
        assert where_today is not None and where_today[0].startswith("task_event_p")

    eng.restart()  # maintenance runs at start (and hourly on the leader)
    with psycopg.connect(eng.db_url, autocommit=True) as conn:
        gone = conn.execute("SELECT to_regclass(%s)", (f"stoker.task_event_p{old[0]}",)).fetchone()
        assert gone == (None,)
        left = conn.execute("SELECT task_id FROM stoker.task_event ORDER BY task_id").fetchall()
        assert left == [(2,)]


def test_a_bulk_enqueue_refreshes_the_queue_statistics(
    engine_factory: Any, tenant_factory: Any
) -> None:
    # Stale statistics after a bulk enqueue made claims sort the whole queue (O(depth));
    # the ingest analyzes queue_item once 10,000 runs went in (docs/performance.md), 1,000
    # here: the count is a setting.
    from tests.apps import basic

    eng = engine_factory(env={"STOKER_QUEUE_ANALYZE_AFTER_RUNS": "1000"})
    ten = tenant_factory(eng)
    app = basic.declare(Stoker(address=eng.grpc_address, token=ten.token))

    def analyzed() -> bool:
        with psycopg.connect(eng.db_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables"
                " WHERE schemaname = 'stoker' AND relname = 'queue_item'"
            ).fetchone()
        return bool(row and row[0])

    assert not analyzed()
    greet = app.tasks["greet"]
    for _ in range(2):
        greet.run_many([basic.Greet(name="x")] * 500)
    wait_until(analyzed, 30, "queue_item to be analyzed")


def test_the_engine_vacuums_its_live_run_tables_after_moving_runs(
    engine_factory: Any, tenant_factory: Any, worker_factory: Any
) -> None:
    # Without relying on autovacuum (which may lag, or be off): once 20,000 runs moved to
    # history (1,000 here: the count is a setting), the leader vacuums and analyzes task
    # and dag.
    from tests.apps import basic

    eng = engine_factory(env={**FAST_HISTORY, "STOKER_VACUUM_AFTER_MOVED_RUNS": "1000"})
    ten = tenant_factory(eng)
    worker_factory("tests.apps.basic:app", slots=200, engine=eng, tenant=ten)
    app = basic.declare(Stoker(address=eng.grpc_address, token=ten.token))
    refs = []
    for _ in range(2):
        refs += app.tasks["greet"].run_many([basic.Greet(name="x")] * 500)
    assert refs[-1].result(timeout=60)["message"] == "hello x"

    def vacuumed() -> bool:
        with psycopg.connect(eng.db_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT last_vacuum IS NOT NULL AND last_analyze IS NOT NULL"
                " FROM pg_stat_user_tables WHERE schemaname = 'stoker' AND relname = 'task'"
            ).fetchone()
        return bool(row and row[0])

    wait_until(vacuumed, 60, "the task table to be vacuumed")
