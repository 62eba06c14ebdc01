"""policy (Stoker only): the cost of each scheduling policy, measured as a drain.

The same N no-op tasks are drained four times, each time declared with one policy: none,
1,000 concurrency keys (``max_runs=1`` per key), a static rate limit set high enough never
to bind (so what is measured is the cost of checking it), and a required plus a weighted
worker label. The report gives each drain rate and its ratio to the plain drain.
"""

from __future__ import annotations

from bench.config import Context
from bench.report import error_rows, fmt, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.scenarios.common import drain
from bench.systems import System

VARIANTS = {
    "noop": "no policy",
    "noop_keyed": "1,000 concurrency keys",
    "noop_limited": "rate limit (not binding)",
    "noop_labelled": "required + weighted labels",
}


async def run(system: System, ctx: Context) -> Result:
    n = int(ctx.size("drain_tasks"))
    out: Result = {"tasks": n, "config": system.describe(), "variants": {}}
    for variant in VARIANTS:
        system.variant = variant  # type: ignore[attr-defined]
        try:
            result = await drain(system, ctx, n, what=f"policy-{variant}")
        finally:
            system.variant = "noop"  # type: ignore[attr-defined]
        out["variants"][variant] = {
            "completed": result.unique,
            "duplicates": result.duplicates,
            "drain_per_s": result.rate(),
        }
    return out


def report(results: dict[str, Result], ctx: Context) -> None:
    columns = ["system", "policy", "tasks", "drain tasks/s", "÷ no policy"]
    rows = []
    for name, r in results.items():
        if "error" in r:
            continue
        base = r["variants"]["noop"]["drain_per_s"]
        for variant, label in VARIANTS.items():
            v = r["variants"][variant]
            rows.append(
                [
                    name,
                    label,
                    f"{v['completed']:,}/{r['tasks']:,}",
                    fmt(v["drain_per_s"]),
                    f"{v['drain_per_s'] / base:.2f}" if base else "-",
                ]
            )
    rows += error_rows(results, len(columns))
    ctx.console.print(table(f"policy ({ctx.label}): drain under each policy", columns, rows))
    write_json(ctx, "policy", results)


SCENARIO = register(
    Scenario(
        name="policy",
        description="drain under concurrency keys, a rate limit and worker labels",
        run=run,
        report=report,
        stoker_only=True,
        order=60,
    )
)
