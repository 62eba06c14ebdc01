"""dag and fanout (Stoker only): workflow hand-off latency and a 1,000-child fan-out.

dag: for each shape (a 2-step chain, a 5-step chain, a diamond), ``LIGHT_RUNS`` runs one
at a time (the hand-off an idle engine gives), then ``dag_runs`` runs ``dag_in_flight`` at
a time (under load), on the same worker processes as the other scenarios. The hand-off
latency of a step is its start minus the end of its last parent (both stamped by the
workers, read back from Postgres): what progression, queueing and dispatch add between two
steps. Reported as p50/p99 per shape and load, with the loaded runs' end-to-end latency.

fanout: one parent task spawns ``fanout_children`` children with ``run_many`` from inside
the worker and awaits them all; reported: seconds from trigger to the parent's result,
and children per second.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import psycopg

from bench.config import Context
from bench.report import error_rows, fmt, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.scenarios.workflow_app import SHAPES, declare
from bench.systems import Proc, System, python, spawn, stop_procs
from stoker import Stoker, Workflow

RUNS = {"quick": 200, "full": 2_000}
IN_FLIGHT = 20
LIGHT_RUNS = {"quick": 30, "full": 200}
CHILDREN = 1_000

HANDOFFS = """
SELECT d.workflow_name, c.step,
       extract(epoch FROM c.started_at - max(p.finished_at)) * 1000 AS handoff_ms
FROM stoker.dag d
JOIN stoker.task c ON c.dag_id = d.id
JOIN stoker.workflow_version v ON v.id = d.version_id
JOIN LATERAL jsonb_array_elements(v.config -> 'steps') s ON s ->> 'name' = c.step
JOIN LATERAL jsonb_array_elements_text(s -> 'parents') pn ON true
JOIN stoker.task p ON p.dag_id = d.id AND p.step = pn
WHERE d.external_id = ANY(%s::uuid[])
GROUP BY d.id, d.workflow_name, c.id, c.step, c.started_at
"""


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _drive(
    wf: Workflow[Any], runs: int, in_flight: int
) -> tuple[list[str], list[float], float]:
    """Runs ``wf`` ``runs`` times, ``in_flight`` at a time: run ids, end-to-end ms, seconds."""
    ids: list[str] = []
    e2e: list[float] = []
    sem = asyncio.Semaphore(in_flight)

    async def one() -> None:
        async with sem:
            started = time.perf_counter()
            ref = await wf.aio_run_no_wait({})
            await ref.aio_result(timeout=120)
            e2e.append((time.perf_counter() - started) * 1000)
            ids.append(ref.run_id)

    began = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    return ids, e2e, time.perf_counter() - began


class _Workers:
    """Worker processes that run the benchmark workflows (beside the system's no-op ones)."""

    def __init__(self, system: System, ctx: Context) -> None:
        self.system, self.ctx = system, ctx
        self.procs: list[Proc] = []

    def __enter__(self) -> Stoker:
        env = self.system.worker_env()
        for i in range(self.ctx.env.worker_procs):
            self.procs.append(
                spawn(
                    f"workflows-{i}",
                    [python(), "-m", "bench.scenarios.workflow_app", f"workflows-{i}"],
                    env,
                    self.system.log_dir,
                )
            )
        return declare(Stoker(address=env["STOKER_ADDRESS"], token=env["STOKER_TOKEN"]))

    def __exit__(self, *_: object) -> None:
        stop_procs(self.procs)


async def run_dag(system: System, ctx: Context) -> Result:
    runs = int(ctx.overrides.get("dag_runs", RUNS.get(ctx.profile.name, 200)))
    in_flight = int(ctx.overrides.get("dag_in_flight", IN_FLIGHT))
    out: Result = {"runs": runs, "in_flight": in_flight, "config": system.describe(), "shapes": {}}
    light = LIGHT_RUNS.get(ctx.profile.name, 30)

    async def handoffs_of(ids: list[str]) -> list[float]:
        async with await psycopg.AsyncConnection.connect(system.db_url) as conn:
            cur = await conn.execute(HANDOFFS, (ids,))
            return [float(r[2]) for r in await cur.fetchall()]

    with _Workers(system, ctx) as app:
        for shape in SHAPES:
            wf = app.workflows[shape]
            await wf.aio_run({})  # warm up: registration, connections, plans
            one_ids, _, _ = await _drive(wf, light, 1)
            alone = await handoffs_of(one_ids)
            ids, e2e, elapsed = await _drive(wf, runs, in_flight)
            handoffs = await handoffs_of(ids)
            out["shapes"][shape] = {
                "light_handoff_p50_ms": _pct(alone, 0.50),
                "light_handoff_p99_ms": _pct(alone, 0.99),
                "handoff_p50_ms": _pct(handoffs, 0.50),
                "handoff_p99_ms": _pct(handoffs, 0.99),
                "handoffs": len(handoffs),
                "e2e_p50_ms": statistics.median(e2e),
                "e2e_p99_ms": _pct(e2e, 0.99),
                "runs_per_s": runs / elapsed,
            }
    return out


def report_dag(results: dict[str, Result], ctx: Context) -> None:
    in_flight = int(ctx.overrides.get("dag_in_flight", IN_FLIGHT))
    columns = ["system", "shape", "hand-off p50/p99 ms, 1 in flight",
               f"hand-off p50/p99 ms, {in_flight} in flight", "run p50 ms", "run p99 ms",
               "runs/s"]  # fmt: skip
    rows = []
    for name, r in results.items():
        if "error" in r:
            continue
        for shape, s in r["shapes"].items():
            rows.append(
                [name, shape,
                 f"{fmt(s['light_handoff_p50_ms'])} / {fmt(s['light_handoff_p99_ms'])}",
                 f"{fmt(s['handoff_p50_ms'])} / {fmt(s['handoff_p99_ms'])}",
                 fmt(s["e2e_p50_ms"]), fmt(s["e2e_p99_ms"]), fmt(s["runs_per_s"])]
            )  # fmt: skip
    rows += error_rows(results, len(columns))
    title = f"dag ({ctx.label}): step hand-off latency (start of a step - end of its parent)"
    ctx.console.print(table(title, columns, rows))
    write_json(ctx, "dag", results)


async def run_fanout(system: System, ctx: Context) -> Result:
    children = int(ctx.overrides.get("fanout_children", CHILDREN))
    with _Workers(system, ctx) as app:
        task = app.tasks["bench_fan_out"]
        await task.aio_run({"children": 10})  # warm up
        started = time.perf_counter()
        total = await task.aio_run({"children": children})
        elapsed = time.perf_counter() - started
    assert total == children * (children - 1) // 2, total
    return {
        "children": children,
        "config": system.describe(),
        "seconds": elapsed,
        "children_per_s": children / elapsed,
    }


def report_fanout(results: dict[str, Result], ctx: Context) -> None:
    columns = ["system", "children", "parent done in s", "children/s"]
    rows: list[list[Any]] = [
        [name, f"{r['children']:,}", fmt(r["seconds"]), fmt(r["children_per_s"])]
        for name, r in results.items()
        if "error" not in r
    ]
    rows += error_rows(results, len(columns))
    ctx.console.print(table(f"fanout ({ctx.label}): one parent, its children", columns, rows))
    write_json(ctx, "fanout", results)


DAG = register(
    Scenario(
        name="dag",
        description="workflow step hand-off latency (2-step, 5-step chain, diamond)",
        run=run_dag,
        report=report_dag,
        stoker_only=True,
        order=70,
    )
)
FANOUT = register(
    Scenario(
        name="fanout",
        description="one parent task spawning 1,000 children and awaiting them",
        run=run_fanout,
        report=report_fanout,
        stoker_only=True,
        order=80,
    )
)
