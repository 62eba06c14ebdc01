"""idle: what each system costs while there is nothing to do.

Workers are started and warmed up (a few tasks run, so connections, streams, pools and
plans are live), then left alone: after a settling pause, for ``idle_seconds`` (quick: 15,
full: 60), psutil tracks the CPU seconds of the server side (Stoker's engine, Celery's
Redis; none for the peers whose workers talk to Postgres directly) and of the worker
processes, and Postgres's commit counter of the system's database gives its transactions
per second (a statement outside an explicit transaction is one transaction; the counter of
a backend reaches the statistics up to about a second late, which shifts the window but
not the rate of a steady trickle). Stoker's target: an idle engine under 1% of a core and a
handful of queries per second.
"""

from __future__ import annotations

import asyncio
import time

from bench.config import Context
from bench.measure import cpu_by_pid, cpu_delta
from bench.pg import pg_stats
from bench.report import error_rows, fmt, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.scenarios.common import PENDING_TIMEOUT_S, wait_acknowledged, wait_done
from bench.systems import System

WARMUP_TASKS = 20
SETTLE_S = 3.0
SECONDS = {"quick": 15.0, "full": 60.0}
BASE = 700_000_000


async def run(system: System, ctx: Context) -> Result:
    seconds = float(ctx.overrides.get("idle_seconds", SECONDS.get(ctx.profile.name, 15.0)))
    directory = ctx.scratch(system.name, "idle")
    system.start_workers(directory)
    try:
        await system.enqueue_bulk(range(BASE, BASE + WARMUP_TASKS))
        await wait_done(system, directory, WARMUP_TASKS)
        await asyncio.wait_for(wait_acknowledged(system), PENDING_TIMEOUT_S)
        await asyncio.sleep(SETTLE_S)
        server0 = cpu_by_pid(system.server_pids())
        workers0 = cpu_by_pid(system.worker_pids())
        stats0 = await asyncio.to_thread(pg_stats, system.db_url) if system.db_url else None
        started = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - started
        server_cpu = cpu_delta(server0, cpu_by_pid(system.server_pids()))
        workers_cpu = cpu_delta(workers0, cpu_by_pid(system.worker_pids()))
        stats1 = await asyncio.to_thread(pg_stats, system.db_url) if system.db_url else None
        system.check_workers()
        has_server = bool(system.server_pids())
    finally:
        await system.stop_workers()
    commits = stats1.minus(stats0).xact_commit if stats0 and stats1 else None
    return {
        "seconds": round(elapsed, 1),
        "server_core_pct": server_cpu / elapsed * 100 if has_server else None,
        "workers_core_pct": workers_cpu / elapsed * 100,
        # Two of the snapshots' own statements fall inside the window; they are not the system's.
        "transactions_per_s": max(0, commits - 2) / elapsed if commits is not None else None,
        "config": system.describe(),
    }


def report(results: dict[str, Result], ctx: Context) -> None:
    columns = ["system", "idle for s", "server % of a core", "workers % of a core",
               "Postgres transactions/s"]  # fmt: skip
    rows = [
        [name, fmt(r["seconds"], 0), fmt(r["server_core_pct"], 2),
         fmt(r["workers_core_pct"], 2), fmt(r["transactions_per_s"], 1)]
        for name, r in results.items()
        if "error" not in r
    ]  # fmt: skip
    rows += error_rows(results, len(columns))
    ctx.console.print(
        table(f"idle ({ctx.label}): cost with workers connected, no work", columns, rows)
    )
    write_json(ctx, "idle", results)


SCENARIO = register(
    Scenario(
        name="idle",
        description="CPU and Postgres transactions per second with workers connected, no work",
        run=run,
        report=report,
        order=40,
    )
)
