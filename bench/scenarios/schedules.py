"""schedules (Stoker only): how late scheduled runs start, at a normal rate and when many
are due at once.

Runs of the no-op task are scheduled through ``task.aio_schedule_many`` to fall due evenly
over a window that starts a few seconds after the last of them is stored: first 200 over 4
seconds (normal load), then ``schedule_runs`` (quick and full: 10,000) over one second.
Once every one has fired, each run's lateness is read from the database: its task row's
``created_at`` (the start of the transaction of the controller's round that wrote it, on
the database's clock) minus the time it was scheduled for. The engine's
target: p50 ≤ 10 ms and p99 ≤ 50 ms at 10,000 due in one second. No worker runs: what is
measured is when each run becomes a queue item, not how fast workers drain them.

The scenario also checks the guarantee: every scheduled run fired exactly once.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.config import Context
from bench.measure import percentile
from bench.report import error_rows, fmt, table, write_json
from bench.scenarios import Result, Scenario, cron_idle, register
from bench.systems import System

RUNS = {"quick": 10_000, "full": 10_000}
SPREAD_S = 1.0
SPARSE_RUNS = 200
SPARSE_SPREAD_S = 4.0
"""Normal load: 50 runs due per second."""
LEAD_S = 3.0
"""How long after the last run is stored the due second starts."""
CREATE_CHUNK = 1_000
FIRE_TIMEOUT_S = 120.0


async def _lateness(db_url: str, ids: list[str]) -> tuple[list[float], int, int]:
    """Per fired schedule, its run's lateness in ms; and how many runs and schedules the
    scheduled runs made (each must be one)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        cur = await conn.execute(
            "SELECT extract(epoch FROM t.created_at - s.run_at) * 1000"
            " FROM stoker.scheduled_run s JOIN stoker.task t ON t.external_id = s.run_id"
            " WHERE s.external_id = ANY(%s::uuid[])",
            (ids,),
        )
        late = [float(r[0]) for r in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT count(*), count(DISTINCT additional_metadata->>'stoker_schedule')"
            " FROM stoker.task WHERE additional_metadata ? 'stoker_schedule'"
        )
        row = await cur.fetchone()
    assert row is not None
    return late, int(row[0]), int(row[1])


async def _unfired(db_url: str) -> int:
    import psycopg

    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM stoker.scheduled_run WHERE status = 'SCHEDULED'"
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _phase(system: System, n: int, spread_s: float, seq0: int) -> dict[str, Any]:
    """Schedules ``n`` runs due evenly over ``spread_s`` seconds, waits until they fired;
    their lateness and how fast they were stored."""
    from bench.systems.stoker import Noop

    task = system.client.tasks["noop"]  # type: ignore[attr-defined]
    # Stored first (timed: the create rate), due later: the due window starts LEAD_S after
    # the time storing them should take, estimated from one chunk stored (and deleted) first.
    chunk = min(n, CREATE_CHUNK)
    far = datetime.now(UTC) + timedelta(seconds=600)
    t0 = time.perf_counter()
    probe = await task.aio_schedule_many([(far, Noop(seq=seq0 + i)) for i in range(chunk)])
    chunk_s = time.perf_counter() - t0
    await system.client.schedules.aio_bulk_delete([s.id for s in probe])  # type: ignore[attr-defined]
    start = datetime.now(UTC) + timedelta(seconds=chunk_s * n / chunk * 1.5 + LEAD_S)
    step = spread_s / n
    ids: list[str] = []
    t0 = time.perf_counter()
    for lo in range(0, n, CREATE_CHUNK):
        runs = [
            (start + timedelta(seconds=step * i), Noop(seq=seq0 + i))
            for i in range(lo, min(n, lo + CREATE_CHUNK))
        ]
        ids += [s.id for s in await task.aio_schedule_many(runs)]
    create_s = time.perf_counter() - t0
    if datetime.now(UTC) >= start:
        raise RuntimeError(
            f"storing {n} scheduled runs took {create_s:.1f}s, past their time: the machine is "
            "too busy to measure lateness"
        )
    deadline = time.monotonic() + FIRE_TIMEOUT_S + (start - datetime.now(UTC)).total_seconds()
    while await _unfired(system.db_url) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"scheduled runs still unfired after {FIRE_TIMEOUT_S}s")
        await asyncio.sleep(0.2)
    late, _, _ = await _lateness(system.db_url, ids)
    return {
        "runs": n,
        "spread_s": spread_s,
        "create_per_s": n / create_s,
        "fired": len(late),
        "lateness_p50_ms": percentile(late, 50),
        "lateness_p99_ms": percentile(late, 99),
        "lateness_max_ms": max(late) if late else None,
        "early": sum(1 for x in late if x < 0),
    }


async def run(system: System, ctx: Context) -> Result:
    n = int(ctx.overrides.get("schedule_runs", RUNS.get(ctx.profile.name, 10_000)))
    # Normal load first (a few runs due every second), then the burst.
    sparse = await _phase(system, SPARSE_RUNS, SPARSE_SPREAD_S, 0)
    burst = await _phase(system, n, SPREAD_S, SPARSE_RUNS)
    # Cron ticks and the idle cost with crons defined, while the task is still registered
    # (their runs carry no stoker_schedule, so the count below is not touched).
    crons = await _crons(system, ctx)
    _, runs, distinct = await _lateness(system.db_url, [])
    await system.reset()  # the fired runs stay queued: no worker ran them
    return {
        "phases": {"sparse": sparse, "burst": burst},
        "task_runs": runs,
        "duplicates": runs - distinct,
        "crons": crons,
        "config": system.describe(),
    }


async def _crons(system: System, ctx: Context) -> Result:
    """Cron tick lateness, then the idle cost with 10,000 crons defined
    (:mod:`bench.scenarios.cron_idle`); a failure is reported, not raised."""
    quick = ctx.profile.name == "quick"
    out: Result = {}
    try:
        out["ticks"] = await cron_idle.tick_lateness(
            system, crons=20 if quick else 100, seconds=5.0 if quick else 10.0
        )
        out["idle"] = await cron_idle.idle_with_crons(
            system, seconds=5.0 if quick else 15.0, crons=10_000
        )
    except Exception as exc:  # the lateness figures above stand on their own
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def report(results: dict[str, Result], ctx: Context) -> None:
    columns = ["system", "runs due", "over s", "fired", "duplicates", "stored/s",
               "lateness p50 ms", "p99 ms", "max ms"]  # fmt: skip
    rows = [
        [name, f"{p['runs']:,}", fmt(p["spread_s"], 0), f"{p['fired']:,}",
         str(r["duplicates"]), fmt(p["create_per_s"]), fmt(p["lateness_p50_ms"], 1),
         fmt(p["lateness_p99_ms"], 1), fmt(p["lateness_max_ms"], 1)]
        for name, r in results.items()
        if "error" not in r
        for p in r["phases"].values()
    ]  # fmt: skip
    rows += error_rows(results, len(columns))
    ctx.console.print(
        table(
            f"schedules ({ctx.label}): lateness of runs scheduled for the same second",
            columns,
            rows,
        )
    )
    cron_rows = []
    for name, r in results.items():
        c = r.get("crons") or {}
        if "error" in c:
            cron_rows.append([name, c["error"], "", "", "", "", ""])
            continue
        t, i = c.get("ticks"), c.get("idle")
        if t and i:
            cron_rows.append(
                [name, f"{t['runs']:,}", fmt(t["lateness_p50_ms"], 1), fmt(t["lateness_p99_ms"], 1),
                 f"{i['crons']:,}", fmt(i["idle_tx_per_s_no_crons"], 1),
                 fmt(i["idle_tx_per_s_with_crons"], 1)]
            )  # fmt: skip
    if cron_rows:
        cron_columns = ["system", "cron runs", "tick lateness p50 ms", "p99 ms", "crons defined",
                        "idle tx/s without", "idle tx/s with"]  # fmt: skip
        title = f"schedules ({ctx.label}): per-second cron ticks, and idle cost with crons defined"
        ctx.console.print(table(title, cron_columns, cron_rows))
    write_json(ctx, "schedules", results)


SCENARIO = register(
    Scenario(
        name="schedules",
        description="lateness of 10,000 scheduled runs due in one second (p50 ≤ 10, p99 ≤ 50 ms)",
        run=run,
        report=report,
        stoker_only=True,
        order=75,
    )
)
