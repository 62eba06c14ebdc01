"""tracing (Stoker only): what OpenTelemetry tracing costs a drain.

The same N no-ops are drained four times, alternating plain and traced (plain, traced,
traced, plain, so that a machine getting busier or quieter weighs on both alike). Traced:
the runs are enqueued through ``stoker.otel.Tracing`` (a producer span per trigger call,
trace context in every run's metadata) and the workers run with it (a consumer span per
attempt), the spans made by the OpenTelemetry SDK, batched and dropped by the exporter.
The figure is the mean traced drain rate over the mean plain one; target >= 0.9.
"""

from __future__ import annotations

import statistics

from bench.config import Context
from bench.report import error_rows, fmt, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.scenarios.common import drain
from bench.systems import System

TARGET = 0.9


async def run(system: System, ctx: Context) -> Result:
    n = int(ctx.size("drain_tasks"))
    rates: dict[bool, list[float]] = {False: [], True: []}
    for traced in (False, True, True, False):
        system.tracing = traced  # type: ignore[attr-defined]
        try:
            result = await drain(system, ctx, n, what=f"tracing-{'on' if traced else 'off'}")
        finally:
            system.tracing = False  # type: ignore[attr-defined]
        if result.unique < n:
            raise RuntimeError(f"only {result.unique} of {n} tasks ran (traced={traced})")
        rates[traced].append(result.rate())
    plain, traced_rate = statistics.mean(rates[False]), statistics.mean(rates[True])
    return {
        "tasks": n,
        "plain_per_s": plain,
        "traced_per_s": traced_rate,
        "plain_runs": rates[False],
        "traced_runs": rates[True],
        "ratio": traced_rate / plain if plain else None,
        "target": TARGET,
        "config": system.describe(),
    }


def report(results: dict[str, Result], ctx: Context) -> None:
    columns = ["system", "tasks", "plain tasks/s", "traced tasks/s", "ratio", f">= {TARGET}"]
    rows = [
        [
            name,
            f"{r['tasks']:,}",
            fmt(r["plain_per_s"]),
            fmt(r["traced_per_s"]),
            fmt(r["ratio"], 2),
            "yes" if (r["ratio"] or 0) >= TARGET else "no",
        ]
        for name, r in results.items()
        if "error" not in r
    ]
    rows += error_rows(results, len(columns))
    ctx.console.print(table(f"tracing ({ctx.label}): drain with tracing on vs off", columns, rows))
    write_json(ctx, "tracing", results)


SCENARIO = register(
    Scenario(
        name="tracing",
        description="drain rate with OpenTelemetry tracing on vs off",
        run=run,
        report=report,
        stoker_only=True,
        order=96,
    )
)
