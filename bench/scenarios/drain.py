"""drain: enqueue N no-ops in bulk, then start the workers and time how fast they empty it.

The enqueue rate is N over the wall time of the bulk enqueue. The drain rate is N over
the time from the first task body starting to the last one finishing (worker start-up is
not counted). Where the system keeps its own record of finished tasks, the time until it
shows none unfinished gives a second, "acknowledged" rate.
"""

from __future__ import annotations

from bench.config import Context
from bench.measure import throughput_series
from bench.report import error_rows, fmt, pyplot, save, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.scenarios.common import drain
from bench.systems import System


async def run(system: System, ctx: Context) -> Result:
    n = int(ctx.size("drain_tasks"))
    if system.max_drain_tasks is not None:
        n = min(n, system.max_drain_tasks)
    result = await drain(system, ctx, n)
    xs, ys = throughput_series(result.rows)
    return {
        "tasks": n,
        "completed": result.unique,
        "duplicates": result.duplicates,
        "enqueue_s": result.enqueue_s,
        "enqueue_per_s": n / result.enqueue_s,
        "drain_s": result.window_s(),
        "drain_per_s": result.rate(),
        "acknowledged_per_s": result.acknowledged_rate(),
        "config": system.describe(),
        "_series": (xs, ys),
    }


def report(results: dict[str, Result], ctx: Context) -> None:
    columns = ["system", "tasks", "enqueue/s", "drain tasks/s", "acked tasks/s", "dupes"]
    rows = [
        [
            name,
            f"{r['completed']:,}/{r['tasks']:,}",
            fmt(r["enqueue_per_s"]),
            fmt(r["drain_per_s"]),
            fmt(r["acknowledged_per_s"]),
            str(r["duplicates"]),
        ]
        for name, r in results.items()
        if "error" not in r
    ]
    rows += error_rows(results, len(columns))
    ctx.console.print(table(f"drain ({ctx.label}): bulk enqueue, then workers", columns, rows))
    write_json(ctx, "drain", results)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, r in results.items():
        if "_series" in r:
            xs, ys = r["_series"]
            ax.plot(xs, ys, label=f"{name} ({fmt(r['drain_per_s'])}/s)")
    ax.set_xlabel("seconds since the first task started")
    ax.set_ylabel("tasks finished per second")
    ax.set_title(f"drain of up to {int(ctx.size('drain_tasks')):,} no-op tasks ({ctx.label})")
    ax.legend()
    ax.grid(alpha=0.3)
    save(fig, ctx, "drain-throughput")


SCENARIO = register(
    Scenario(
        name="drain",
        description="bulk-enqueue N no-ops, start workers, tasks/s first start to last end",
        run=run,
        report=report,
        order=10,
    )
)
