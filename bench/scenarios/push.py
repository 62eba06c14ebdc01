"""push (Stoker only): HTTP push workers against stream workers, same no-op task.

One stream worker and one HTTP push worker (an ASGI app behind uvicorn, one process),
each with ``PUSH_SLOTS`` slots, serve a no-op task each. Measured:

* **Latency**: ``PUSH_RUNS`` runs of each, one at a time and interleaved (so drift in the
  machine's load hits both alike), from the trigger to the result in the caller; p50 and
  p90 of each.
* **Throughput**: ``PUSH_BURST`` runs of each enqueued at once (``run_many``), then
  awaited; runs per second from the first enqueue to the last result.

A push attempt costs an HTTP request per attempt (signed, JSON both ways) where a stream
attempt is a message on an open stream; both go through the same scheduler and
dispatcher.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import Any

from bench.config import Context
from bench.measure import percentile
from bench.report import error_rows, fmt, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.systems import Proc, System, python, spawn, stop_procs
from stoker import Stoker, UnknownTaskError

PUSH_RUNS = {"quick": 200, "full": 1_000}
PUSH_BURST = {"quick": 2_000, "full": 10_000}
PUSH_SLOTS = 50
TIMEOUT_S = 600.0
SECRET = "bench-push-secret-" + os.urandom(8).hex()
TASKS = {"stream": "bench_stream_noop", "push": "bench_push_noop"}


async def _noop(input: dict[str, Any], ctx: Any) -> int:
    """The tasks' declaration on the caller's side (the workers run their own)."""
    return 1


def _size(ctx: Context, key: str, sizes: dict[str, int]) -> int:
    return int(ctx.overrides.get(key, sizes.get(ctx.profile.name, sizes["quick"])))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start(system: System) -> tuple[list[Proc], Stoker]:
    env = system.worker_env()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    push_env = {**env, "PUSH_URL": url, "PUSH_SECRET": SECRET, "PUSH_SLOTS": str(PUSH_SLOTS)}
    uvicorn = [
        python(), "-m", "uvicorn", "bench.scenarios.push_app:worker",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    procs = [
        spawn(
            "push-stream",
            [python(), "-m", "bench.scenarios.push_app", "push-stream", str(PUSH_SLOTS)],
            env,
            system.log_dir,
        ),
        spawn("push-uvicorn", uvicorn, push_env, system.log_dir),
    ]
    app = Stoker(address=env["STOKER_ADDRESS"], token=env["STOKER_TOKEN"])
    for name in TASKS.values():
        app.task(name=name)(_noop)
    # Warm up: both workers registered (the endpoint attached by the engine), connections
    # open.
    deadline = time.monotonic() + 60
    for name in TASKS.values():
        while True:
            try:
                await asyncio.wait_for(app.aio_run(name, {}), 30)
                break
            except (UnknownTaskError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    return procs, app


async def _latency(app: Stoker, runs: int) -> Result:
    took: dict[str, list[float]] = {kind: [] for kind in TASKS}
    for _ in range(runs):
        for kind, name in TASKS.items():
            start = time.perf_counter()
            await app.aio_run(name, {})
            took[kind].append((time.perf_counter() - start) * 1000)
    out: Result = {"runs": runs}
    for kind, values in took.items():
        out[f"{kind}_p50_ms"] = percentile(values, 50)
        out[f"{kind}_p90_ms"] = percentile(values, 90)
    return out


async def _throughput(app: Stoker, kind: str, burst: int) -> Result:
    started = time.perf_counter()
    refs = await app.tasks[TASKS[kind]].aio_run_many([{}] * burst)
    for ref in refs:
        await ref.aio_result(timeout=TIMEOUT_S)
    seconds = time.perf_counter() - started
    return {"kind": kind, "runs": burst, "seconds": seconds, "runs_per_s": burst / seconds}


async def run_push(system: System, ctx: Context) -> Result:
    out: Result = {"config": {**system.describe(), "slots": PUSH_SLOTS}}
    procs, app = await _start(system)
    try:
        out["latency"] = await _latency(app, _size(ctx, "push_runs", PUSH_RUNS))
        burst = _size(ctx, "push_burst", PUSH_BURST)
        out["throughput"] = [await _throughput(app, kind, burst) for kind in TASKS]
    finally:
        app.close()
        stop_procs(procs)
    return out


def report_push(results: dict[str, Result], ctx: Context) -> None:
    columns = [
        "system",
        "latency p50 ms: stream / push",
        "latency p90 ms: stream / push",
        "runs/s: stream",
        "runs/s: push",
    ]
    rows: list[list[Any]] = []
    for name, r in results.items():
        if "error" in r:
            continue
        lat, tp = r["latency"], r["throughput"]
        rows.append(
            [
                name,
                f"{fmt(lat['stream_p50_ms'])} / {fmt(lat['push_p50_ms'])}",
                f"{fmt(lat['stream_p90_ms'])} / {fmt(lat['push_p90_ms'])}",
                fmt(tp[0]["runs_per_s"]),
                fmt(tp[1]["runs_per_s"]),
            ]
        )
    rows += error_rows(results, len(columns))
    ctx.console.print(table(f"push ({ctx.label}): HTTP push vs stream workers", columns, rows))
    write_json(ctx, "push", results)


PUSH = register(
    Scenario(
        name="push",
        description="HTTP push workers vs stream workers: latency p50 and throughput",
        run=run_push,
        report=report_push,
        stoker_only=True,
        order=88,
    )
)
