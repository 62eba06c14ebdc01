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

import pytest

from bench.chaos import FAULTS, ChaosConfig, format_report, run_chaos

pytest.importorskip("psutil", reason="the dev extra is not installed")


def run(config: ChaosConfig, tmp_path: Path) -> dict[str, object]:
    report = asyncio.run(run_chaos(config, tmp_path / "chaos", log=lambda _: None))
    assert report["passed"], format_report(report)
    return report


@pytest.mark.timeout(120)
def test_a_killed_worker_loses_nothing_and_its_runs_are_re_executed_elsewhere(
    tmp_path: Path,
) -> None:
    # Long enough jobs that the killed worker surely holds some when it dies.
    config = ChaosConfig(faults=("worker_kill",), replicas=1, rate=10, phase_s=8, job_s=1.0)
    report = run(config, tmp_path)
    phase = report["phases"]["worker_kill"]  # type: ignore[index]
    assert phase["accepted"] >= 60
    assert phase["re_executions"] >= 1  # the dead worker's attempts ran again, justly
    assert phase["recovery_s"] <= config.recovery_target_s


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", FAULTS)
def test_fault(fault: str, tmp_path: Path) -> None:
    run(ChaosConfig(faults=(fault,), phase_s=15), tmp_path)
