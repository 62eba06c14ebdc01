"""metrics (Stoker only): how long the engine takes to answer a Prometheus scrape when
10,000 task names have work queued.

A client declares ``scrape_tasks`` tasks (10,000 by default) and triggers one run of each
through the engine, with no worker serving them: every name then has a series in the
created counters and in each queue gauge read from Postgres. The figure is the wall time of
``GET /metrics`` as a scraper sees it (request to last byte), over ``SCRAPES`` scrapes
spaced past the engine's snapshot cache (``STOKER_METRICS_CACHE_S``, 1 s), so each one
reads Postgres as a real scrape every 15 s would. Target: under 100 ms. The same scrapes of
the engine with nothing declared, taken first in the same run, are the baseline: on a
shared machine the ratio says more than either figure.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import urllib.request
from typing import Any

from pydantic import BaseModel

from bench.config import Context
from bench.report import error_rows, fmt, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.systems import System
from stoker import Context as TaskContext
from stoker import Stoker
from stoker._proto import engine_pb2 as pb
from stoker._sdk.task import trigger_item

SCRAPES = 10
CACHE_S = 1.0
TARGET_MS = 100.0


class Empty(BaseModel):
    """The input of the scrape scenario's tasks."""


async def _noop(input: Empty, ctx: TaskContext) -> None:
    return None


async def _timed(url: str) -> tuple[float, bytes]:
    """One scrape after the engine's snapshot cache has expired."""
    await asyncio.sleep(CACHE_S + 0.1)
    return await asyncio.to_thread(_scrape, url)


def _scrape(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as resp:
        body = resp.read()
    return (time.perf_counter() - started) * 1000, body


async def run(system: System, ctx: Context) -> Result:
    n = int(ctx.overrides.get("scrape_tasks", 10_000))
    s: Any = system
    await system.reset()
    app = Stoker(address=s.address, token=s.token)
    try:
        url = f"http://127.0.0.1:{s.http_port}/metrics"
        baseline = [(await _timed(url))[0] for _ in range(SCRAPES)]
        tasks = [app.task(name=f"metrics_t{i:05d}")(_noop) for i in range(n)]
        for i in range(0, n, 500):
            await app.aio_register(tasks[i : i + 500])
        started = time.monotonic()
        # Through the SDK's call seam in requests of 1,000 runs (one trigger call per run
        # would time the client, not the engine).
        for i in range(0, n, 1000):
            items = [trigger_item(t.name, b"{}", {}) for t in tasks[i : i + 1000]]
            await app.connection.calls.aio_trigger(pb.TriggerRequest(items=items))
        enqueue_s = time.monotonic() - started
        deadline = time.monotonic() + 60
        while True:  # until the queue gauges list every name
            _, body = await asyncio.to_thread(_scrape, url)
            if body.count(b"\nstoker_queue_depth{") >= n or time.monotonic() > deadline:
                break
            await asyncio.sleep(CACHE_S)
        times: list[float] = []
        for _ in range(SCRAPES):
            ms, body = await _timed(url)
            times.append(ms)
        samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    finally:
        app.close()
        await system.reset()
    return {
        "task_names": n,
        "enqueue_s": enqueue_s,
        "scrapes": SCRAPES,
        "scrape_ms_p50": statistics.median(times),
        "scrape_ms_max": max(times),
        "scrape_ms": times,
        "baseline_ms_p50": statistics.median(baseline),
        "bytes": len(body),
        "samples": samples,
        "target_ms": TARGET_MS,
        "config": system.describe(),
    }


def report(results: dict[str, Result], ctx: Context) -> None:
    columns = [
        "system",
        "empty p50 ms",
        "task names",
        "samples",
        "bytes",
        "p50 ms",
        "max ms",
        f"< {TARGET_MS:.0f} ms",
    ]
    rows = [
        [
            name,
            fmt(r["baseline_ms_p50"]),
            f"{r['task_names']:,}",
            f"{r['samples']:,}",
            f"{r['bytes']:,}",
            fmt(r["scrape_ms_p50"]),
            fmt(r["scrape_ms_max"]),
            "yes" if r["scrape_ms_max"] < TARGET_MS else "no",
        ]
        for name, r in results.items()
        if "error" not in r
    ]
    rows += error_rows(results, len(columns))
    ctx.console.print(
        table(f"metrics ({ctx.label}): GET /metrics with many task names", columns, rows)
    )
    write_json(ctx, "metrics", results)


SCENARIO = register(
    Scenario(
        name="metrics",
        description="time to scrape /metrics with 10,000 task names queued",
        run=run,
        report=report,
        stoker_only=True,
        order=95,
    )
)
