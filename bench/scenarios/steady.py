"""steady: an open-loop producer at fixed rates; start and end-to-end latency.

The producer fires one ``enqueue_one`` call per tick of a fixed schedule and never waits
for one call before starting the next (open loop: a slow system cannot slow the arrival
rate down and hide its own latency). For each task it notes when the trigger call began
and when it returned; the worker notes when the body started and ended. Then

- start latency = body start - trigger call returned,
- end-to-end latency = body end - trigger call began (the no-op returns at once, so this
  is the latency of a task's whole trip; systems differ in when a result is *stored*,
  which the drain scenario's "acknowledged" rate covers).

A rate is *held* when the producer achieved it (within 5%), the backlog (sent minus
finished) at the end of the phase is under one second's worth, and every task finished
within 10 s after the last one was sent. The full profile then searches upward for the
highest rate held.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.config import Context
from bench.measure import completed, read_rows, summarize_ms
from bench.report import error_rows, fmt, pyplot, save, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.scenarios.common import wait_done
from bench.systems import System

MAX_IN_FLIGHT = 2_000
"""Trigger calls outstanding at once before the producer counts itself overloaded."""
SETTLE_S = 10.0
WARMUP_TASKS = 20
WARMUP_BASE = 900_000_000
PHASE_STRIDE = 1_000_000


async def produce(
    system: System, rate: float, seconds: float, base: int
) -> tuple[dict[int, tuple[int, int]], float, list[BaseException]]:
    """Sends ``rate * seconds`` tasks on a fixed schedule; returns per-seq call times."""
    count = int(rate * seconds)
    calls: dict[int, tuple[int, int]] = {}
    errors: list[BaseException] = []
    in_flight: set[asyncio.Task[None]] = set()

    async def one(seq: int) -> None:
        began = time.time_ns()
        try:
            await system.enqueue_one(seq)
        except Exception as exc:
            errors.append(exc)
            return
        calls[seq] = (began, time.time_ns())

    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif i % 50 == 0:
            await asyncio.sleep(0)  # behind schedule: still let the calls make progress
        while len(in_flight) >= MAX_IN_FLIGHT:
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.create_task(one(base + i))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    send_s = time.monotonic() - start
    if in_flight:
        await asyncio.gather(*in_flight)
    return calls, count / send_s if send_s > 0 else float(count), errors


async def phase(system: System, directory: Path, rate: int, seconds: float, base: int) -> Result:
    """One rate for ``seconds``: produce, watch the backlog, then measure latencies."""
    done_before = completed(directory)
    backlog: list[tuple[float, int]] = []
    sent = {"n": 0}
    t0 = time.monotonic()

    async def watch() -> None:
        while True:
            await asyncio.sleep(0.25)
            done = completed(directory) - done_before
            backlog.append((time.monotonic() - t0, max(0, sent["n"] - done)))

    watcher = asyncio.create_task(watch())
    producer = asyncio.create_task(produce(system, rate, seconds, base))
    # The sent count for the backlog is the schedule's (open loop), so track it by time.
    while not producer.done():
        sent["n"] = min(int((time.monotonic() - t0) * rate), int(rate * seconds))
        await asyncio.sleep(0.05)
    calls, achieved, errors = producer.result()
    sent["n"] = len(calls)
    end_backlog = max(0, len(calls) - (completed(directory) - done_before))
    finished_in_time = True
    try:
        await asyncio.wait_for(wait_done(system, directory, done_before + len(calls)), SETTLE_S)
    except TimeoutError:
        finished_in_time = False
    watcher.cancel()
    rows = [r for r in read_rows(directory) if base <= r.seq < base + int(rate * seconds)]
    first: dict[int, Any] = {}
    for row in rows:
        if row.seq not in first or row.start_ns < first[row.seq].start_ns:
            first[row.seq] = row
    start_ns = [first[s].start_ns - calls[s][1] for s in first if s in calls]
    e2e_ns = [first[s].end_ns - calls[s][0] for s in first if s in calls]
    call_ns = [ret - began for began, ret in calls.values()]
    held = (
        achieved >= 0.95 * rate
        and end_backlog <= rate
        and finished_in_time
        and not errors
        and len(first) == len(calls)
    )
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": len(calls),
        "send_errors": len(errors),
        "first_error": repr(errors[0]) if errors else None,
        "achieved_rate": achieved,
        "completed": len(first),
        "duplicates": len(rows) - len(first),
        "backlog_at_end": end_backlog,
        "max_backlog": max((b for _, b in backlog), default=0),
        "held": held,
        "trigger_call_ms": summarize_ms(call_ns),
        "start_latency_ms": summarize_ms(start_ns),
        "end_to_end_ms": summarize_ms(e2e_ns),
        "_start_ns": start_ns,
        "_backlog": backlog,
    }


async def run(system: System, ctx: Context) -> Result:
    directory = ctx.scratch(system.name, "steady")
    system.start_workers(directory)
    phases: list[Result] = []
    try:
        # Warm-up: the workers are connected and have run a task before timing starts.
        await system.enqueue_bulk(range(WARMUP_BASE, WARMUP_BASE + WARMUP_TASKS))
        await wait_done(system, directory, WARMUP_TASKS)
        base = 0
        for rate in ctx.size("steady_rates"):
            phases.append(await phase(system, directory, rate, ctx.size("steady_seconds"), base))
            base += PHASE_STRIDE
        search = list(ctx.size("search_rates"))
        best = max((p["rate"] for p in phases if p["held"]), default=None)
        failed: int | None = None
        for rate in search:
            if best is not None and rate <= best:
                continue
            p = await phase(system, directory, rate, ctx.size("search_seconds"), base)
            base += PHASE_STRIDE
            p["search"] = True
            phases.append(p)
            if not p["held"]:
                failed = rate
                break
            best = rate
        if search and best is not None and failed is not None and failed > best * 1.2:
            # One bisection step between the last held and the first failed rate.
            mid = (best + failed) // 2
            p = await phase(system, directory, mid, ctx.size("search_seconds"), base)
            p["search"] = True
            phases.append(p)
            if p["held"]:
                best = mid
    finally:
        await system.stop_workers()
    return {
        "phases": phases,
        "max_held_rate": best if search else None,
        "config": system.describe(),
    }


def report(results: dict[str, Result], ctx: Context) -> None:
    columns = [
        "system",
        "rate/s",
        "sent",
        "held",
        "start p50",
        "p95",
        "p99",
        "e2e p50",
        "p95",
        "p99",
        "max backlog",
    ]
    rows: list[list[str]] = []
    for name, r in results.items():
        for p in r.get("phases", []):
            s, e = p["start_latency_ms"], p["end_to_end_ms"]
            rows.append(
                [
                    name,
                    f"{p['rate']:,}" + (" (search)" if p.get("search") else ""),
                    f"{p['completed']:,}/{p['sent']:,}",
                    "yes" if p["held"] else "[red]no[/red]",
                    fmt(s["p50"], 2),
                    fmt(s["p95"], 2),
                    fmt(s["p99"], 2),
                    fmt(e["p50"], 2),
                    fmt(e["p95"], 2),
                    fmt(e["p99"], 2),
                    f"{p['max_backlog']:,}",
                ]
            )
        if r.get("max_held_rate") is not None:
            rows.append([name, f"max held: {r['max_held_rate']:,}/s", *[""] * 9])
    rows += error_rows(results, len(columns))
    ctx.console.print(
        table(f"steady ({ctx.label}): open-loop producer, latency in ms", columns, rows)
    )
    write_json(ctx, "steady", results)
    plt = pyplot()
    rates = sorted({p["rate"] for r in results.values() for p in r.get("phases", [])})
    for rate in rates:
        fig, (cdf, growth) = plt.subplots(1, 2, figsize=(11, 4))
        for name, r in results.items():
            for p in r.get("phases", []):
                if p["rate"] != rate or not p["_start_ns"]:
                    continue
                values = sorted(v / 1e6 for v in p["_start_ns"])
                ys = [(i + 1) / len(values) for i in range(len(values))]
                cdf.plot(values, ys, label=name)
                growth.plot(*zip(*p["_backlog"], strict=True), label=name)
        cdf.set_xscale("log")
        cdf.set_xlabel("start latency (ms, log scale)")
        cdf.set_ylabel("fraction of tasks")
        cdf.set_title(f"start latency CDF at {rate:,}/s")
        growth.set_xlabel("seconds")
        growth.set_ylabel("tasks sent but not finished")
        growth.set_title(f"backlog at {rate:,}/s")
        for ax in (cdf, growth):
            ax.grid(alpha=0.3)
            ax.legend()
        save(fig, ctx, f"steady-{rate}")


SCENARIO = register(
    Scenario(
        name="steady",
        description="open-loop producer at fixed rates; start and end-to-end latency",
        run=run,
        report=report,
        order=20,
    )
)
