"""backlog: does a deep queue slow the workers down?

Two drains of the same B tasks, timed the same way (first start to B-th completion):
first from a queue holding only those B, then from a queue holding D (1,000,000 in the
full profile) of which the workers are stopped after B. The ratio deep/empty is the
figure of merit (1.0: the queue's cost does not grow with its depth). The deep queue is
thrown away afterwards (the system gets a fresh database).

Full profile only (or ``--only backlog``): enqueuing a million tasks takes minutes. A
system whose deep drain is so slow that B tasks would take longer than ``DEEP_BUDGET_S``
is stopped then, and its rate is over the tasks that finished (reported as partial).
"""

from __future__ import annotations

from bench.config import Context
from bench.report import error_rows, fmt, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.scenarios.common import drain
from bench.systems import System

DEEP_BUDGET_S = 300.0


async def run(system: System, ctx: Context) -> Result:
    base = int(ctx.size("backlog_base"))
    depth = int(ctx.size("backlog_depth"))
    await system.reset()
    empty = await drain(system, ctx, base, what="backlog-empty")
    await system.reset()
    try:
        deep = await drain(
            system, ctx, depth, measure_first=base, budget_s=DEEP_BUDGET_S, what="backlog-deep"
        )
    finally:
        await system.reset()
    return {
        "measured_tasks": base,
        "depth": depth,
        "empty_per_s": empty.rate(),
        "deep_per_s": deep.rate(),
        "deep_measured_tasks": deep.measured,
        "deep_enqueue_per_s": depth / deep.enqueue_s,
        "ratio": deep.rate() / empty.rate() if empty.rate() else None,
        "config": system.describe(),
    }


def report(results: dict[str, Result], ctx: Context) -> None:
    columns = ["system", "tasks timed", "queue depth", "empty tasks/s", "deep tasks/s", "ratio"]
    rows = [
        [
            name,
            f"{r['measured_tasks']:,}",
            f"{r['depth']:,}",
            fmt(r["empty_per_s"]),
            fmt(r["deep_per_s"])
            + (
                f" (partial: {r['deep_measured_tasks']:,} in {DEEP_BUDGET_S:.0f} s)"
                if r.get("deep_measured_tasks", r["measured_tasks"]) < r["measured_tasks"]
                else ""
            ),
            fmt(r["ratio"], 2),
        ]
        for name, r in results.items()
        if "error" not in r
    ]
    rows += error_rows(results, len(columns))
    ctx.console.print(
        table(f"backlog ({ctx.label}): drain rate with a deep queue vs an empty one", columns, rows)
    )
    write_json(ctx, "backlog", results)


SCENARIO = register(
    Scenario(
        name="backlog",
        description="drain rate with 1,000,000 tasks queued vs an empty queue",
        run=run,
        report=report,
        order=90,
    )
)
