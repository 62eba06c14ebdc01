"""cost: what each task costs in CPU, memory and Postgres writes.

Workers are started and warmed up first (start-up is not a per-task cost). Then N tasks
are bulk-enqueued and drained while psutil tracks the CPU seconds of the worker processes
(with their pool children), of the system's server side (Stoker's engine, Celery's Redis),
of this harness as the enqueuing client, and of the Postgres server's processes, and
samples peak RSS. Postgres counters are read after the run, once the server has flushed
its statistics: rows inserted/updated/deleted in this system's database and the WAL bytes
written (cluster-wide, so any other activity on the server is included).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import psutil

from bench.config import Context
from bench.measure import PeakRss, cpu_by_pid, cpu_delta
from bench.pg import PgStats, pg_stats, postmaster_pid
from bench.report import error_rows, fmt, pyplot, save, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.scenarios.common import PENDING_TIMEOUT_S, wait_acknowledged, wait_done
from bench.systems import System

STATS_FLUSH_S = 1.2
"""Backends report table counters to the stats system at most once a second."""


def _postgres_pids(url: str) -> list[int]:
    pid = postmaster_pid(url)
    return [pid] if pid is not None else []


async def run(system: System, ctx: Context) -> Result:
    n = int(ctx.size("cost_tasks"))
    directory = ctx.scratch(system.name, "cost")
    pg_pids = _postgres_pids(ctx.server.url)
    system.start_workers(directory)
    peaks = PeakRss({"workers": system.worker_pids, "server": system.server_pids})
    try:
        await system.enqueue_bulk(range(n, n + 20))
        await wait_done(system, directory, 20)
        await asyncio.wait_for(wait_acknowledged(system), PENDING_TIMEOUT_S)
        await asyncio.sleep(STATS_FLUSH_S)
        before: PgStats = pg_stats(system.db_url) if system.db_url else PgStats(0, 0, 0, 0, 0)
        groups: dict[str, Callable[[], list[int]]] = {
            "workers": system.worker_pids,
            "server": system.server_pids,
            "postgres": lambda: pg_pids,
        }
        cpu0 = {name: cpu_by_pid(pids()) for name, pids in groups.items()}
        client0 = sum(psutil.Process().cpu_times()[:2])
        peaks.start()
        started = time.perf_counter()
        await system.enqueue_bulk(range(n))
        client_cpu = sum(psutil.Process().cpu_times()[:2]) - client0
        await wait_done(system, directory, 20 + n)
        await asyncio.wait_for(wait_acknowledged(system), PENDING_TIMEOUT_S)
        elapsed = time.perf_counter() - started
        cpu = {name: cpu_delta(cpu0[name], cpu_by_pid(pids())) for name, pids in groups.items()}
        cpu["client_enqueue"] = client_cpu
        peak = await peaks.stop()
        await asyncio.sleep(STATS_FLUSH_S)
        after = pg_stats(system.db_url) if system.db_url else None
    finally:
        await system.stop_workers()
    per_k = {k: v * 1000 / n for k, v in cpu.items()}
    writes = after.minus(before) if after is not None else None
    return {
        "tasks": n,
        "elapsed_s": elapsed,
        "cpu_s_per_1k": per_k,
        "peak_rss_mb": {k: v / 2**20 for k, v in peak.items()},
        "rows_per_task": (
            {
                "inserted": writes.tup_ins / n,
                "updated": writes.tup_upd / n,
                "deleted": writes.tup_del / n,
            }
            if writes
            else None
        ),
        "commits_per_task": writes.xact_commit / n if writes else None,
        "wal_bytes_per_task": writes.wal_bytes / n if writes else None,
        "postgres_cpu_counted": bool(pg_pids),
        "config": system.describe(),
    }


def report(results: dict[str, Result], ctx: Context) -> None:
    columns = [
        "system",
        "worker CPU s/1k",
        "server CPU s/1k",
        "postgres CPU s/1k",
        "client CPU s/1k",
        "worker RSS MB",
        "server RSS MB",
        "rows ins/upd/del per task",
        "commits/task",
        "WAL B/task",
    ]
    rows: list[list[str]] = []
    for name, r in results.items():
        if "error" in r:
            continue
        cpu, rss, w = r["cpu_s_per_1k"], r["peak_rss_mb"], r["rows_per_task"]
        rows.append(
            [
                name,
                fmt(cpu["workers"], 2),
                fmt(cpu["server"], 2),
                fmt(cpu["postgres"], 2) if r["postgres_cpu_counted"] else "-",
                fmt(cpu["client_enqueue"], 2),
                fmt(rss["workers"], 0),
                fmt(rss["server"], 0) if rss["server"] else "-",
                f"{w['inserted']:.1f}/{w['updated']:.1f}/{w['deleted']:.1f}" if w else "-",
                fmt(r["commits_per_task"], 2),
                fmt(r["wal_bytes_per_task"], 0),
            ]
        )
    rows += error_rows(results, len(columns))
    ctx.console.print(
        table(
            f"cost ({ctx.label}): per-task CPU, memory and Postgres writes "
            "(WAL and postgres CPU are server-wide)",
            columns,
            rows,
        )
    )
    write_json(ctx, "cost", results)
    plt = pyplot()
    names = [n for n, r in results.items() if "error" not in r]
    if not names:
        return
    fig, ax = plt.subplots(figsize=(8, 4))
    parts = ["workers", "server", "postgres", "client_enqueue"]
    bottoms = [0.0] * len(names)
    for part in parts:
        values = [results[n]["cpu_s_per_1k"][part] for n in names]
        ax.bar(names, values, bottom=bottoms, label=part)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    ax.set_ylabel("CPU seconds per 1,000 tasks")
    ax.set_title(f"CPU per 1,000 no-op tasks ({ctx.label})")
    ax.legend()
    save(fig, ctx, "cost-cpu")


SCENARIO = register(
    Scenario(
        name="cost",
        description="CPU s per 1k tasks, peak RSS, Postgres rows and WAL bytes per task",
        run=run,
        report=report,
        order=30,
    )
)
