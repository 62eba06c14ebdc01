"""The benchmark suite still runs: a tiny drain of one peer, end to end.

No timing is asserted (CI machines vary); this only keeps ``python -m bench`` from rotting:
the command exits cleanly, writes its JSON, and every task enqueued ran exactly once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO

pytest.importorskip("pgqueuer", reason="the bench extra is not installed (pip install -e .[bench])")


def test_quick_drain_of_one_peer_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--systems",
            "pgqueuer",
            "--only",
            "drain",
            "--drain-tasks",
            "200",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    drain = json.loads((out / "drain.json").read_text())
    assert drain["scenario"] == "drain"
    assert drain["postgres"]["synchronous_commit"] == "on"
    peer = drain["systems"]["pgqueuer"]
    assert peer["tasks"] == 200
    assert peer["completed"] == 200
    assert peer["duplicates"] == 0
    assert peer["drain_per_s"] > 0

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["systems"]) == {"pgqueuer"}
    assert (out / "drain-throughput.png").stat().st_size > 0


def test_the_durable_scenario_runs_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = subprocess.run(
        [
            sys.executable, "-m", "bench", "--systems", "stoker", "--only", "durable",
            "--durable-sleepers", "10", "--durable-tasks", "10", "--out", str(out),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    stoker = json.loads((out / "durable.json").read_text())["systems"]["stoker"]
    assert stoker["wake_up"]["measured"] == 10
    assert stoker["replay"]["runs"] == 2 and stoker["replay"]["replay_p50_ms"] is not None
    assert stoker["throughput"]["tasks"] == 10 and stoker["throughput"]["tasks_per_s"] > 0
    assert stoker["throughput"]["peak_rss_mb"]["engine"] > 0
    assert "event_to_resume" in stoker


def test_the_events_scenario_runs_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = subprocess.run(
        [
            sys.executable, "-m", "bench", "--systems", "stoker", "--only", "events",
            "--event-pushes", "5", "--bulk-events", "200", "--out", str(out),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    stoker = json.loads((out / "events.json").read_text())["systems"]["stoker"]
    assert stoker["push_to_start"]["runs"] == 15 and stoker["push_to_start"]["p50_ms"] > 0
    assert stoker["bulk_no_subscriber"]["runs"] == 0
    assert stoker["bulk_one_subscriber"]["runs"] == 200


def test_the_results_scenario_runs_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = subprocess.run(
        [
            sys.executable, "-m", "bench", "--systems", "stoker", "--only", "results",
            "--results-runs", "300", "--out", str(out),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=100, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    stoker = json.loads((out / "results.json").read_text())["systems"]["stoker"]
    assert stoker["runs"] == 300
    assert stoker["single"]["calls"] == 300 and stoker["single"]["mean_ms_best"] > 0
    assert stoker["gathered"]["calls"] == 300 and stoker["gathered"]["wall_ms_best"] > 0
    assert stoker["bulk"]["runs"] == 300 and stoker["bulk"]["wall_ms_best"] > 0


def test_the_push_scenario_runs_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = subprocess.run(
        [
            sys.executable, "-m", "bench", "--systems", "stoker", "--only", "push",
            "--push-runs", "5", "--push-burst", "40", "--out", str(out),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    stoker = json.loads((out / "push.json").read_text())["systems"]["stoker"]
    assert stoker["latency"]["runs"] == 5 and stoker["latency"]["push_p50_ms"] > 0
    assert [t["kind"] for t in stoker["throughput"]] == ["stream", "push"]
    assert all(t["runs"] == 40 and t["runs_per_s"] > 0 for t in stoker["throughput"])
