"""durable_events (Stoker only): event-to-resume latency of ``ctx.wait_for_event``.

A durable task waits for an event on its own key; once its wait is recorded (a pending
entry in its log, read from Postgres), the harness stamps the time and pushes the event;
the task stamps the time it resumed (the wait returned) and returns it. The latency is
resume minus push, both wall clocks of this machine: the push call, the ingest transaction
that settles the wait, the delivery of the settled entry to the worker and the release of
the body. Measured one wait at a time (``light``), then with ``DURABLE_WAITERS`` tasks
waiting at once and their events pushed one after another (``loaded``).

:func:`event_to_resume` is the measurement; the ``durable`` scenario may call it too.
``python -m bench.scenarios.durable_events NAME`` runs the worker process.
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
from stoker import DurableContext, Stoker

ONE_AT_A_TIME = {"quick": 50, "full": 300}
DURABLE_WAITERS = {"quick": 100, "full": 1_000}

PENDING = """
SELECT t.external_id::text AS run_id
FROM stoker.durable_entry e
JOIN stoker.task t ON t.id = e.task_id
WHERE t.external_id = ANY(%s::uuid[]) AND e.status = 'pending'
"""


def declare(app: Stoker) -> Stoker:
    """Puts the waiting durable task on ``app``."""

    @app.durable_task(name="bench_await_event")
    async def await_event(input: dict[str, str], ctx: DurableContext) -> float:
        await ctx.wait_for_event(input["key"])
        return time.time()

    return app


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _recorded(db_url: str, run_ids: list[str], timeout: float = 60) -> None:
    """Returns once every run's wait is recorded (pending in its log)."""
    deadline = time.monotonic() + timeout
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            cur = await conn.execute(PENDING, (run_ids,))
            if len(await cur.fetchall()) >= len(run_ids):
                return
            await asyncio.sleep(0.005)
    raise TimeoutError(f"{len(run_ids)} waits were not recorded within {timeout:g}s")


async def _measure(app: Stoker, db_url: str, count: int, waiting: int) -> list[float]:
    """Latencies (ms) of ``count`` waits, ``waiting`` tasks waiting at a time."""
    task = app.tasks["bench_await_event"]
    latencies: list[float] = []
    done = 0
    while done < count:
        batch = min(waiting, count - done)
        keys = [f"bench:{uuid.uuid4().hex}" for _ in range(batch)]
        refs = [await task.aio_run_no_wait({"key": k}) for k in keys]
        await _recorded(db_url, [r.run_id for r in refs])
        pushed: list[float] = []
        for k in keys:
            pushed.append(time.time())
            await app.events.aio_push(k, {})
        for ref, at in zip(refs, pushed, strict=True):
            resumed = float(await ref.aio_result(timeout=120))
            latencies.append((resumed - at) * 1000)
        done += batch
    return latencies


async def event_to_resume(
    system: System, ctx: Context, *, one_at_a_time: int | None = None, waiters: int | None = None
) -> Result:
    """Event-to-resume latency on ``system`` (Stoker): p50/p99 one wait at a time and with
    ``waiters`` tasks waiting at once, through one worker process with enough durable
    slots."""
    n = one_at_a_time or ONE_AT_A_TIME.get(ctx.profile.name, 50)
    loaded = waiters or DURABLE_WAITERS.get(ctx.profile.name, 100)
    env = {**system.worker_env(), "BENCH_DURABLE_SLOTS": str(loaded + 10)}
    proc: Proc = spawn(
        "durable-events", [python(), "-m", "bench.scenarios.durable_events", "durable-events"],
        env, system.log_dir,
    )  # fmt: skip
    try:
        app = declare(Stoker(address=env["STOKER_ADDRESS"], token=env["STOKER_TOKEN"]))
        await _measure(app, system.db_url, 3, 1)  # warm up: registration, plans
        light = await _measure(app, system.db_url, n, 1)
        heavy = await _measure(app, system.db_url, loaded, loaded)
    finally:
        stop_procs([proc])
    return {
        "config": system.describe(),
        "light": {"waits": n, "p50_ms": _pct(light, 0.5), "p99_ms": _pct(light, 0.99)},
        "loaded": {"waits": loaded, "p50_ms": _pct(heavy, 0.5), "p99_ms": _pct(heavy, 0.99)},
    }


def report(results: dict[str, Result], ctx: Context) -> None:
    columns = ["system", "one at a time p50 / p99 ms", "waiting at once", "p50 / p99 ms"]
    rows: list[list[Any]] = [
        [
            name,
            f"{fmt(r['light']['p50_ms'])} / {fmt(r['light']['p99_ms'])}",
            f"{r['loaded']['waits']:,}",
            f"{fmt(r['loaded']['p50_ms'])} / {fmt(r['loaded']['p99_ms'])}",
        ]
        for name, r in results.items()
        if "error" not in r
    ]
    rows += error_rows(results, len(columns))
    title = f"durable_events ({ctx.label}): event pushed -> durable task resumed"
    ctx.console.print(table(title, columns, rows))
    write_json(ctx, "durable_events", results)


DURABLE_EVENTS = register(
    Scenario(
        name="durable_events",
        description="event-to-resume latency of a durable task's wait_for_event",
        run=event_to_resume,
        report=report,
        stoker_only=True,
        order=85,
    )
)


app = declare(Stoker())
"""The worker's app (``stoker worker bench.scenarios.durable_events:app`` works too)."""


def _work(name: str) -> None:
    slots = int(os.environ.get("BENCH_DURABLE_SLOTS", "100"))
    app.worker(name, slots=1, durable_slots=slots).start()


if __name__ == "__main__":
    _work(sys.argv[1] if len(sys.argv) > 1 else "durable-events")
