"""soak (Stoker only): is the engine's memory flat over a long steady run?

Workers are started and warmed up, then the steady scenario's open-loop producer sends
``soak_rate`` tasks per second for ``soak_seconds`` (full: 500/s for 10 minutes; quick:
200/s for 20 s) while the resident memory (RSS) of the engine and of the worker processes
is sampled every two seconds. Reported: RSS at the start (after the first tenth, once
caches, pools and plans are warm), at the end and at its peak, and the slope of a
least-squares line through the second half of the samples in MB per minute — about zero
when nothing grows (log capture, buffers, caches, per-run state). PNG: RSS over time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.config import Context
from bench.measure import rss_bytes
from bench.report import error_rows, fmt, pyplot, save, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.scenarios.common import wait_done
from bench.scenarios.steady import produce
from bench.systems import System

SAMPLE_S = 2.0
WARMUP_TASKS = 200
BASE = 500_000_000
SECONDS = {"quick": 20.0, "full": 600.0}
RATES = {"quick": 200, "full": 500}


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) points, in MB per minute (0 for < 2 points)."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mx = sum(t for t, _ in samples) / n
    my = sum(m for _, m in samples) / n
    var = sum((t - mx) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    return sum((t - mx) * (m - my) for t, m in samples) / var * 60


def summarize(series: list[tuple[float, float]]) -> dict[str, float]:
    """Start (after the first tenth), end, peak and second-half slope of an RSS series."""
    if not series:
        return {"start_mb": 0.0, "end_mb": 0.0, "peak_mb": 0.0, "slope_mb_per_min": 0.0}
    warm = series[len(series) // 10 :] or series
    half = series[len(series) // 2 :]
    return {
        "start_mb": warm[0][1],
        "end_mb": series[-1][1],
        "peak_mb": max(m for _, m in series),
        "slope_mb_per_min": slope_mb_per_min(half),
    }


async def run(system: System, ctx: Context) -> Result:
    seconds = float(ctx.overrides.get("soak_seconds", SECONDS.get(ctx.profile.name, 20.0)))
    rate = int(ctx.overrides.get("soak_rate", RATES.get(ctx.profile.name, 200)))
    directory = ctx.scratch(system.name, "soak")
    system.start_workers(directory)
    series: dict[str, list[tuple[float, float]]] = {"engine": [], "workers": []}
    try:
        await system.enqueue_bulk(range(BASE - WARMUP_TASKS, BASE))
        await wait_done(system, directory, WARMUP_TASKS)
        t0 = time.monotonic()

        async def sample() -> None:
            while True:
                now = time.monotonic() - t0
                engine = await asyncio.to_thread(rss_bytes, system.server_pids())
                workers = await asyncio.to_thread(rss_bytes, system.worker_pids())
                series["engine"].append((now, engine / 2**20))
                series["workers"].append((now, workers / 2**20))
                await asyncio.sleep(SAMPLE_S)

        sampler = asyncio.create_task(sample())
        try:
            calls, achieved, errors = await produce(system, rate, seconds, BASE)
            await asyncio.wait_for(wait_done(system, directory, WARMUP_TASKS + len(calls)), 60)
        finally:
            sampler.cancel()
    finally:
        await system.stop_workers()
    out: dict[str, Any] = {
        "rate": rate,
        "seconds": seconds,
        "achieved_rate": achieved,
        "sent": len(calls),
        "errors": len(errors),
        "samples": {k: [[round(t, 1), round(m, 2)] for t, m in v] for k, v in series.items()},
        "config": system.describe(),
    }
    for name, points in series.items():
        out[name] = summarize(points)
    return out


def report(results: dict[str, Result], ctx: Context) -> None:
    columns = ["system", "load", "process", "start MB", "end MB", "peak MB",
               "slope MB/min (2nd half)"]  # fmt: skip
    rows: list[list[str]] = []
    for name, r in results.items():
        if "error" in r:
            continue
        for proc in ("engine", "workers"):
            s = r[proc]
            rows.append(
                [name, f"{r['rate']}/s for {r['seconds']:.0f} s", proc, fmt(s["start_mb"], 1),
                 fmt(s["end_mb"], 1), fmt(s["peak_mb"], 1), f"{s['slope_mb_per_min']:+.2f}"]
            )  # fmt: skip
    rows += error_rows(results, len(columns))
    ctx.console.print(table(f"soak ({ctx.label}): memory over a steady run", columns, rows))
    write_json(ctx, "soak", results)
    plt = pyplot()
    names = [n for n, r in results.items() if "error" not in r]
    if not names:
        return
    fig, ax = plt.subplots(figsize=(8, 4))
    for n in names:
        for proc in ("engine", "workers"):
            pts = results[n]["samples"][proc]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"{n} {proc}")
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS MB")
    ax.set_title(f"memory during a steady run ({ctx.label})")
    ax.legend()
    save(fig, ctx, "soak-rss")


SCENARIO = register(
    Scenario(
        name="soak",
        description="engine and worker memory over a long steady run (flat or growing?)",
        run=run,
        report=report,
        stoker_only=True,
        order=90,
    )
)
