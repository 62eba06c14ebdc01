"""chaos (Stoker only): nothing accepted is lost, stuck or duplicated under faults.

The scenario ignores the system's own engine and database: the fault-injection driver
(:mod:`bench.chaos`) starts a private Postgres, two engine replicas, a partition proxy and
workers of its own, since it kills -9 each of them. A producer sends a fixed rate for the
whole run while the faults follow one another: kill -9 of a worker, SIGSTOP of a worker
past the dead-worker timeout (its late results must be ignored), SIGTERM of workers
holding long tasks, a partition (delay, black hole, cut) between workers and an engine,
kill -9 and restart of an engine, kill -9 of one of two replicas, kill -9 and restart of
Postgres, and forged events and heartbeats from another tenant. The quick profile gives
each fault 12 s at 20 requests/s; the full one 25 s at 50/s.

Reported per fault (``chaos.json``, ``chaos.txt``): requests accepted and rejected, runs
lost, stuck, duplicated, re-executed (and how many of those on a worker that did not die),
late and forged results accepted, and the recovery time. The scenario fails on any loss,
stuck run, duplicate run, unjustified re-execution, accepted late or forged result, or a
recovery slower than the dead-worker timeout plus 5 s. docs/reliability.md has the detail.
"""

from __future__ import annotations

import os
from typing import Any

from bench.chaos import FAULTS, ChaosConfig, format_report, run_chaos, write_report
from bench.config import Context
from bench.report import meta, table
from bench.scenarios import Result, Scenario, register
from bench.systems import System

SIZES: dict[str, dict[str, Any]] = {
    "quick": {"rate": 20.0, "phase_s": 12.0},
    "full": {"rate": 50.0, "phase_s": 25.0, "settle_s": 60.0},
}


def config(ctx: Context) -> ChaosConfig:
    """The profile's sizes; ``CHAOS_FAULTS`` (comma-separated) picks a subset of faults."""
    sizes = dict(SIZES.get(ctx.profile.name, SIZES["quick"]))
    for key in ("chaos_rate", "chaos_phase_s"):
        if key in ctx.overrides:
            sizes[key.removeprefix("chaos_")] = ctx.overrides[key]
    raw = os.environ.get("CHAOS_FAULTS", "")
    faults = tuple(f for f in raw.split(",") if f) or FAULTS
    return ChaosConfig(faults=faults, **sizes)


async def run(system: System, ctx: Context) -> Result:
    report = await run_chaos(config(ctx), log=ctx.console.print)
    ctx.console.print(format_report(report), markup=False, highlight=False)
    if not report["passed"]:
        # The failures are data too: they go into the JSON with the rest.
        return {**report, "error": "chaos checks failed: " + "; ".join(report["failures"])}
    return report


def report(results: dict[str, Result], ctx: Context) -> None:
    for name, r in results.items():
        if "phases" not in r:
            continue
        write_report({**meta(ctx), **r}, ctx.out_dir)
        columns = ["fault", "accepted", "rejected (refused)", "lost", "stuck", "dup runs",
                   "re-exec (bad)", "late", "forged", "recovery s"]  # fmt: skip
        rows = []
        for phase, row in r["phases"].items():
            rec = row.get("recovery_s", "")
            rows.append(
                [phase, str(row["accepted"]), f"{row['rejected']} ({row['refused']})",
                 str(row["lost"]), str(row["stuck"]),
                 str(row["duplicate_runs"]),
                 f"{row['re_executions']} ({row['unjustified_re_executions']})",
                 str(row["late_results_accepted"]), str(row["forged_results_accepted"]),
                 "never" if rec is None else (f"{rec:.1f}" if rec != "" else "")]
            )  # fmt: skip
        verdict = "passed" if r["passed"] else "FAILED"
        ctx.console.print(table(f"chaos ({ctx.label}, {name}): {verdict}", columns, rows))


SCENARIO = register(
    Scenario(
        name="chaos",
        description="faults (kill -9, SIGTERM, partition, Postgres restart, forged events): "
        "nothing lost, stuck or duplicated",
        run=run,
        report=report,
        stoker_only=True,
        order=95,
    )
)
