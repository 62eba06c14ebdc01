"""durable (Stoker only): what durable execution costs.

* **Wake-up lateness**: ``durable_sleepers`` durable tasks sleep until deadlines spread
  over 2 s, far enough ahead that every task is asleep before the first one (the lead
  grows with the count; how many were asleep at the first deadline is reported); each
  reports when its body resumed, compared with the deadline the engine recorded
  (``durable_entry.wake_at``, from the database clock on the same host), for the tasks
  that were asleep before their deadline (on a machine too busy to start them all within
  the lead, the others are counted apart: they wake as soon as they ask). Reported
  p50/p99 after the deadline, and where it went: the start of the timer round that
  settled it (``satisfied_at``, its transaction's clock) after the deadline, and the body
  resuming after that (the round's statements and commit, the delivery of the settled
  entry to the worker). Targets (issue 12): p50 ≤ 20
  ms, p99 ≤ 100 ms at 1,000 sleeping tasks.
* **Replay cost**: a task records ``REPLAY_STEPS`` steps, fails at its next call, and is
  replayed (``app.runs.replay``); the replaying attempt reports when it reached that call,
  compared with its start (``task.started_at``, stamped by the worker): opening the log,
  fetching it and returning every recorded step. Target ≤ 50 ms for 100 steps.
* **Throughput and memory**: ``durable_tasks`` durable tasks of 3 steps and one 1 s sleep,
  enqueued at once; reported: tasks per second from the first enqueue to the last finish,
  and the peak RSS of the engine and of the durable worker processes.
* **Event to resume**: measured by :func:`bench.scenarios.durable_events.event_to_resume`
  (``async (system, ctx) -> dict``) when that module exists; absent, the row says so.

Eviction is not assumed: every sleeping task keeps its durable slot, so each worker process
gets ``DURABLE_SLOTS`` of them (enough for every sleeper at once).
"""

from __future__ import annotations

import asyncio
import importlib
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.config import Context
from bench.measure import PeakRss, percentile
from bench.report import error_rows, fmt, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.scenarios.durable_app import declare
from bench.systems import Proc, System, python, spawn, stop_procs
from stoker import Stoker

SLEEPERS = {"quick": 100, "full": 1_000}
TASKS = {"quick": 100, "full": 10_000}
REPLAYS = {"quick": 2, "full": 20}
REPLAY_STEPS = 100
DURABLE_SLOTS = 5_000
"""Per worker process: more than any part runs at once (no eviction is assumed)."""
TIMEOUT_S = 1800.0

WAKE_UPS = """
SELECT (t.output #>> '{}')::float8 AS woke_ms, extract(epoch FROM e.wake_at) * 1000 AS due_ms,
       extract(epoch FROM e.recorded_at) * 1000 AS asleep_ms,
       extract(epoch FROM e.satisfied_at) * 1000 AS settled_ms
FROM stoker.all_tasks t
JOIN stoker.durable_entry e ON e.task_id = t.id AND e.created_at = t.created_at
WHERE t.external_id = ANY(%s::uuid[]) AND e.kind = 'wait' AND t.status = 'COMPLETED'
"""

PROGRESS = """
SELECT count(*) FILTER (WHERE status = 'COMPLETED') AS done,
       count(*) FILTER (WHERE status IN ('FAILED', 'CANCELLED')) AS failed,
       max(finished_at) AS last
FROM stoker.all_tasks
WHERE external_id = ANY(%s::uuid[])
"""

REPLAYED = """
SELECT (output #>> '{}')::float8 - extract(epoch FROM started_at) * 1000 AS replay_ms
FROM stoker.all_tasks
WHERE external_id = ANY(%s::uuid[]) AND status = 'COMPLETED'
"""


def _size(ctx: Context, key: str, sizes: dict[str, int]) -> int:
    return int(ctx.overrides.get(key, sizes.get(ctx.profile.name, sizes["quick"])))


async def _fetch(db_url: str, sql: str, ids: list[str]) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        cur = await conn.execute(sql, (ids,))
        return list(await cur.fetchall())


async def _finish(db_url: str, ids: list[str], what: str) -> datetime:
    """Waits until every run in ``ids`` completed (polling Postgres, not holding 10,000
    result calls open); returns when the last one finished. Fails on a failed run."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        [(done, failed, last)] = await _fetch(db_url, PROGRESS, ids)
        if failed:
            raise RuntimeError(f"{failed} of the {what} runs failed")
        if done == len(ids):
            return last  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} of {len(ids)} {what} runs finished")
        await asyncio.sleep(0.2)


class _Workers:
    """Worker processes that run the durable tasks (beside the system's no-op ones)."""

    def __init__(self, system: System, ctx: Context) -> None:
        self.system, self.ctx = system, ctx
        self.procs: list[Proc] = []

    def pids(self) -> list[int]:
        return [p.popen.pid for p in self.procs]

    def __enter__(self) -> Stoker:
        env = {**self.system.worker_env(), "BENCH_DURABLE_SLOTS": str(DURABLE_SLOTS)}
        for i in range(self.ctx.env.worker_procs):
            self.procs.append(
                spawn(
                    f"durable-{i}",
                    [python(), "-m", "bench.scenarios.durable_app", f"durable-{i}"],
                    env,
                    self.system.log_dir,
                )
            )
        return declare(Stoker(address=env["STOKER_ADDRESS"], token=env["STOKER_TOKEN"]))

    def __exit__(self, *_: object) -> None:
        stop_procs(self.procs)


async def _wake_ups(app: Stoker, db_url: str, n: int) -> Result:
    sleeper = app.tasks["bench_sleeper"]
    # Deadlines spread evenly over 2 s, after a lead long enough for every task to start
    # and record its sleep first (a few durable requests each).
    first = time.time() + 3.0 + 0.03 * n
    inputs = [{"until": first + 2.0 * i / max(1, n - 1)} for i in range(n)]
    refs = await sleeper.aio_run_many(inputs)
    ids = [r.run_id for r in refs]
    await _finish(db_url, ids, "sleeping")
    rows = [
        (float(w), float(d), float(a), float(s))
        for w, d, a, s in await _fetch(db_url, WAKE_UPS, ids)
    ]
    # Only tasks asleep before their deadline measure a wake-up: one that recorded its sleep
    # after it (the machine could not start every task within the lead) wakes as soon as
    # it asks, late by however late it started; those are counted apart.
    asleep = [r for r in rows if r[2] < r[1]]
    late = [w - d for w, d, _, _ in asleep]
    # Where the time goes: the timer round's start (its transaction's now()) after the
    # deadline, then the round, the delivery to the worker and the body resuming.
    settled = [s - d for _, d, _, s in asleep]
    delivered = [w - s for w, _, _, s in asleep]
    earliest = min((d for _, d, _, _ in rows), default=0.0)
    return {
        "tasks": n,
        "measured": len(late),
        "asleep_after_their_deadline": len(rows) - len(asleep),
        "asleep_at_first_deadline": sum(1 for _, _, a, _ in rows if a < earliest),
        "late_p50_ms": percentile(late, 50),
        "late_p99_ms": percentile(late, 99),
        "late_max_ms": max(late) if late else None,
        "settled_p50_ms": percentile(settled, 50),
        "settled_p99_ms": percentile(settled, 99),
        "settled_to_resumed_p50_ms": percentile(delivered, 50),
        "settled_to_resumed_p99_ms": percentile(delivered, 99),
    }


async def _replay_cost(app: Stoker, db_url: str, runs: int, steps: int) -> Result:
    task = app.tasks["bench_replay"]
    refs = await task.aio_run_many([{"steps": steps}] * runs)
    ids = [r.run_id for r in refs]
    for ref in refs:
        # The first attempt fails on purpose after recording its steps.
        await asyncio.gather(ref.aio_result(timeout=TIMEOUT_S), return_exceptions=True)
    for ref in refs:  # one at a time: the cost of one replay, not of a crowd
        await app.runs.aio_replay(ref.run_id)
        await ref.aio_result(timeout=TIMEOUT_S)
    costs = [float(r[0]) for r in await _fetch(db_url, REPLAYED, ids)]
    return {
        "runs": runs,
        "steps": steps,
        "replay_p50_ms": percentile(costs, 50),
        "replay_max_ms": max(costs) if costs else None,
    }


async def _throughput(
    app: Stoker, db_url: str, n: int, workers: _Workers, system: System
) -> Result:
    mix = app.tasks["bench_durable_mix"]
    peaks = PeakRss({"engine": system.server_pids, "workers": workers.pids})
    peaks.start()
    started = datetime.now(UTC)
    try:
        refs = await mix.aio_run_many([{}] * n)
        enqueued_s = (datetime.now(UTC) - started).total_seconds()
        last = await _finish(db_url, [r.run_id for r in refs], "durable")
    finally:
        peak = await peaks.stop()
    seconds = (last - started).total_seconds()
    return {
        "tasks": n,
        "enqueue_s": enqueued_s,
        "seconds": seconds,
        "tasks_per_s": n / seconds if seconds > 0 else None,
        "peak_rss_mb": {k: v / 2**20 for k, v in peak.items()},
    }


async def _event_to_resume(system: System, ctx: Context) -> Result:
    """The event-to-resume latency, when ``bench.scenarios.durable_events`` provides it."""
    try:
        module = importlib.import_module("bench.scenarios.durable_events")
    except ModuleNotFoundError:
        return {"skipped": "not measured: bench/scenarios/durable_events.py is not there"}
    measure = module.event_to_resume
    return dict(await measure(system, ctx))


async def run_durable(system: System, ctx: Context) -> Result:
    sleepers = _size(ctx, "durable_sleepers", SLEEPERS)
    tasks = _size(ctx, "durable_tasks", TASKS)
    replays = REPLAYS.get(ctx.profile.name, REPLAYS["quick"])
    out: Result = {"config": system.describe(), "durable_slots_per_worker": DURABLE_SLOTS}
    workers = _Workers(system, ctx)
    with workers as app:
        # Warm up: registration, the workers' connections, the statements' plans.
        await app.tasks["bench_durable_mix"].aio_run({"sleep": 0.1})
        out["wake_up"] = await _wake_ups(app, system.db_url, sleepers)
        out["replay"] = await _replay_cost(app, system.db_url, replays, REPLAY_STEPS)
        out["throughput"] = await _throughput(app, system.db_url, tasks, workers, system)
    out["event_to_resume"] = await _event_to_resume(system, ctx)
    return out


def report_durable(results: dict[str, Result], ctx: Context) -> None:
    columns = [
        "system",
        "wake-up late p50 / p99 ms",
        "replay of 100 steps ms (p50 / max)",
        "tasks (3 steps + 1 s sleep)",
        "tasks/s",
        "engine RSS MB",
        "worker RSS MB",
        "event → resume",
    ]
    rows: list[list[Any]] = []
    for name, r in results.items():
        if "error" in r:
            continue
        w, rp, t, ev = r["wake_up"], r["replay"], r["throughput"], r["event_to_resume"]
        light = ev.get("light", {})
        event = (
            ev.get("skipped", "-")
            if "skipped" in ev
            else f"{fmt(light.get('p50_ms'))} / {fmt(light.get('p99_ms'))} ms"
        )
        rows.append(
            [
                name,
                f"{fmt(w['late_p50_ms'])} / {fmt(w['late_p99_ms'])}"
                f" ({w['asleep_at_first_deadline']:,} asleep)",
                f"{fmt(rp['replay_p50_ms'])} / {fmt(rp['replay_max_ms'])}",
                f"{t['tasks']:,}",
                fmt(t["tasks_per_s"]),
                fmt(t["peak_rss_mb"]["engine"], 0),
                fmt(t["peak_rss_mb"]["workers"], 0),
                event,
            ]
        )
    rows += error_rows(results, len(columns))
    ctx.console.print(table(f"durable ({ctx.label}): durable execution", columns, rows))
    write_json(ctx, "durable", results)


DURABLE = register(
    Scenario(
        name="durable",
        description="durable sleep wake-up lateness, replay cost, durable task throughput",
        run=run_durable,
        report=report_durable,
        stoker_only=True,
        order=85,
    )
)
