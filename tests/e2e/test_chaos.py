"""Fault injection: nothing accepted is lost, stuck or duplicated when processes die.

The driver is :mod:`bench.chaos` (shared with the benchmark scenario ``chaos``): a private
Postgres, engine replicas, a partition proxy, worker processes and a producer at a fixed
rate; see docs/reliability.md for what is counted and the targets. Each slow test injects
one fault and requires the run to pass: 0 lost, 0 stuck, 0 duplicate runs, re-executions
only on workers that really died, no late or forged result accepted, and recovery within
the dead-worker timeout plus 5 s. The quick test below runs one fault in the default suite.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bench.chaos import FAULTS, ChaosConfig, format_report, run_chaos
from bench.chaos.driver import Observed, Request, tally


def run(config: ChaosConfig, tmp_path: Path) -> dict[str, Any]:
    report = asyncio.run(run_chaos(config, tmp_path / "chaos", log=lambda _: None))
    assert report["passed"], format_report(report)
    return report


def test_the_tally_tells_each_kind_of_failure_apart() -> None:
    """Synthetic observations, one request per outcome: each lands in its own counter."""
    t0 = 1_000.0
    ns = lambda s: int((t0 + s) * 1e9)  # noqa: E731

    def run(req: str, status: str = "COMPLETED", attempt: int = 0, **out: Any) -> dict[str, Any]:
        output = {"id": req, "attempt": attempt, **out} if status == "COMPLETED" else None
        finished = None if status == "RUNNING" else "done"
        run_id = f"r-{req}-{attempt}-{len(out)}"
        return dict(run_id=run_id, status=status, attempt=attempt, req=req, output=output,
                    finished_at=finished)  # fmt: skip

    runs = {
        "ok": [run("ok")],
        "dup": [run("dup"), {**run("dup"), "run_id": "r-dup-second"}],
        "stuck": [run("stuck", "RUNNING")],
        "late": [{**run("late", attempt=1), "output": {"id": "late", "attempt": 0}}],
        "forged": [run("forged", forged=True)],
        "redo": [run("redo", attempt=1)],
        "bad-redo": [run("bad-redo", attempt=1)],
        "never-ran": [run("never-ran")],
    }
    records = []
    for req, mine in runs.items():
        for r in mine:
            if req in ("redo", "bad-redo"):
                pid = 100 if req == "redo" else 300
                records += [("S", req, r["run_id"], 0, pid, ns(1.0))]
                records += [("S", req, r["run_id"], 1, 200, ns(5.0))]
                records += [("E", req, r["run_id"], 1, 200, ns(5.5))]
            elif req != "never-ran" and r["finished_at"]:
                attempt = int(r["attempt"])
                records += [("S", req, r["run_id"], attempt, 200, ns(0.5))]
                records += [("E", req, r["run_id"], attempt, 200, ns(0.8))]
            elif req == "stuck":
                records += [("S", req, r["run_id"], 0, 200, ns(0.5))]
    requests = [Request(req, "worker_kill", t0 + 0.1, 0.3, run_id=f"x-{req}") for req in runs]
    requests += [
        Request("gone", "worker_kill", t0 + 0.1, 0.3, run_id="x-gone"),
        Request("refused", "worker_kill", t0 + 0.1, 0.3, error="StokerError: INTERNAL"),
        Request("retry-later", "worker_kill", t0 + 0.1, 0.3, error="EngineUnavailableError: x"),
        Request("after", "after", t0 + 3.0, 0.3, run_id="x-after"),
    ]
    runs["after"] = [run("after")]
    records += [("S", "after", "r-after-0-0", 0, 200, ns(3.1))]
    records += [("E", "after", "r-after-0-0", 0, 200, ns(3.4))]
    report = tally(
        Observed(
            config=ChaosConfig(faults=("worker_kill",), replicas=1),
            requests=requests,
            runs=[r for mine in runs.values() for r in mine],
            records=records,
            injected={"worker_kill": t0 + 2.0},
            killed_pids={100},
        )
    )
    row = report["phases"]["worker_kill"]
    assert {k: row[k] for k in row if k != "recovery_s"} == {
        "sent": 11,
        "accepted": 9,
        "rejected": 2,
        "refused": 1,
        "lost": 2,  # "gone" has no run; "never-ran" completed with no execution
        "stuck": 1,
        "duplicate_runs": 1,
        "re_executions": 2,
        "unjustified_re_executions": 1,  # pid 300 was never killed
        "late_results_accepted": 1,
        "forged_results_accepted": 1,
    }
    assert row["recovery_s"] is None  # the stuck run never finished
    assert not report["passed"]
    assert "1 duplicate runs" in report["failures"]
    assert "worker_kill: the system did not recover" in report["failures"]


@pytest.mark.timeout(120)
def test_a_killed_worker_loses_nothing_and_its_runs_are_re_executed_elsewhere(
    tmp_path: Path,
) -> None:
    # Long enough jobs that the killed worker surely holds some when it dies.
    config = ChaosConfig(faults=("worker_kill",), replicas=1, rate=10, phase_s=8, job_s=1.0)
    report = run(config, tmp_path)
    phase = report["phases"]["worker_kill"]
    assert phase["accepted"] >= 60
    assert phase["re_executions"] >= 1  # the dead worker's attempts ran again, justly
    assert phase["recovery_s"] <= config.recovery_target_s


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", FAULTS)
def test_fault(fault: str, tmp_path: Path) -> None:
    run(ChaosConfig(faults=(fault,), phase_s=15), tmp_path)
