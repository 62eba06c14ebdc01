"""The schedules controller against a real Postgres: a run refused when it falls due fails
alone (FAILED, with why) while the others fire; two rounds at once (two leaders
overlapping) fire each due run once; a fired run is never fired again."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import psycopg

from stoker._core.wire import TaskConfig
from stoker.db import Executor
from stoker.engine.auth import create_tenant
from stoker.engine.controllers.leadership import Leadership
from stoker.engine.controllers.schedules import ScheduleTimers
from stoker.engine.definitions import Definitions
from stoker.engine.flows.progression import Progression
from stoker.engine.ingest import Ingest
from stoker.engine.ingest.workflows import WorkflowIngest
from stoker.engine.schedules import ScheduleInput, Schedules
from stoker.engine.signals import Signals

MAX = 1024 * 1024


async def _timers(db: Executor) -> tuple[ScheduleTimers, Schedules, Ingest]:
    signals = Signals("test")
    definitions = Definitions(db, on_limits_changed=lambda _t: None)
    ingest = Ingest(
        db, signals, definitions, max_payload_bytes=MAX, flush_interval_ms=0, flush_max_items=1000
    )
    workflows = WorkflowIngest(
        db, signals, definitions, ingest, Progression(db, signals), max_payload_bytes=MAX
    )
    leadership = Leadership(db, engine_id="test", interval_s=1, lease_ttl_s=5)
    timers = ScheduleTimers(db, signals, ingest, workflows, leadership, interval_s=1)
    schedules = Schedules(
        db, definitions, engine_id="test", max_payload_bytes=MAX, on_changed=lambda: None
    )
    return timers, schedules, ingest


def _sql(db_url: str, sql: str, *args: Any) -> list[Any]:
    with psycopg.connect(db_url, options="-c search_path=stoker", autocommit=True) as conn:
        cur = conn.execute(sql, args)
        return list(cur.fetchall()) if cur.description else []


async def _register(definitions_db: Executor, tenant_id: int, names: list[str]) -> None:
    defs = Definitions(definitions_db, on_limits_changed=lambda _t: None)
    config = TaskConfig().model_dump_json().encode()
    await defs.register_tasks(tenant_id, [(n, config) for n in names])


def _due_now(task: str, n: int = 0) -> ScheduleInput:
    return ScheduleInput(task, "", json.dumps({"n": n}).encode(), b"{}", 0, int(time.time() * 1000))


async def test_a_run_refused_when_due_fails_alone_and_the_others_fire(
    db: Executor, db_url: str
) -> None:
    tenant = await create_tenant(db, "t")
    await _register(db, tenant, ["greet"])
    timers, schedules, _ = await _timers(db)
    good = await schedules.create(
        tenant, [_due_now("greet", 1), _due_now("greet", 2)], strict=False
    )
    # A schedule whose task is unknown by the time it is due (stored behind the API's back).
    ghost = uuid.uuid4()
    _sql(
        db_url,
        "INSERT INTO scheduled_run (tenant_id, external_id, task_name, run_at, input)"
        " VALUES (%s, %s, 'ghost', now() - interval '1 second', '{}')",
        tenant,
        ghost,
    )
    _, fired = await timers.round()
    assert fired == 3 and timers.fired == 2
    rows = {
        r[0]: r[1:]
        for r in _sql(
            db_url, "SELECT external_id, status, run_id, error FROM scheduled_run ORDER BY id"
        )
    }
    assert rows[ghost][0] == "FAILED" and rows[ghost][1] is None and "ghost" in rows[ghost][2]
    runs = _sql(db_url, "SELECT external_id, input FROM task ORDER BY id")
    assert [(r[0], r[1]) for r in runs] == [
        (rows[g["external_id"]][1], {"n": n}) for g, n in zip(good, (1, 2), strict=True)
    ]
    # Fired is final: another round fires nothing.
    assert (await timers.round())[1] == 0
    assert len(_sql(db_url, "SELECT 1 FROM task")) == 2


async def test_two_rounds_at_once_fire_each_due_run_once(db: Executor, db_url: str) -> None:
    tenant = await create_tenant(db, "t")
    await _register(db, tenant, ["greet"])
    one, schedules, _ = await _timers(db)
    two, _, _ = await _timers(db)
    made = await schedules.create(tenant, [_due_now("greet", n) for n in range(3000)], strict=False)
    fired = 0
    while True:
        results = await asyncio.gather(one.round(), two.round(), one.round())
        got = sum(n for _, n in results)
        fired += got
        if got == 0:
            break
    assert fired == 3000
    runs = _sql(db_url, "SELECT additional_metadata->>'stoker_schedule' FROM task")
    assert sorted(r[0] for r in runs) == sorted(str(m["external_id"]) for m in made)


async def test_fired_runs_are_pruned_after_the_cutoff_and_scheduled_ones_never(
    db: Executor, db_url: str
) -> None:
    from datetime import UTC, datetime, timedelta

    from stoker.db.store import schedules as store

    tenant = await create_tenant(db, "t")
    await _register(db, tenant, ["greet"])
    timers, schedules, _ = await _timers(db)
    await schedules.create(tenant, [_due_now("greet")], strict=False)
    later = ScheduleInput("greet", "", b"{}", b"{}", 0, int(time.time() * 1000) + 3_600_000)
    (pending,) = await schedules.create(tenant, [later], strict=False)
    assert (await timers.round())[1] == 1
    past = datetime.now(UTC) - timedelta(days=1)
    assert await store.prune_fired_scheduled_runs(db, store.PruneFiredScheduledRuns(past, 10)) == 0
    future = datetime.now(UTC) + timedelta(days=1)
    assert (
        await store.prune_fired_scheduled_runs(db, store.PruneFiredScheduledRuns(future, 10)) == 1
    )
    assert [r[0] for r in _sql(db_url, "SELECT external_id FROM scheduled_run")] == [
        pending["external_id"]
    ]


async def test_the_plain_path_writes_the_runs_the_general_path_writes(
    db: Executor, db_url: str
) -> None:
    """A task without concurrency or rate-limit policy is fired by one statement; a task
    with a policy by the general path (prepare, insert_tasks) in the same round. Their
    rows agree on everything the task's options and the schedule set."""
    from stoker._core.wire import ConcurrencyExpression

    tenant = await create_tenant(db, "t")
    defs = Definitions(db, on_limits_changed=lambda _t: None)
    options: dict[str, Any] = {
        "retries": 3,
        "backoff_factor": 2.0,
        "backoff_max_seconds": 1.5,
        "execution_timeout_ms": 7000,
        "schedule_timeout_ms": 9000,
        "priority": 2,
    }
    gated = [ConcurrencyExpression(expression="'all'", max_runs=1)]
    await defs.register_tasks(
        tenant,
        [
            ("plain", TaskConfig(**options).model_dump_json().encode()),
            ("policed", TaskConfig(**options, concurrency=gated).model_dump_json().encode()),
        ],
    )
    timers, schedules, _ = await _timers(db)
    now_ms = int(time.time() * 1000)
    made = await schedules.create(
        tenant,
        [
            ScheduleInput("plain", "", b'{"n": 1}', b'{"m": "x"}', 0, now_ms),
            ScheduleInput("policed", "", b'{"n": 1}', b'{"m": "x"}', 0, now_ms),
            ScheduleInput("plain", "", b'{"n": 2}', b"{}", 3, now_ms),
        ],
        strict=False,
    )
    assert (await timers.round())[1] == 3 and timers.fired == 3
    rows = _sql(
        db_url,
        "SELECT t.task_name, t.status, t.priority, t.input, t.additional_metadata,"
        " t.max_retries, t.backoff_factor, t.backoff_max_ms, t.execution_timeout_ms,"
        " t.schedule_timeout_ms, t.error, t.finished_at, t.rate_limits, t.desired_worker_id,"
        " s.external_id::text"
        " FROM task t JOIN scheduled_run s ON s.run_id = t.external_id ORDER BY s.id",
    )
    by_schedule = {r[-1]: r[:-1] for r in rows}
    first, policed, second = (by_schedule[str(m["external_id"])] for m in made)
    assert first[1:4] == ("QUEUED", 2, {"n": 1}) and second[2:4] == (3, {"n": 2})
    assert first[4] == {"m": "x", "stoker_schedule": str(made[0]["external_id"])}
    assert first[1:4] + first[5:] == policed[1:4] + policed[5:]
    assert first[5:10] == (3, 2.0, 1500, 7000, 9000)
    # The plain runs are queue items due now with their schedule deadline; the policed
    # one waits for its concurrency slot.
    items = _sql(
        db_url,
        "SELECT t.task_name, q.priority,"
        " extract(epoch FROM q.schedule_deadline - q.available_at) * 1000"
        " FROM queue_item q JOIN task t ON t.id = q.task_id ORDER BY q.priority",
    )
    assert [(n, p, float(d)) for n, p, d in items] == [("plain", 2, 9000.0), ("plain", 3, 9000.0)]
    assert len(_sql(db_url, "SELECT 1 FROM concurrency_slot")) == 1
