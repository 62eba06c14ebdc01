"""Definitions against a real Postgres (stoker.engine.definitions), and the ready rule
(``make_tasks_ready`` in db/schema.sql) that every statement readying tasks calls.

Two :class:`Definitions` on one database stand for two engine replicas: what one registers,
the other finds on a cache miss without waiting for its cache to expire.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from stoker._core.wire import ConcurrencyExpression, RateLimit, TaskConfig
from stoker.db import Executor
from stoker.engine.auth import create_tenant
from stoker.engine.definitions import Definitions
from stoker.engine.ingest import NewTaskRun, TriggerInput, write_task_runs
from stoker.engine.signals import Signals
from stoker.errors import UnknownTaskError
from tests.harness import SCHEMA

# A cache that never expires by itself in a test: every re-read is a refresh on a miss.
LONG_TTL_S = 3600.0


def definitions(db: Executor, changed: list[int] | None = None) -> Definitions:
    sink = changed if changed is not None else []
    return Definitions(db, on_limits_changed=sink.append, ttl_s=LONG_TTL_S)


def config(**fields: Any) -> bytes:
    return TaskConfig(**fields).model_dump_json().encode()


async def test_a_registered_task_is_resolved_with_its_configuration(db: Executor) -> None:
    defs = definitions(db)
    tenant_id = await create_tenant(db, "defs")
    await defs.register_tasks(tenant_id, [("resize", config(retries=3, slot_cost=2))])
    resolved = await defs.resolve(tenant_id, ["resize"])
    assert resolved.tasks["resize"].retries == 3
    assert resolved.tasks["resize"].slot_cost == 2
    assert resolved.workflows == {}


async def test_a_miss_refreshes_the_cache_once_and_unknown_names_are_refused(
    db: Executor,
) -> None:
    here, other = definitions(db), definitions(db)
    tenant_id = await create_tenant(db, "defs")
    await here.register_tasks(tenant_id, [("first", config())])
    assert set(await here.tasks(tenant_id)) == {"first"}
    # Another replica registers a task; this cache still holds the old list...
    await other.register_tasks(tenant_id, [("second", config())])
    assert set(await here.tasks(tenant_id)) == {"first"}
    # ...until a lookup misses it, which re-reads at once.
    assert set((await here.resolve(tenant_id, ["second"])).tasks) == {"first", "second"}
    with pytest.raises(UnknownTaskError, match=r"'third'.*registered tasks: first, second"):
        await here.resolve(tenant_id, ["first", "third"])


async def test_a_workflow_resolves_to_its_current_version_and_its_steps_tasks(
    db: Executor,
) -> None:
    here, other = definitions(db), definitions(db)
    tenant_id = await create_tenant(db, "defs")
    spec = {"steps": [{"name": "a", "task_name": "wf_a"}, {"name": "b", "task_name": "wf_b",
                                                           "parents": ["a"]}]}  # fmt: skip
    await other.register_workflows(
        tenant_id,
        [("pipeline", json.dumps(spec).encode(), [("wf_a", config()), ("wf_b", config())])],
    )
    resolved = await here.resolve(tenant_id, workflow_names=["pipeline"])
    version, found = resolved.workflows["pipeline"]
    assert [s.task_name for s in found.steps] == ["wf_a", "wf_b"]
    assert {"wf_a", "wf_b"} <= set(resolved.tasks)
    # A changed spec is a new current version, seen after a miss elsewhere.
    spec["steps"].append({"name": "c", "task_name": "wf_a", "parents": ["b"]})
    await other.register_workflows(tenant_id, [("pipeline", json.dumps(spec).encode(), [])])
    assert (await here.workflows(tenant_id, refresh=True))["pipeline"][0] != version
    with pytest.raises(UnknownTaskError, match="no workflow named 'nope'"):
        await here.resolve(tenant_id, workflow_names=["nope"])


async def test_policy_uses_the_registered_strategies_and_static_limits(db: Executor) -> None:
    changed: list[int] = []
    defs = definitions(db, changed)
    tenant_id = await create_tenant(db, "defs")
    task = TaskConfig(
        concurrency=[ConcurrencyExpression(expression="input.customer", max_runs=2)],
        rate_limits=[RateLimit(static_key="emails", units="input.n")],
    )
    await defs.register_tasks(tenant_id, [("mail", task.model_dump_json().encode())])
    cfg = (await defs.resolve(tenant_id, ["mail"])).tasks["mail"]
    raw = b'{"customer": "acme", "n": 3}'
    refused = defs.policy(tenant_id, "mail", cfg, raw, b"{}")
    assert refused.error is not None and "'emails' was never created" in refused.error
    await defs.put_rate_limit(tenant_id, "emails", 10, 60_000)
    assert changed == [tenant_id]
    # The limit was created a moment ago: resolving the task re-reads the static keys.
    cfg = (await defs.resolve(tenant_id, ["mail"])).tasks["mail"]
    policy = defs.policy(tenant_id, "mail", cfg, raw, b"{}")
    assert policy.error is None
    assert policy.rate_limits == [{"key": "emails", "units": 3}]
    [(strategy_id, idx, key)] = policy.slots
    assert (idx, key) == (0, "acme") and strategy_id > 0
    failed = defs.policy(tenant_id, "mail", cfg, b'{"n": 1}', b"{}")
    assert failed.error is not None and "concurrency" in failed.error


# -- the ready rule ---------------------------------------------------------------------

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def ready_row(
    task_id: int,
    tenant_id: int = 1,
    *,
    keys: list[dict[str, Any]] | None = None,
    timeout_ms: int = 1000,
) -> tuple[Any, ...]:
    return (task_id, tenant_id, 2, "q", 5, NOW, timeout_ms, None, None,
            json.dumps(keys) if keys is not None else None)  # fmt: skip


def make_ready(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]], admitted: bool) -> Any:
    """Calls make_tasks_ready with ``rows`` as ready_task values; its answer."""
    values = ", ".join(
        "ROW(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)::ready_task" for _ in rows
    )
    params = [v for r in rows for v in r]
    cur = conn.execute(
        f"SELECT make_tasks_ready(ARRAY[{values}]::ready_task[], %s)",  # type: ignore[arg-type]
        [*params, admitted],
    )
    row = cur.fetchone()
    assert row is not None
    return row[0]


def queue_items(conn: psycopg.Connection[Any]) -> dict[int, tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT task_id, attempt, queue, priority, available_at, schedule_deadline FROM queue_item"
    ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def slots(conn: psycopg.Connection[Any]) -> set[tuple[int, int, str]]:
    rows = conn.execute("SELECT task_id, strategy_id, key FROM concurrency_slot").fetchall()
    return {(r[0], r[1], r[2]) for r in rows}


@pytest.fixture
def conn(db_url: str) -> Any:
    with psycopg.connect(db_url, options=f"-c search_path={SCHEMA}") as c:
        yield c


def test_a_ready_task_without_keys_gets_its_queue_item(conn: psycopg.Connection[Any]) -> None:
    assert make_ready(conn, [ready_row(1), ready_row(2, timeout_ms=0)], False) is None
    assert queue_items(conn) == {
        1: (2, "q", 5, NOW, NOW + timedelta(seconds=1)),
        2: (2, "q", 5, NOW, None),  # no schedule timeout, no deadline
    }
    assert slots(conn) == set()


def test_a_ready_task_with_keys_waits_for_admission(conn: psycopg.Connection[Any]) -> None:
    keys = [{"strategy_id": 7, "idx": 0, "key": "a"}, {"strategy_id": 8, "idx": 1, "key": "b"}]
    gated = make_ready(conn, [ready_row(1, 3, keys=keys), ready_row(2, 4)], False)
    assert gated == [3]
    assert slots(conn) == {(1, 7, "a"), (1, 8, "b")}
    assert set(queue_items(conn)) == {2}
    # Made ready again (a replay while its slots are still held): nothing new waits.
    assert make_ready(conn, [ready_row(1, 3, keys=keys)], False) is None
    assert len(slots(conn)) == 2


def test_an_admitted_task_is_queued_whatever_its_keys(conn: psycopg.Connection[Any]) -> None:
    keys = [{"strategy_id": 7, "idx": 0, "key": "a"}]
    assert make_ready(conn, [ready_row(1, keys=keys)], True) is None
    assert set(queue_items(conn)) == {1}
    assert slots(conn) == set()


def test_an_empty_batch_makes_nothing_ready(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute("SELECT make_tasks_ready(NULL, false)").fetchone()
    assert row == (None,)
    assert queue_items(conn) == {} and slots(conn) == set()


async def test_new_runs_follow_the_rule_through_insert_tasks(db: Executor, db_url: str) -> None:
    """The statement that creates runs: QUEUED without keys → queued; QUEUED with keys →
    waiting for admission; PENDING (a step waiting for parents) and FAILED → neither."""
    defs = definitions(db)
    tenant_id = await create_tenant(db, "ready")
    gate = TaskConfig(concurrency=[ConcurrencyExpression(expression="input.k")])
    await defs.register_tasks(
        tenant_id, [("plain", config()), ("gated", gate.model_dump_json().encode())]
    )
    known = (await defs.resolve(tenant_id, ["plain", "gated"])).tasks

    def run(name: str, raw: bytes = b'{"k": "x"}', *, pending: bool = False) -> NewTaskRun:
        policy = defs.policy(tenant_id, name, known[name], raw, b"{}")
        item = TriggerInput(name, raw)
        return NewTaskRun(uuid.uuid4(), known[name], item, policy, pending=pending)

    runs = [run("plain"), run("gated"), run("plain", pending=True), run("gated", b'{"n": 1}')]
    assert runs[3].policy.error is not None  # no key in the input: the run fails
    async with db.transaction() as tx:
        assert await write_task_runs(tx, tenant_id, runs, Signals("test").outbox()) is True
    with psycopg.connect(db_url, options=f"-c search_path={SCHEMA}") as c:
        by_id = {
            str(r[0]): (r[1], r[2])
            for r in c.execute(
                "SELECT t.external_id, t.status, "
                "(SELECT count(*) FROM queue_item q WHERE q.task_id = t.id) * 10 + "
                "(SELECT count(*) FROM concurrency_slot s WHERE s.task_id = t.id) "
                "FROM task t"
            ).fetchall()
        }
    assert [by_id[str(r.external_id)] for r in runs] == [
        ("QUEUED", 10),  # one queue item
        ("QUEUED", 1),  # one concurrency slot, waiting
        ("PENDING", 0),
        ("FAILED", 0),
    ]
