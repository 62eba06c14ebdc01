"""Crons (Stoker only), for the ``schedules`` scenario to call: the engine's idle cost with
10,000 crons defined, and how late cron ticks fire.

:func:`idle_with_crons` measures Postgres transactions per second and the engine's CPU of
an idle engine (no worker, nothing due) with no cron, then again with ``crons`` crons
defined (yearly ones, inserted in one statement and announced on ``stoker_crons``, as
``app.crons.create`` does). The crons controller sleeps until the earliest tick, so the
target is no growth: one more cron must not mean one more query.

:func:`tick_lateness` creates ``crons`` per-second crons through the SDK, lets them fire
for ``seconds``, deletes them, and reads how late each run was created after its tick
(``created_at`` of the run minus ``stoker_cron_tick``), as p50/p99/max milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

import psycopg

from bench.measure import cpu_by_pid, cpu_delta
from bench.pg import pg_stats
from bench.scenarios import Result

SETTLE_S = 2.0


async def _idle(system: Any, seconds: float) -> dict[str, float]:
    stats0 = await asyncio.to_thread(pg_stats, system.db_url)
    cpu0 = cpu_by_pid(system.server_pids())
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    cpu = cpu_delta(cpu0, cpu_by_pid(system.server_pids()))
    stats1 = await asyncio.to_thread(pg_stats, system.db_url)
    commits = stats1.minus(stats0).xact_commit
    # Two of the snapshots' own statements fall inside the window.
    return {
        "transactions_per_s": max(0, commits - 2) / elapsed,
        "engine_core_pct": cpu / elapsed * 100,
    }


def _define(db_url: str, n: int) -> None:
    """``n`` yearly crons of the bench tenant's first task, created as the API does."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        (tenant_id,) = conn.execute(
            "SELECT id FROM stoker.tenant WHERE name = 'bench'"
        ).fetchone() or (0,)
        (task,) = conn.execute(
            "SELECT name FROM stoker.task_def WHERE tenant_id = %s ORDER BY name LIMIT 1",
            (tenant_id,),
        ).fetchone() or ("noop",)
        conn.execute(
            "INSERT INTO stoker.cron (tenant_id, name, task_name, expression, source,"
            " next_fire_at)"
            " SELECT %s, 'bench-idle-' || i, %s, '0 0 1 1 *', 'api',"
            " date_trunc('year', now()) + interval '1 year'"
            " FROM generate_series(1, %s) AS i",
            (tenant_id, task, n),
        )
        conn.execute("SELECT pg_notify('stoker_crons', %s)", (f"{tenant_id}:bench",))


def _undefine(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM stoker.cron WHERE name LIKE 'bench-idle-%%'")


async def idle_with_crons(system: Any, seconds: float = 15.0, crons: int = 10_000) -> Result:
    """Idle cost with no cron, then with ``crons`` crons defined (see the module)."""
    await asyncio.sleep(SETTLE_S)
    without = await _idle(system, seconds)
    await asyncio.to_thread(_define, system.db_url, crons)
    try:
        await asyncio.sleep(SETTLE_S)
        with_crons = await _idle(system, seconds)
    finally:
        await asyncio.to_thread(_undefine, system.db_url)
    return {
        "seconds": seconds,
        "crons": crons,
        "idle_tx_per_s_no_crons": without["transactions_per_s"],
        "idle_tx_per_s_with_crons": with_crons["transactions_per_s"],
        "engine_core_pct_no_crons": without["engine_core_pct"],
        "engine_core_pct_with_crons": with_crons["engine_core_pct"],
    }


def _lateness_ms(db_url: str, prefix: str) -> list[float]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT created_at, additional_metadata->>'stoker_cron_tick' FROM stoker.all_tasks"
            " WHERE additional_metadata->>'stoker_cron' LIKE %s",
            (prefix + "%",),
        ).fetchall()
    return sorted(
        (created - datetime.fromisoformat(tick)).total_seconds() * 1000 for created, tick in rows
    )


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(len(values) * p))]


async def tick_lateness(system: Any, crons: int = 100, seconds: float = 10.0) -> Result:
    """How late per-second cron ticks start their runs (see the module)."""
    client = system.client
    task = sorted(client.tasks)[0]
    names = [f"bench-late-{i}" for i in range(crons)]
    for name in names:
        await client.crons.aio_create(name, task, "* * * * * *")
    try:
        await asyncio.sleep(seconds)
    finally:
        for name in names:
            await client.crons.aio_delete(name)
    late = await asyncio.to_thread(_lateness_ms, system.db_url, "bench-late-")
    return {
        "crons": crons,
        "seconds": seconds,
        "runs": len(late),
        "lateness_p50_ms": _pct(late, 0.50),
        "lateness_p99_ms": _pct(late, 0.99),
        "lateness_max_ms": late[-1] if late else None,
    }
