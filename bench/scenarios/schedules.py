"""schedules (Stoker only): how late scheduled runs start when many are due at once.

``schedule_runs`` (quick and full: 10,000) runs of the no-op task are scheduled, through
``task.aio_schedule_many``, to fall due evenly over one second that starts a few seconds
after the last of them is stored. Once every one has fired, each run's lateness is read
from the database: its task row's ``created_at`` (the start of the ingest transaction that
wrote it, on the database's clock) minus the time it was scheduled for. The engine's
target: p50 ≤ 10 ms and p99 ≤ 50 ms at 10,000 due in one second. No worker runs: what is
measured is when each run becomes a queue item, not how fast workers drain them.

The scenario also checks the guarantee: every scheduled run fired exactly once.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from bench.config import Context
from bench.measure import percentile
from bench.report import error_rows, fmt, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.systems import System

RUNS = {"quick": 10_000, "full": 10_000}
SPREAD_S = 1.0
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


async def run(system: System, ctx: Context) -> Result:
    n = int(ctx.overrides.get("schedule_runs", RUNS.get(ctx.profile.name, 10_000)))
    task = system.client.tasks["noop"]  # type: ignore[attr-defined]
    from bench.systems.stoker import Noop

    # Stored first (timed: the create rate), due later: the due second starts LEAD_S after
    # the time storing them should take, estimated from one chunk stored (and deleted) first.
    far = datetime.now(UTC) + timedelta(seconds=600)
    t0 = time.perf_counter()
    probe = await task.aio_schedule_many([(far, Noop(seq=i)) for i in range(CREATE_CHUNK)])
    chunk_s = time.perf_counter() - t0
    await system.client.schedules.aio_bulk_delete([s.id for s in probe])  # type: ignore[attr-defined]
    estimate = chunk_s * n / CREATE_CHUNK
    start = datetime.now(UTC) + timedelta(seconds=estimate * 1.5 + LEAD_S)
    step = SPREAD_S / n
    ids: list[str] = []
    t0 = time.perf_counter()
    for lo in range(0, n, CREATE_CHUNK):
        runs = [
            (start + timedelta(seconds=step * i), Noop(seq=i))
            for i in range(lo, min(n, lo + CREATE_CHUNK))
        ]
        ids += [s.id for s in await task.aio_schedule_many(runs)]
    create_s = time.perf_counter() - t0
    if datetime.now(UTC) >= start:
        raise RuntimeError(
            f"storing {n} scheduled runs took {create_s:.1f}s, past their time: the machine is "
            "too busy to measure lateness"
        )
    # Cron lateness and idle cost with 10,000 crons belong here too: bench/scenarios/cron_idle.py
    # (from the crons feature) provides those measurements; call them from this scenario
    # once that module is on main.
    deadline = time.monotonic() + FIRE_TIMEOUT_S + (start - datetime.now(UTC)).total_seconds()
    while await _unfired(system.db_url) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"scheduled runs still unfired after {FIRE_TIMEOUT_S}s")
        await asyncio.sleep(0.2)
    late, runs, distinct = await _lateness(system.db_url, ids)
    await system.reset()  # the fired runs stay queued: no worker ran them
    return {
        "runs": n,
        "spread_s": SPREAD_S,
        "create_per_s": n / create_s,
        "fired": len(late),
        "task_runs": runs,
        "duplicates": runs - distinct,
        "lateness_p50_ms": percentile(late, 50),
        "lateness_p99_ms": percentile(late, 99),
        "lateness_max_ms": max(late) if late else None,
        "early": sum(1 for x in late if x < 0),
        "config": system.describe(),
    }


def report(results: dict[str, Result], ctx: Context) -> None:
    columns = ["system", "runs due in 1 s", "fired", "duplicates", "stored/s",
               "lateness p50 ms", "p99 ms", "max ms"]  # fmt: skip
    rows = [
        [name, f"{r['runs']:,}", f"{r['fired']:,}", str(r["duplicates"]), fmt(r["create_per_s"]),
         fmt(r["lateness_p50_ms"], 1), fmt(r["lateness_p99_ms"], 1), fmt(r["lateness_max_ms"], 1)]
        for name, r in results.items()
        if "error" not in r
    ]  # fmt: skip
    rows += error_rows(results, len(columns))
    ctx.console.print(
        table(
            f"schedules ({ctx.label}): lateness of runs scheduled for the same second",
            columns,
            rows,
        )
    )
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
