"""observe (Stoker only): the cost of task logging, and the latency of stream chunks.

**Logging cost.** Tasks are offered at ``RATE`` a second (a batch every 100 ms) for
``SECONDS``, through one worker process, twice: tasks that do nothing, and tasks that log
``LINES`` lines each with ``ctx.log``. A round's drain rate is its tasks over the time from
the first one created to the last one finished (the engine's ``created_at`` and
``finished_at``): the offered rate when the system keeps up, less when it falls behind.
The ratio of the two rates is the cost of logging (target >= 0.8 at 100 lines a task and
1,000 tasks/s). The logging round also reports how many lines were stored.

**Stream latency.** One task publishes ``CHUNKS`` chunks 5 ms apart, each carrying the
wall-clock time it was put; a reader on the same machine (``ref.stream()``, over gRPC)
stamps each on arrival. Put to arrival: the worker's send loop, the engine's stream
writer (a transaction with its NOTIFY), the wake-up of the reader and the gRPC reply.
Target p50 <= 5 ms.

``python -m bench.scenarios.observe NAME`` runs the worker process.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from typing import Any

import psycopg

from bench.config import Context
from bench.report import error_rows, fmt, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.systems import Proc, System, python, spawn, stop_procs
from stoker import Context as TaskContext
from stoker import Stoker

LINES = 100
RATE = 1_000
"""Tasks offered per second, in batches every 100 ms."""
SECONDS = {"quick": 5, "full": 30}
CHUNKS = {"quick": 200, "full": 1_000}
SLOTS = 200

ROUND = """
SELECT count(*) FILTER (WHERE status = 'COMPLETED') AS done,
       min(created_at) AS first_created, max(finished_at) AS last_end
FROM stoker.all_tasks
WHERE additional_metadata @> %s::jsonb
"""

LOG_LINES = """
SELECT count(*), max(created_at) FROM stoker.task_log
WHERE task_run_id = ANY(SELECT external_id FROM stoker.all_tasks
                        WHERE additional_metadata @> %s::jsonb)
"""


def declare(app: Stoker) -> Stoker:
    """Puts the benchmark's tasks on ``app``."""

    @app.task(name="bench_quiet")
    async def quiet(input: dict[str, Any], ctx: TaskContext) -> None:
        return None

    @app.task(name="bench_chatty")
    async def chatty(input: dict[str, Any], ctx: TaskContext) -> None:
        for i in range(int(input["lines"])):
            ctx.log(f"line {i} of a chatty task")

    @app.task(name="bench_streamer")
    async def streamer(input: dict[str, Any], ctx: TaskContext) -> int:
        n = int(input["chunks"])
        for _ in range(n):
            ctx.put_stream(repr(time.time()))
            await asyncio.sleep(0.005)
        return n

    return app


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _round(app: Stoker, db_url: str, task: str, seconds: float, lines: int) -> dict[str, Any]:
    """Offers ``task`` at RATE a second for ``seconds``; the drain rate and, with lines,
    how many lines were stored."""
    tag = uuid.uuid4().hex
    md = f'{{"bench_round": "{tag}"}}'
    t = app.tasks[task]
    batch = RATE // 10
    n = int(RATE * seconds)
    start = time.monotonic()
    for i in range(0, n, batch):
        await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
        inputs = [{"lines": lines}] * min(batch, n - i)
        await t.aio_run_many(inputs, additional_metadata={"bench_round": tag})
    offered_s = time.monotonic() - start
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        deadline = time.monotonic() + 300
        while True:
            row = await (await conn.execute(ROUND, (md,))).fetchone()
            assert row is not None
            if row[0] >= n or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        done, first, last = row
        out: dict[str, Any] = {"tasks": n, "completed": done, "offered_per_s": n / offered_s}
        span = (last - first).total_seconds() if first and last else float("nan")
        out["drain_per_s"] = done / span if span > 0 else float("nan")
        if lines:
            want = n * lines
            while True:
                found = await (await conn.execute(LOG_LINES, (md,))).fetchone()
                assert found is not None
                stored, stored_at = found
                if stored >= want or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            out["lines_stored"] = stored
            out["lines_stored_after_last_end_s"] = (
                (stored_at - last).total_seconds() if stored_at and last else float("nan")
            )
    return out


async def _stream_latency(app: Stoker, chunks: int) -> list[float]:
    ref = await app.tasks["bench_streamer"].aio_run_no_wait({"chunks": chunks})
    latencies: list[float] = []
    async for chunk in ref.stream():
        latencies.append((time.time() - float(chunk)) * 1000)
    await ref.aio_result(timeout=60)
    return latencies


async def run(system: System, ctx: Context) -> Result:
    seconds = SECONDS.get(ctx.profile.name, 5)
    chunks = CHUNKS.get(ctx.profile.name, 200)
    env = system.worker_env()
    proc: Proc = spawn(
        "observe", [python(), "-m", "bench.scenarios.observe", "observe"], env, system.log_dir
    )
    try:
        app = declare(Stoker(address=env["STOKER_ADDRESS"], token=env["STOKER_TOKEN"]))
        # The stream first, on an idle engine; then the two rounds.
        await _stream_latency(app, 20)  # warm up
        latencies = await _stream_latency(app, chunks)
        await _round(app, system.db_url, "bench_chatty", 0.3, LINES)  # warm up
        quiet = await _round(app, system.db_url, "bench_quiet", seconds, 0)
        chatty = await _round(app, system.db_url, "bench_chatty", seconds, LINES)
    finally:
        stop_procs([proc])
    return {
        "config": system.describe(),
        "quiet": quiet,
        "chatty": chatty,
        "lines_per_task": LINES,
        "drain_ratio": chatty["drain_per_s"] / quiet["drain_per_s"],
        "stream": {
            "chunks": len(latencies),
            "p50_ms": _pct(latencies, 0.5),
            "p99_ms": _pct(latencies, 0.99),
        },
    }


def report(results: dict[str, Result], ctx: Context) -> None:
    columns = [
        "system", "tasks", "no logs tasks/s", f"{LINES} lines tasks/s", "ratio",
        "lines stored", "stream chunks", "chunk p50 / p99 ms",
    ]  # fmt: skip
    rows: list[list[Any]] = [
        [
            name,
            f"{r['quiet']['tasks']:,}",
            fmt(r["quiet"]["drain_per_s"]),
            fmt(r["chatty"]["drain_per_s"]),
            f"{r['drain_ratio']:.2f}",
            f"{r['chatty']['lines_stored']:,}",
            f"{r['stream']['chunks']:,}",
            f"{fmt(r['stream']['p50_ms'])} / {fmt(r['stream']['p99_ms'])}",
        ]
        for name, r in results.items()
        if "error" not in r
    ]
    rows += error_rows(results, len(columns))
    title = f"observe ({ctx.label}): logging cost (drain ratio) and stream chunk latency"
    ctx.console.print(table(title, columns, rows))
    write_json(ctx, "observe", results)


OBSERVE = register(
    Scenario(
        name="observe",
        description="drain ratio with 100 log lines a task vs none; stream chunk latency",
        run=run,
        report=report,
        stoker_only=True,
        order=88,
    )
)


app = declare(Stoker())
"""The worker's app."""


def _work(name: str) -> None:
    app.worker(name, slots=SLOTS).start()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    _work(sys.argv[1] if len(sys.argv) > 1 else "observe")
