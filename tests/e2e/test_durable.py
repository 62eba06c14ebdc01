"""Durable tasks through real engine and worker processes: sleeps that keep their deadline,
steps that run once across a killed worker, and replay that refuses changed code."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stoker import DeclarationError, DurableContext, Stoker, TaskRunError
from tests.apps import durable
from tests.apps.durable import Chores, Nap
from tests.harness import WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def app(engine: Any, tenant: Any) -> Stoker:
    return durable.declare(
        Stoker(address=engine.grpc_address, token=tenant.token, connect_timeout=30)
    )


def query(db_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(sql, args).fetchall()


def entries(db_url: str, run_id: str) -> list[dict[str, Any]]:
    """The run's recorded calls, in position order."""
    return query(
        db_url,
        "SELECT e.position, e.kind, e.name, e.status, e.wake_at, e.invocation, e.satisfied_at"
        " FROM stoker.durable_entry e JOIN stoker.task t ON t.id = e.task_id"
        " WHERE t.external_id = %s ORDER BY e.position",
        run_id,
    )


def finished_at(db_url: str, run_id: str) -> Any:
    rows = query(
        db_url,
        "SELECT finished_at FROM stoker.task WHERE external_id = %s"
        " UNION ALL SELECT finished_at FROM stoker.task_history WHERE external_id = %s",
        run_id,
        run_id,
    )
    return rows[0]["finished_at"]


def test_a_durable_task_sleeps_and_returns(app: Stoker, engine: Any, worker_factory: Any) -> None:
    worker_factory("tests.apps.durable:app", durable_slots=2)
    ref = app.tasks["nap"].run_no_wait(Nap(seconds=2))
    assert ref.result(timeout=60) == {"slept": 2, "attempt": 0}
    [sleep] = entries(engine.db_url, ref.run_id)
    assert (sleep["kind"], sleep["name"], sleep["status"]) == ("wait", "sleep", "ok")
    # The deadline is 2 s after the sleep was recorded, and the run ended once it passed.
    done = finished_at(engine.db_url, ref.run_id)
    assert done >= sleep["wake_at"]
    assert (done - sleep["wake_at"]).total_seconds() < 1.5


def test_a_killed_worker_s_run_resumes_with_its_step_done_and_its_deadline_kept(
    app: Stoker, engine: Any, worker_factory: Any, tmp_path: Path
) -> None:
    doomed = worker_factory("tests.apps.durable:app", durable_slots=2, name="doomed")
    ref = app.tasks["chores"].run_no_wait(Chores(dir=str(tmp_path), seconds=8))
    # Killed once the step ran and the sleep is recorded: mid-sleep.
    wait_until(
        lambda: len(entries(engine.db_url, ref.run_id)) == 2, what="the sleep to be recorded"
    )
    wake_at = entries(engine.db_url, ref.run_id)[1]["wake_at"]
    doomed.kill()
    survivor = worker_factory("tests.apps.durable:app", durable_slots=2, name="survivor")
    out = ref.result(timeout=60)
    assert out == {"count": 1, "attempt": 1, "pid": survivor.pid}
    assert (tmp_path / "side-effects").read_text().splitlines() == [str(doomed.pid)]
    step, sleep = entries(engine.db_url, ref.run_id)
    assert (step["kind"], step["status"], step["invocation"]) == ("step", "ok", 1)
    assert (sleep["status"], sleep["wake_at"]) == ("ok", wake_at)  # the deadline never moved
    done = finished_at(engine.db_url, ref.run_id)
    assert done >= wake_at
    assert (done - wake_at).total_seconds() < 1.5


def test_an_engine_restart_mid_sleep_loses_neither_the_step_nor_the_wake_up(
    engine_factory: Any, tenant_factory: Any, worker_factory: Any, tmp_path: Path
) -> None:
    eng = engine_factory()
    ten = tenant_factory(eng)
    worker = worker_factory("tests.apps.durable:app", durable_slots=2, engine=eng, tenant=ten)
    client = durable.declare(Stoker(address=eng.grpc_address, token=ten.token, connect_timeout=60))
    ref = client.tasks["chores"].run_no_wait(Chores(dir=str(tmp_path), seconds=3))
    wait_until(lambda: len(entries(eng.db_url, ref.run_id)) == 2, what="the sleep to be recorded")
    wake_at = entries(eng.db_url, ref.run_id)[1]["wake_at"]
    eng.restart()  # SIGKILL: the worker's stream breaks, the leader lease must expire
    # The same attempt on the same worker resumes: it reconnected and was woken.
    assert ref.result(timeout=90) == {"count": 1, "attempt": 0, "pid": worker.pid}
    assert len((tmp_path / "side-effects").read_text().splitlines()) == 1
    sleep = entries(eng.db_url, ref.run_id)[1]
    assert (sleep["status"], sleep["wake_at"]) == ("ok", wake_at)
    assert sleep["satisfied_at"] >= wake_at


def test_a_replay_that_calls_another_step_fails_the_run_without_retries(
    app: Stoker, engine: Any, tenant: Any, tmp_path: Path
) -> None:
    def worker(name: str, version: str) -> WorkerProcess:
        return WorkerProcess(
            "tests.apps.durable:app", tenant, engine.db_url, tmp_path, name,
            durable_slots=2, env={"DURABLE_APP_VERSION": version},
        ).start()  # fmt: skip

    old = worker("v1", "1")
    new: WorkerProcess | None = None
    try:
        ref = app.tasks["shifty"].run_no_wait(Chores(dir=str(tmp_path), seconds=30))
        wait_until(
            lambda: len(entries(engine.db_url, ref.run_id)) == 2, what="the sleep to be recorded"
        )
        old.kill()  # the deploy: version 2 takes over the run mid-sleep
        new = worker("v2", "2")
        with pytest.raises(TaskRunError) as failed:
            ref.result(timeout=60)
        assert failed.value.error_type == "NonDeterminismError"
        assert "position 1" in str(failed.value)
        assert "step 'alpha'" in str(failed.value) and "step 'beta'" in str(failed.value)
        row = query(
            engine.db_url,
            "SELECT status, retry_count FROM stoker.task WHERE external_id = %s"
            " UNION ALL SELECT status, retry_count FROM stoker.task_history"
            " WHERE external_id = %s",
            ref.run_id,
            ref.run_id,
        )[0]
        assert row == {"status": "FAILED", "retry_count": 0}  # never retried
        assert [e["name"] for e in entries(engine.db_url, ref.run_id)] == ["alpha", "sleep"]
    finally:
        old.kill()
        if new is not None:
            new.kill()


def test_a_sync_durable_task_is_refused_at_declaration() -> None:
    app = Stoker(address="127.0.0.1:1")
    with pytest.raises(DeclarationError, match=r"durable task 'blocking'.*must be async"):

        @app.durable_task()
        def blocking(input: Nap, ctx: DurableContext) -> None:
            time.sleep(1)
