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
