"""The dashboard pages' reads against a real Postgres, on rows written the way the engine
leaves them: slots per pool, a worker's attempts, queue depth and blocked reasons, run
counts, rate-limit usage, and that no statement sees another tenant's rows."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg import AsyncConnection

from stoker.db import Executor, connect
from stoker.db.store import dashboard_pages as store
from stoker.engine.auth import create_tenant
from stoker.engine.dashboard import pages_limits, pages_queues, pages_tasks, pages_workers
from stoker.errors import NotFoundError

SCHEMA = "stoker"


class Rows:
    """Inserts rows straight into the schema."""

    def __init__(self, conn: AsyncConnection[Any]) -> None:
        self.conn = conn

    async def one(self, sql: str, *args: Any) -> Any:
        cur = await self.conn.execute(sql, args)
        row = await cur.fetchone()
        assert row is not None
        return row[0]

    async def worker(
        self, tenant: int, tasks: list[str], *, slots: int = 4, durable: int = 0, **kw: Any
    ) -> tuple[int, uuid.UUID]:
        ext = uuid.uuid4()
        wid = await self.one(
            "INSERT INTO worker (tenant_id, external_id, name, slots, durable_slots, task_names,"
            " status, labels, last_heartbeat_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s,"
            " now() - %s * interval '1 second') RETURNING id",
            tenant,
            ext,
            kw.get("name", "w"),
            slots,
            durable,
            tasks,
            kw.get("status", "ACTIVE"),
            json.dumps(kw.get("labels", {})),
            kw.get("heartbeat_age_s", 0),
        )
        return int(wid), ext

    async def task_def(self, tenant: int, name: str, **config: Any) -> None:
        await self.conn.execute(
            "INSERT INTO task_def (tenant_id, name, config) VALUES (%s, %s, %s)",
            (tenant, name, json.dumps(config)),
        )

    async def task(
        self, tenant: int, name: str, status: str = "QUEUED", *, age_s: float = 0, **kw: Any
    ) -> int:
        return int(
            await self.one(
                "INSERT INTO task (tenant_id, external_id, task_name, status, input, priority,"
                " created_at, worker_id) VALUES (%s, %s, %s, %s, '{}', %s,"
                " now() - %s * interval '1 second', %s) RETURNING id",
                tenant,
                uuid.uuid4(),
                name,
                status,
                kw.get("priority", 1),
                age_s,
                kw.get("worker_id"),
            )
        )

    async def queued(
        self,
        tenant: int,
        name: str,
        *,
        priority: int = 1,
        age_s: float = 0,
        later_s: float = 0,
        rate_limits: list[dict[str, Any]] | None = None,
    ) -> int:
        task_id = await self.task(tenant, name, priority=priority, age_s=age_s)
        await self.conn.execute(
            "INSERT INTO queue_item (tenant_id, task_id, attempt, queue, priority, available_at,"
            " rate_limits) VALUES (%s, %s, 0, %s, %s, now() + %s * interval '1 second', %s)",
            (
                tenant,
                task_id,
                name,
                priority,
                later_s,
                None if rate_limits is None else json.dumps(rate_limits),
            ),
        )
        return task_id

    async def running(self, tenant: int, name: str, worker_id: int) -> int:
        task_id = await self.task(tenant, name, "RUNNING", worker_id=worker_id)
        await self.conn.execute(
            "INSERT INTO task_runtime (task_id, tenant_id, attempt, worker_id)"
            " VALUES (%s, %s, 0, %s)",
            (task_id, tenant, worker_id),
        )
        return task_id


@dataclass
class Env:
    db: Executor
    rows: Rows
    tenant: int
    other: int


@pytest.fixture
async def env(db: Executor, db_url: str) -> AsyncIterator[Env]:
    tenant = await create_tenant(db, "acme")
    other = await create_tenant(db, "globex")
    async with await connect(db_url, SCHEMA) as conn:
        await conn.set_autocommit(True)
        yield Env(db, Rows(conn), tenant, other)


async def test_workers_count_slots_per_pool_and_list_their_attempts(env: Env) -> None:
    r = env.rows
    await r.task_def(env.tenant, "plain", slot_cost=2)
    await r.task_def(env.tenant, "steady", durable=True)
    wid, ext = await r.worker(
        env.tenant, ["plain", "steady"], slots=4, durable=3, labels={"gpu": "a100"}
    )
    await r.worker(env.tenant, ["plain"], status="DEAD", heartbeat_age_s=120, name="gone")
    await r.worker(env.other, ["plain"], name="theirs")
    await r.running(env.tenant, "plain", wid)
    await r.running(env.tenant, "steady", wid)
    await r.running(env.tenant, "steady", wid)

    rows = await store.dash_workers(env.db, store.DashWorkers(env.tenant, None, None, 100))
    assert [w["name"] for w in rows] == ["w", "gone"]  # ACTIVE first, no other tenant's
    live = rows[0]
    assert (live["running"], live["used_slots"], live["used_durable_slots"]) == (3, 2, 2)
    assert live["labels"] == {"gpu": "a100"}
    assert (rows[1]["db_now"] - rows[1]["last_heartbeat_at"]) >= timedelta(seconds=119)

    one = await store.dash_workers(env.db, store.DashWorkers(env.tenant, None, ext, 1))
    assert [w["external_id"] for w in one] == [ext]
    dead = await store.dash_workers(env.db, store.DashWorkers(env.tenant, ["DEAD"], None, 9))
    assert [w["name"] for w in dead] == ["gone"]
    theirs = await store.dash_workers(env.db, store.DashWorkers(env.other, None, ext, 1))
    assert theirs == []

    held = await store.dash_worker_runs(env.db, store.DashWorkerRuns(env.tenant, ext, 50))
    assert sorted(h["task_name"] for h in held) == ["plain", "steady", "steady"]
    assert await store.dash_worker_runs(env.db, store.DashWorkerRuns(env.other, ext, 50)) == []


async def test_queue_depth_by_priority_with_the_reasons_runs_wait(env: Env) -> None:
    r = env.rows
    await r.worker(env.tenant, ["served"])
    await r.worker(env.tenant, ["orphan"], status="DEAD")
    await r.queued(env.tenant, "served", priority=3, age_s=90)
    await r.queued(env.tenant, "served", priority=3, age_s=30)
    await r.queued(env.tenant, "served", priority=1)
    limited = [{"key": "api", "units": 1}]
    for _ in range(4):
        await r.queued(env.tenant, "served", later_s=60, rate_limits=limited)
    await r.queued(env.tenant, "served", later_s=60)  # a retry's backoff
    await r.queued(env.tenant, "orphan")
    await r.queued(env.tenant, "held")
    await env.rows.conn.execute(
        "INSERT INTO paused (tenant_id, kind, name) VALUES (%s, 'task', 'held')", (env.tenant,)
    )
    await r.queued(env.other, "served")
    await r.worker(env.tenant, ["flow.step"])
    await r.queued(env.tenant, "flow.step")
    version = await r.one(
        "INSERT INTO workflow_version (tenant_id, name, hash, config) VALUES (%s, 'flow', 'h',"
        ' \'{"steps": [{"name": "step", "task_name": "flow.step"}]}\') RETURNING id',
        env.tenant,
    )
    await r.conn.execute(
        "INSERT INTO workflow_def (tenant_id, name, version_id) VALUES (%s, 'flow', %s)",
        (env.tenant, version),
    )
    await r.conn.execute(
        "INSERT INTO paused (tenant_id, kind, name) VALUES (%s, 'workflow', 'flow')",
        (env.tenant,),
    )

    rows = await store.dash_queue_depths(env.db, store.DashTenant(env.tenant))
    by = {(q["queue"], q["priority"]): q for q in rows}
    assert set(by) == {("held", 1), ("orphan", 1), ("served", 3), ("served", 1), ("flow.step", 1)}
    assert by[("flow.step", 1)]["paused"]  # a step of a paused workflow
    top = by[("served", 3)]
    assert top["depth"] == 2 and top["served"] and not top["paused"]
    assert top["oldest_created_at"] is not None
    assert top["db_now"] - top["oldest_created_at"] >= timedelta(seconds=89)
    low = by[("served", 1)]
    assert (low["depth"], low["rate_limited"], low["deferred"]) == (6, 4, 1)
    assert not by[("orphan", 1)]["served"]
    assert by[("held", 1)]["paused"]


async def test_concurrency_waiting_counts_per_key(env: Env) -> None:
    r = env.rows
    strategy = await r.one(
        "INSERT INTO concurrency_strategy (tenant_id, scope, idx, expression, max_runs,"
        " limit_strategy) VALUES (%s, 'task:sync', 0, 'input.customer', 1,"
        " 'GROUP_ROUND_ROBIN') RETURNING id",
        env.tenant,
    )
    for key, admitted in [("acme", True), ("acme", False), ("acme", False), ("globex", False)]:
        task_id = await r.task(env.tenant, "sync")
        await r.conn.execute(
            "INSERT INTO concurrency_slot (task_id, strategy_id, tenant_id, idx, key, priority,"
            " admitted) VALUES (%s, %s, %s, 0, %s, 1, %s)",
            (task_id, strategy, env.tenant, key, admitted),
        )
    rows = await store.dash_concurrency_waiting(env.db, store.DashLimited(env.tenant, 50))
    got = [(w["task_name"], w["key"], w["waiting"], w["holding"]) for w in rows]
    assert got == [("sync", "acme", 2, 1), ("sync", "globex", 1, 0)]
    assert rows[0]["expression"] == "input.customer" and rows[0]["max_runs"] == 1
    assert await store.dash_concurrency_waiting(env.db, store.DashLimited(env.other, 50)) == []


async def test_run_counts_by_status_within_the_window(env: Env) -> None:
    r = env.rows
    for status in ["COMPLETED", "COMPLETED", "FAILED"]:
        await r.task(env.tenant, "add", status)
    await r.task(env.tenant, "add", "FAILED", age_s=2 * 86400)  # outside the window
    await r.task(env.tenant, "mul", "COMPLETED")
    await r.task(env.other, "add", "FAILED")
    since = datetime.now(UTC) - timedelta(days=1)
    rows = await store.dash_task_run_counts(env.db, store.DashRunCounts(env.tenant, since, None))
    counts = {(c["name"], c["status"]): c["runs"] for c in rows}
    assert counts == {("add", "COMPLETED"): 2, ("add", "FAILED"): 1, ("mul", "COMPLETED"): 1}
    only = await store.dash_task_run_counts(env.db, store.DashRunCounts(env.tenant, since, "mul"))
    assert [(c["name"], c["runs"]) for c in only] == [("mul", 1)]


async def test_definitions_carry_their_pause(env: Env) -> None:
    await env.rows.task_def(env.tenant, "add", retries=2)
    await env.rows.task_def(env.tenant, "mul")
    await env.rows.task_def(env.other, "add")
    await env.rows.conn.execute(
        "INSERT INTO paused (tenant_id, kind, name, drop_runs) VALUES (%s, 'task', 'mul', true)",
        (env.tenant,),
    )
    rows = await store.dash_task_defs(env.db, store.DashDefs(env.tenant, None))
    assert [(d["name"], d["paused_at"] is not None, d["drop_runs"]) for d in rows] == [
        ("add", False, False),
        ("mul", True, True),
    ]
    assert rows[0]["config"] == {"retries": 2}
    one = await store.dash_task_defs(env.db, store.DashDefs(env.tenant, "add"))
    assert [d["name"] for d in one] == ["add"]


async def test_rate_limits_show_the_units_their_window_holds_and_who_waits(env: Env) -> None:
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    recent = [[now_us - 90_000_000, 5], [now_us - 10_000_000, 2], [now_us - 1_000_000, 1]]
    await env.rows.conn.execute(
        "INSERT INTO rate_limit (tenant_id, key, limit_value, window_ms, recent)"
        " VALUES (%s, 'api', 10, 60000, %s), (%s, 'api', 1, 1000, '[]')",
        (env.tenant, json.dumps(recent), env.other),
    )
    for _ in range(3):
        await env.rows.queued(env.tenant, "call", later_s=30, rate_limits=[{"key": "api"}])
    await env.rows.queued(env.tenant, "call", rate_limits=[{"key": "api"}])  # ready now
    rows = await store.dash_rate_limits(env.db, store.DashLimited(env.tenant, 50))
    assert len(rows) == 1
    limit = rows[0]
    assert (limit["key"], limit["limit_value"], limit["used"], limit["waiting"]) == (
        "api",
        10,
        3,
        3,
    )
    assert limit["oldest_start_us"] == now_us - 10_000_000
    (view,) = await pages_limits.rate_limits(env.db, env.tenant)
    assert (view.used, view.limit, view.percent, view.window, view.waiting) == (
        3,
        10,
        30,
        "1 min",
        3,
    )
    assert view.frees.startswith("in 4") or view.frees.startswith("in 5")  # ~50 s from now


async def test_the_queues_page_names_why_runs_wait(env: Env) -> None:
    r = env.rows
    await r.worker(env.tenant, ["served"])
    await r.queued(env.tenant, "served", age_s=60)
    await r.queued(env.tenant, "served", later_s=60, rate_limits=[{"key": "api"}])
    await r.queued(env.tenant, "orphan")
    view = await pages_queues.queues(env.db, env.tenant)
    rows = {q.task_name: q for q in view.queues}
    assert rows["served"].depth == 2 and rows["served"].ready == 1
    assert rows["served"].blocked == {"rate limit": 1}
    assert rows["served"].oldest.endswith(" ago") and rows["served"].oldest != "just now"
    assert rows["orphan"].blocked == {"no eligible worker": 1} and rows["orphan"].ready == 0
    assert view.totals == {"rate limit": 1, "no eligible worker": 1}
    assert view.depth == 3


async def test_the_worker_page_refuses_another_tenants_worker(env: Env) -> None:
    wid, ext = await env.rows.worker(env.tenant, ["a"], slots=2, heartbeat_age_s=30)
    await env.rows.running(env.tenant, "a", wid)
    worker, held = await pages_workers.worker_detail(env.db, env.tenant, ext)
    assert worker.late and worker.heartbeat_age.startswith("30 s")
    assert [(p.name, p.used, p.total, p.percent) for p in worker.pools] == [("slots", 1, 2, 50)]
    assert [h.task_name for h in held] == ["a"]
    with pytest.raises(NotFoundError):
        await pages_workers.worker_detail(env.db, env.other, ext)


async def test_definitions_show_workflow_steps_triggers_policies_and_success(env: Env) -> None:
    r = env.rows
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    await r.task_def(env.tenant, "wf.first", input_schema=schema)
    await r.task_def(env.tenant, "wf.second")
    await r.task_def(
        env.tenant,
        "lonely",
        retries=3,
        crons=[{"expression": "*/5 * * * *"}],
        concurrency=[{"expression": "input.customer", "max_runs": 2}],
    )
    spec = {
        "steps": [
            {"name": "first", "task_name": "wf.first"},
            {
                "name": "second",
                "task_name": "wf.second",
                "parents": ["first"],
                "wait_for": [{"kind": "sleep", "seconds": 30}],
            },
        ],
        "on_events": ["order:*"],
    }
    version = await r.one(
        "INSERT INTO workflow_version (tenant_id, name, hash, config) VALUES (%s, 'wf', 'h', %s)"
        " RETURNING id",
        env.tenant,
        json.dumps(spec),
    )
    await r.conn.execute(
        "INSERT INTO workflow_def (tenant_id, name, version_id) VALUES (%s, 'wf', %s)",
        (env.tenant, version),
    )
    for status in ("COMPLETED", "COMPLETED", "COMPLETED", "FAILED", "RUNNING"):
        await r.task(env.tenant, "lonely", status)
    now = datetime.now(UTC)
    found = await pages_tasks.definitions(env.db, env.tenant, now)
    assert [(d.kind, d.name) for d in found] == [("workflow", "wf"), ("task", "lonely")]
    wf, lonely = found
    assert [(s.name, s.parents, s.conditions) for s in wf.steps] == [
        ("first", [], []),
        ("second", ["first"], ["waits for after 30 s"]),
    ]
    assert wf.triggers == ["event order:*"] and wf.input_schema == schema
    assert lonely.counts.success_rate == "75%" and lonely.counts.total == 5
    assert "every 5 minutes (cron */5 * * * *)" in lonely.triggers
    assert "retries: 3" in lonely.policies
    assert any("at most 2 per input.customer" in p for p in lonely.policies)
    only = await pages_tasks.definitions(env.db, env.tenant, now, kind="task", name="wf.first")
    assert [d.name for d in only] == ["wf.first"] and only[0].input_schema == schema
