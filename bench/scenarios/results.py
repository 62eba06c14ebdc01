"""results (Stoker only): what reading the results of finished runs costs.

``results_runs`` no-op runs (quick and full: 10,000) are enqueued with ``run_many`` and
drained; once every one has finished (the engine's own table shows none unfinished), their
results are read back three ways, all from this harness process over the same client:

* **one at a time**: ``ref.result()`` on ``SINGLE`` distinct runs in a loop (blocking
  calls, in a thread): ms per call, mean, p50 and p99. Target (issue 18): ≤ 0.5 ms.
* **gathered**: ``asyncio.gather`` of ``GATHERED`` ``ref.aio_result()`` calls: the wall
  time of the whole gather. Target ≤ 50 ms for 1,000.
* **bulk**: ``app.runs.aio_results(refs)`` for all of them: the wall time. Target ≤ 100 ms
  for 10,000. Absent (``None``) on a version of Stoker without the bulk form.

Every result read is checked (the no-op returns ``{}``), so a fast wrong answer fails.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from bench.config import Context
from bench.measure import percentile
from bench.report import error_rows, fmt, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.scenarios.common import PENDING_TIMEOUT_S, wait_acknowledged, wait_done
from bench.systems import System

RUNS = 10_000
SINGLE = 1_000
GATHERED = 1_000
CHUNK = 5_000
REPEATS = 3
"""Each measurement is taken this many times; the best and the median are reported."""


def _check(outputs: list[Any], what: str) -> None:
    wrong = [o for o in outputs if o != {}]
    if wrong:
        raise RuntimeError(f"{what}: {len(wrong)} results are not the no-op's {{}}: {wrong[:3]}")


async def run(system: System, ctx: Context) -> Result:
    from bench.systems.stoker import Noop

    n = int(ctx.overrides.get("results_runs", RUNS))
    app = system.client  # type: ignore[attr-defined]
    task = app.tasks["noop"]
    directory = ctx.scratch(system.name, "results")
    system.start_workers(directory)
    try:
        refs: list[Any] = []
        for i in range(0, n, CHUNK):
            refs += await task.aio_run_many([Noop(seq=s) for s in range(i, min(n, i + CHUNK))])
        await wait_done(system, directory, n)
        await asyncio.wait_for(wait_acknowledged(system), PENDING_TIMEOUT_S)
    finally:
        await system.stop_workers()

    single = refs[: min(SINGLE, n)]
    gathered = refs[-min(GATHERED, n) :]

    def one_at_a_time() -> list[float]:
        took = []
        for ref in single:
            t0 = time.perf_counter()
            out = ref.result()
            took.append((time.perf_counter() - t0) * 1000)
            _check([out], "result()")
        return took

    per_call: list[float] = []
    gather_ms: list[float] = []
    bulk_ms: list[float] = []
    bulk = getattr(app.runs, "aio_results", None)
    for _ in range(REPEATS):
        per_call_run = await asyncio.to_thread(one_at_a_time)
        per_call.append(statistics.fmean(per_call_run))
        t0 = time.perf_counter()
        outs = await asyncio.gather(*(r.aio_result() for r in gathered))
        gather_ms.append((time.perf_counter() - t0) * 1000)
        _check(list(outs), "gathered aio_result()")
        if bulk is not None:
            t0 = time.perf_counter()
            outs = await bulk(refs)
            bulk_ms.append((time.perf_counter() - t0) * 1000)
            _check(list(outs), "runs.aio_results()")
            if len(outs) != n:
                raise RuntimeError(f"runs.aio_results() returned {len(outs)} of {n}")
    last = per_call_run
    return {
        "runs": n,
        "single": {
            "calls": len(single),
            "mean_ms_best": min(per_call),
            "mean_ms_median": statistics.median(per_call),
            "p50_ms": percentile(last, 50),
            "p99_ms": percentile(last, 99),
        },
        "gathered": {
            "calls": len(gathered),
            "wall_ms_best": min(gather_ms),
            "wall_ms_median": statistics.median(gather_ms),
        },
        "bulk": {
            "runs": n,
            "wall_ms_best": min(bulk_ms) if bulk_ms else None,
            "wall_ms_median": statistics.median(bulk_ms) if bulk_ms else None,
        },
    }


def report(results: dict[str, Result], ctx: Context) -> None:
    columns = [
        "system",
        "runs",
        "result() ms/call (best / median)",
        "p50 / p99 ms",
        "gather of 1,000 ms",
        "bulk ms",
    ]
    rows = [
        [
            name,
            str(r["runs"]),
            f"{fmt(r['single']['mean_ms_best'], 3)} / {fmt(r['single']['mean_ms_median'], 3)}",
            f"{fmt(r['single']['p50_ms'], 3)} / {fmt(r['single']['p99_ms'], 3)}",
            f"{fmt(r['gathered']['wall_ms_best'])} / {fmt(r['gathered']['wall_ms_median'])}",
            f"{fmt(r['bulk']['wall_ms_best'])} / {fmt(r['bulk']['wall_ms_median'])}",
        ]
        for name, r in results.items()
        if "error" not in r
    ]
    ctx.console.print(
        table(f"results of finished runs ({ctx.label})", columns, rows + error_rows(results, 6))
    )
    write_json(ctx, "results", results)


register(
    Scenario(
        name="results",
        description="result() per call, 1,000 gathered aio_result(), bulk runs.results()",
        run=run,
        report=report,
        stoker_only=True,
        order=95,
    )
)
