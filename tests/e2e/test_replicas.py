"""Two engine replicas on one Postgres: the limits are global, upkeep fails over, and a
cancel reaches workers wherever they are connected."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stoker import RunCancelledError, Stoker
from tests.apps import basic, policies, workflows
from tests.apps.basic import Sleep
from tests.apps.policies import Job
from tests.apps.workflows import Job as WfJob
from tests.e2e.test_scheduling import APP, assigned_at, max_overlap
from tests.harness import Tenant, WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(120)

FAST_LEASE = {"STOKER_LEASE_TTL_S": "1.5"}


@pytest.fixture
def replicas(engine_factory: Any) -> tuple[Any, Any]:
    first = engine_factory(env=FAST_LEASE)
    second = engine_factory(db_url=first.db_url, env=FAST_LEASE)
    return first, second


def test_runs_flow_between_replicas_and_limits_hold_across_them(
    replicas: tuple[Any, Any], tenant_factory: Any, worker_factory: Any
) -> None:
    first, second = replicas
    ten = tenant_factory(first)
    via_first = policies.declare(Stoker(address=first.grpc_address, token=ten.token))
    via_first.rate_limits.put("shared", limit=4, duration="second")
    worker_factory(APP, slots=8, engine=second, tenant=ten, name="on-second")

    # Triggered through one replica, run by a worker of the other, awaited through the first.
    assert via_first.tasks["plain"].run(Job(n=7))["n"] == 7

    worker_factory(APP, slots=8, engine=first, tenant=ten, name="on-first")
    jobs = [Job(key=f"k{i % 3}", seconds=0.05, n=i) for i in range(60)]
    outs = [r.result(timeout=90) for r in via_first.tasks["round_robin"].run_many(jobs)]
    assert len({o["worker"] for o in outs}) == 2  # both replicas' workers took part
    by_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for o in outs:
        by_key[o["key"]].append((o["start"], o["end"]))
    assert max(max_overlap(v) for v in by_key.values()) <= 2

    refs = via_first.tasks["static_limited"].run_many([Job(n=i) for i in range(14)])
    [r.result(timeout=60) for r in refs]
    times = assigned_at(first, [r.run_id for r in refs])
    assert max(Counter(int(t) for t in times.values()).values()) <= 4


def test_upkeep_moves_to_the_surviving_replica(
    replicas: tuple[Any, Any], tenant_factory: Any
) -> None:
    first, second = replicas
    ten = tenant_factory(first)
    client = policies.declare(Stoker(address=second.grpc_address, token=ten.token))
    # Whoever leads now, kill the first replica; the second must (still or now) lead and
    # cancel a run that nobody takes before its schedule timeout.
    first.kill()
    with pytest.raises(RunCancelledError) as info:
        client.tasks["needs_gpu"].run(Job())
    assert info.value.error_type == "ScheduleTimeoutError"


# -- cancellation reaches workers connected to another replica ---------------------------

WF_APP = "tests.apps.workflows:app"


def _lines(path: Path) -> set[str]:
    return set(path.read_text().split()) if path.exists() else set()


def test_a_cancel_through_one_replica_stops_steps_running_on_a_worker_of_the_other(
    engine_factory: Any, tenant_factory: Any, worker_factory: Any, tmp_path: Path
) -> None:
    # Reconciliation is slowed down here, so only the cancel signal can stop the steps.
    slow = {**FAST_LEASE, "STOKER_RECONCILE_INTERVAL_S": "120"}
    first = engine_factory(env=slow)
    second = engine_factory(db_url=first.db_url, env=slow)
    ten = tenant_factory(first)
    worker_factory(WF_APP, slots=4, engine=first, tenant=ten)
    via_second = workflows.declare(Stoker(address=second.grpc_address, token=ten.token))
    log = tmp_path / "log"
    ref = via_second.workflows["slow"].run_no_wait(WfJob(log=str(log)))
    wait_until(lambda: {"async_wait:start", "sync_spin:start"} <= _lines(log), 30, "starts")
    assert via_second.runs.cancel(ref.run_id).outcome == "cancelled"
    # The async step is cancelled and the sync one sees ctx.is_cancelled, on a worker that
    # is connected to the first replica only.
    wait_until(
        lambda: {"async_wait:cancelled", "sync_spin:cancelled"} <= _lines(log),
        15,
        "the worker to stop both steps",
    )


def test_an_attempt_that_ended_without_a_signal_is_stopped_by_reconciliation(
    engine_factory: Any, tenant_factory: Any, worker_factory: Any, tmp_path: Path
) -> None:
    eng = engine_factory(env={"STOKER_RECONCILE_INTERVAL_S": "0.5"})
    ten = tenant_factory(eng)
    worker_factory(WF_APP, slots=4, engine=eng, tenant=ten)
    app = workflows.declare(Stoker(address=eng.grpc_address, token=ten.token))
    log = tmp_path / "log"
    ref = app.workflows["slow"].run_no_wait(WfJob(log=str(log)))
    wait_until(lambda: {"async_wait:start", "sync_spin:start"} <= _lines(log), 30, "starts")
    # End the attempts behind the engine's back, as a replica whose signal was lost would.
    with psycopg.connect(eng.db_url, autocommit=True) as conn:
        conn.execute(
            "WITH gone AS (DELETE FROM stoker.task_runtime r USING stoker.task t, stoker.dag d"
            " WHERE t.id = r.task_id AND d.id = t.dag_id AND d.external_id = %s"
            " RETURNING r.task_id)"
            " UPDATE stoker.task SET status = 'CANCELLED', finished_at = now()"
            " WHERE id IN (SELECT task_id FROM gone)",
            (ref.run_id,),
        )
    wait_until(
        lambda: {"async_wait:cancelled", "sync_spin:cancelled"} <= _lines(log),
        15,
        "the reconciler to stop both steps",
    )


async def test_cancel_signals_split_under_the_payload_limit_and_parse_back(
    db: Any, db_url: str
) -> None:
    from stoker.engine import notify

    listener = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    try:
        await listener.execute("LISTEN stoker_cancel")
        items = [(10_000_000 + i, i % 7) for i in range(3000)]
        await notify.send_cancel(db, 42, items, "cancelled; by: request", "engine-a")
        got: list[tuple[int, int]] = []
        async for note in listener.notifies(timeout=5):
            assert len(note.payload.encode()) < 8000
            body, _, sender = note.payload.rpartition(":")
            assert sender == "engine-a"
            parsed = notify.parse_cancel(body)
            assert parsed is not None and parsed[0] == 42
            assert parsed[2] == "cancelled, by: request"
            got += parsed[1]
            if len(got) >= len(items):
                break
        assert got == items
        assert notify.parse_cancel("garbage") is None
    finally:
        await listener.close()


# -- a worker outlives the replica it is connected to ----------------------------------


def test_a_worker_moves_to_a_surviving_replica_and_its_long_task_runs_once(
    replicas: tuple[Any, Any], tenant_factory: Any, tmp_path: Path
) -> None:
    first, second = replicas
    ten = tenant_factory(first)
    # The worker knows both replicas and connects to the first one listed.
    both = Tenant(ten.tenant_id, ten.token, f"{first.grpc_address},{second.grpc_address}")
    worker = WorkerProcess(basic.__name__ + ":app", both, first.db_url, tmp_path, "roamer").start()
    try:
        client = basic.declare(Stoker(address=second.grpc_address, token=ten.token))
        # Longer than the dead-worker timeout (3 s here): it must not be declared dead.
        ref = client.tasks["slow"].run_no_wait(Sleep(seconds=6, tag="once"))
        wait_until(lambda: _status(first.db_url, ref.run_id) == "RUNNING", 30, "the run to start")
        first.kill()
        assert ref.result(timeout=60) == {"pid": worker.pid, "attempt": 0, "tag": "once"}
        with psycopg.connect(second.db_url) as conn:
            events = conn.execute(
                "SELECT e.kind FROM stoker.task_event e JOIN stoker.task t ON t.id = e.task_id"
                " WHERE t.external_id = %s",
                (ref.run_id,),
            ).fetchall()
            status = conn.execute(
                "SELECT status FROM stoker.worker WHERE external_id = %s", (worker.worker_id,)
            ).fetchone()
        assert events == []  # never lost, never requeued: it ran once
        assert status == ("ACTIVE",)
        assert "reconnecting" in worker.log_path.read_text()
    finally:
        worker.kill()


def _status(db_url: str, run_id: str) -> str:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT status FROM stoker.task WHERE external_id = %s", (run_id,))
        return str(row.fetchone()[0])  # type: ignore[index]


def test_calls_moving_to_another_replica_together_are_all_answered(
    engine_factory: Any, tenant_factory: Any
) -> None:
    """Many calls fail on an unreachable replica at once and move on: each failure must not
    drop the channel that the calls already moved are waiting on (they would never be
    answered, and end with DEADLINE_EXCEEDED)."""
    import asyncio

    from tests.apps.basic import Greet
    from tests.harness import free_port

    eng = engine_factory()
    ten = tenant_factory(eng)
    app = basic.declare(
        Stoker(address=f"127.0.0.1:{free_port()},{eng.grpc_address}", token=ten.token)
    )

    async def many() -> list[Any]:
        calls = [app.tasks["greet"].aio_run_no_wait(Greet(name=f"n{i}")) for i in range(300)]
        return await asyncio.wait_for(asyncio.gather(*calls), 25)

    refs = asyncio.run(many())
    assert len({r.run_id for r in refs}) == 300
    app.close()
