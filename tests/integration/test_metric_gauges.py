"""The state metrics as Postgres writes them (``metric_exposition``): every defined task's
depth at 0 when idle, escaped labels, the series bound, and workers' slots."""

from __future__ import annotations

from typing import Any

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from stoker.db import Executor
from stoker.engine.auth import create_tenant
from stoker.engine.metrics.gauges import Gauges
from tests.harness import SCHEMA


def families(text: str) -> dict[str, dict[str, float]]:
    """``{metric: {task label (or tenant): value}}``."""
    out: dict[str, dict[str, float]] = {}
    for f in text_string_to_metric_families(text):
        for s in f.samples:
            out.setdefault(s.name, {})[s.labels.get("task", s.labels["tenant"])] = s.value
    return out


def seed(db_url: str, tenant_id: int, queued: dict[str, int], defined: list[str]) -> None:
    """Queued runs (some not due yet) and task definitions, written as the engine would."""
    with psycopg.connect(db_url, options=f"-c search_path={SCHEMA}", autocommit=True) as c:
        for name in defined:
            c.execute(
                "INSERT INTO task_def (tenant_id, name, config) VALUES (%s, %s, '{}')",
                (tenant_id, name),
            )
        for name, n in queued.items():
            c.execute(
                "WITH t AS (INSERT INTO task (tenant_id, external_id, task_name, status, input)"
                " SELECT %s, gen_random_uuid(), %s, 'QUEUED', '{}' FROM generate_series(1, %s)"
                " RETURNING id)"
                " INSERT INTO queue_item (tenant_id, task_id, attempt, queue, priority,"
                " available_at) SELECT %s, id, 0, %s, 1, now() - interval '5 seconds' FROM t",
                (tenant_id, name, n, tenant_id, name),
            )
        c.execute(
            "UPDATE queue_item SET available_at = now() + interval '1 hour'"
            " WHERE id = (SELECT max(id) FROM queue_item WHERE tenant_id = %s)",
            (tenant_id,),
        )
        c.execute(
            "INSERT INTO worker (tenant_id, external_id, name, slots)"
            " VALUES (%s, gen_random_uuid(), 'w', 8)",
            (tenant_id,),
        )


async def test_exposition_of_a_backlog(db: Executor, db_url: str) -> None:
    tenant_id = await create_tenant(db, "gauges")
    other = await create_tenant(db, "other")
    odd = 'say "hi"\\now'
    seed(db_url, tenant_id, {"a": 3, odd: 2}, ["a", "idle"])
    seed(db_url, other, {"b": 4}, [])
    got = families(await Gauges(db, cache_s=0).render())
    depth = got["stoker_queue_depth"]
    # "a": 3 queued, one of them (the last queued of the tenant) not due for an hour.
    assert depth == {"a": 3, odd: 1, "idle": 0, "b": 3}
    assert got["stoker_queue_delayed"] == {odd: 1, "b": 1}
    assert 5 <= got["stoker_queue_oldest_age_seconds"]["a"] < 60
    assert got["stoker_queue_oldest_age_seconds"]["idle"] == 0
    assert "stoker_attempts_running" not in got  # nothing runs: no series
    assert got["stoker_worker_slots_free"] == {str(tenant_id): 8, str(other): 8}
    # One tenant's view.
    mine = families(await Gauges(db, cache_s=0).render(other))
    assert mine["stoker_queue_depth"] == {"b": 3}


async def test_past_the_bound_the_rest_is_summed_under_other(db: Executor, db_url: str) -> None:
    tenant_id = await create_tenant(db, "bounded")
    seed(db_url, tenant_id, {f"t{i}": i + 1 for i in range(5)}, [])
    got = families(await Gauges(db, cache_s=0, max_series=3).render())
    # t0..t2 kept by name; t3 (4 queued) and t4 (5, one of them delayed) summed.
    assert got["stoker_queue_depth"] == {"t0": 1, "t1": 2, "t2": 3, "_other": 8}


async def test_a_scrape_reuses_a_fresh_read(db: Executor, db_url: str) -> None:
    tenant_id = await create_tenant(db, "cached")
    gauges = Gauges(db, cache_s=60)
    first = await gauges.render(tenant_id)
    seed(db_url, tenant_id, {"late": 2}, [])
    assert await gauges.render(tenant_id) == first
    fresh: Any = families(await Gauges(db, cache_s=0).render(tenant_id))
    assert fresh["stoker_queue_depth"] == {"late": 1}
