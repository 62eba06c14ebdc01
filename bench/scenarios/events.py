"""events (Stoker only): push-to-start latency of event-triggered runs, and events pushed
per second in bulk.

A worker process serves three tasks subscribed to the same key (``on_events``); each
returns the wall-clock time its body started. One event is pushed at a time; its latency
is each run's start minus the moment before the push call (this machine's clock): the push
call, the ingest transaction that stores the event and its three runs, the scheduler's
assignment and the worker's start. Reported per run and for the last of the three, beside the same
measurement for a run triggered directly (``aio_run_no_wait``) at the same moment. Then
``bulk_events`` events are pushed with ``aio_bulk_push`` (1,000 per call, each call one
transaction): to a key nothing subscribes to (the ingest alone) and to a key one task
subscribes to (a run per event), as events per second. The engine's target: push-to-start
p50 ≤ 5 ms with three subscribers.

``python -m bench.scenarios.events NAME`` runs the worker process.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from bench.config import Context
from bench.measure import percentile
from bench.report import error_rows, fmt, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.systems import Proc, System, python, spawn, stop_procs
from stoker import Context as TaskContext
from stoker import Stoker

PUSHES = {"quick": 200, "full": 1_000}
BULK_EVENTS = {"quick": 10_000, "full": 50_000}
KEY = "bench:order:created"
BULK_KEY = "bench:bulk:one"
IDLE_KEY = "bench:bulk:none"


def declare(app: Stoker) -> Stoker:
    """Three subscribers of KEY, one of BULK_KEY."""
    for name in ("bench_ev_a", "bench_ev_b", "bench_ev_c"):

        @app.task(name=name, on_events=[KEY])
        async def started(input: dict[str, Any], ctx: TaskContext) -> float:
            return time.time()

    @app.task(name="bench_ev_bulk", on_events=[BULK_KEY])
    async def bulk(input: dict[str, Any], ctx: TaskContext) -> None:
        return None

    return app


async def _subscribed(app: Stoker, timeout: float = 60) -> None:
    """Returns once an event on KEY starts its three runs (the worker registered)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pushed = await app.events.aio_push(KEY, {"warm": True})
        for ref in pushed.runs:
            await ref.aio_result(timeout=60)
        if len(pushed.run_ids) == 3:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("the subscribers were not registered in time")


async def _push_to_start(app: Stoker, n: int) -> dict[str, Any]:
    each: list[float] = []
    last: list[float] = []
    spread: list[float] = []
    for i in range(n):
        at = time.time()
        pushed = await app.events.aio_push(KEY, {"i": i})
        starts = [float(await r.aio_result(timeout=60)) for r in pushed.runs]
        ms = [(s - at) * 1000 for s in starts]
        each += ms
        last.append(max(ms))
        spread.append(max(ms) - min(ms))
    return {
        "pushes": n,
        "runs": len(each),
        "p50_ms": percentile(each, 50),
        "p99_ms": percentile(each, 99),
        "all_three_p50_ms": percentile(last, 50),
        "all_three_p99_ms": percentile(last, 99),
        "spread_p50_ms": percentile(spread, 50),
    }


async def _trigger_to_start(app: Stoker, n: int) -> dict[str, Any]:
    """The same measurement for one run triggered directly (``aio_run_no_wait``): what the
    event path costs beyond it, on the same machine at the same moment."""
    task = app.tasks["bench_ev_a"]
    each: list[float] = []
    for i in range(n):
        at = time.time()
        ref = await task.aio_run_no_wait({"i": i})
        each.append((float(await ref.aio_result(timeout=60)) - at) * 1000)
    return {"runs": n, "p50_ms": percentile(each, 50), "p99_ms": percentile(each, 99)}


async def _bulk(app: Stoker, key: str, n: int) -> dict[str, Any]:
    events = [(key, {"i": i}) for i in range(n)]
    t0 = time.perf_counter()
    pushed = await app.events.aio_bulk_push(events)
    took = time.perf_counter() - t0
    return {
        "events": n,
        "runs": sum(len(p.run_ids) for p in pushed),
        "seconds": took,
        "events_per_s": n / took,
    }


async def run(system: System, ctx: Context) -> Result:
    n = int(ctx.overrides.get("event_pushes", PUSHES.get(ctx.profile.name, 200)))
    bulk_n = int(ctx.overrides.get("bulk_events", BULK_EVENTS.get(ctx.profile.name, 10_000)))
    env = system.worker_env()
    proc: Proc = spawn(
        "events", [python(), "-m", "bench.scenarios.events", "events"], env, system.log_dir
    )
    try:
        app = declare(Stoker(address=env["STOKER_ADDRESS"], token=env["STOKER_TOKEN"]))
        await _subscribed(app)
        latency = await _push_to_start(app, n)
        direct = await _trigger_to_start(app, n)
    finally:
        stop_procs([proc])
    # No worker from here: only the pushes are timed.
    bulk_none = await _bulk(app, IDLE_KEY, bulk_n)
    bulk_one = await _bulk(app, BULK_KEY, bulk_n)
    await system.reset()
    return {
        "config": system.describe(),
        "push_to_start": latency,
        "trigger_to_start": direct,
        "bulk_no_subscriber": bulk_none,
        "bulk_one_subscriber": bulk_one,
    }


def report(results: dict[str, Result], ctx: Context) -> None:
    columns = ["system", "pushes", "start p50 / p99 ms (each run)",
               "all three started p50 / p99 ms", "direct trigger p50 / p99 ms",
               "bulk events/s (no subscriber)",
               "bulk events/s (one run each)"]  # fmt: skip
    rows: list[list[Any]] = []
    for name, r in results.items():
        if "error" in r:
            continue
        p, d = r["push_to_start"], r["trigger_to_start"]
        rows.append(
            [name, f"{p['pushes']:,}", f"{fmt(p['p50_ms'], 2)} / {fmt(p['p99_ms'], 2)}",
             f"{fmt(p['all_three_p50_ms'], 2)} / {fmt(p['all_three_p99_ms'], 2)}",
             f"{fmt(d['p50_ms'], 2)} / {fmt(d['p99_ms'], 2)}",
             fmt(r["bulk_no_subscriber"]["events_per_s"]),
             fmt(r["bulk_one_subscriber"]["events_per_s"])]
        )  # fmt: skip
    rows += error_rows(results, len(columns))
    title = f"events ({ctx.label}): push -> start of 3 subscribers, and bulk pushes"
    ctx.console.print(table(title, columns, rows))
    write_json(ctx, "events", results)


SCENARIO = register(
    Scenario(
        name="events",
        description="push-to-start latency with 3 subscribers (p50 ≤ 5 ms), bulk events/s",
        run=run,
        report=report,
        stoker_only=True,
        order=86,
    )
)


app = declare(Stoker())
"""The worker's app."""


def _work(name: str) -> None:
    app.worker(name, slots=30).start()


if __name__ == "__main__":
    _work(sys.argv[1] if len(sys.argv) > 1 else "events")
