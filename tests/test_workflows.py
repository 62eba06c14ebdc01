"""Workflows end to end: real engine and worker processes, the public SDK only."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stoker import NotFoundError, RunCancelledError, Stoker, TaskRunError
from tests.apps import workflows
from tests.apps.workflows import Count, Job
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def app(engine: Any, tenant: Any) -> Stoker:
    return workflows.declare(
        Stoker(address=engine.grpc_address, token=tenant.token, connect_timeout=5)
    )


@pytest.fixture
def worker(worker_factory: Any) -> Any:
    return worker_factory("tests.apps.workflows:app", slots=20)


def steps(engine: Any, run_id: str) -> dict[str, dict[str, Any]]:
    """The steps of a workflow run by step name."""
    with psycopg.connect(engine.db_url, row_factory=psycopg.rows.dict_row) as conn:
        rows = conn.execute(
            "SELECT t.* FROM stoker.task t JOIN stoker.dag d ON d.id = t.dag_id"
            " WHERE d.external_id = %s",
            (run_id,),
        ).fetchall()
    return {r["step"]: r for r in rows}


def log_lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_diamond_runs_parents_first_and_returns_outputs_by_step(
    app: Stoker, worker: Any, engine: Any, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    out = app.workflows["diamond"].run(Job(log=str(log), value=3))
    assert out == {"a": {"v": 3}, "b": {"v": 30}, "c": {"v": 8}, "d": {"sum": 38, "b_started": True}}
    order = log_lines(log)
    assert order[0] == "a" and order[-1] == "d" and sorted(order[1:3]) == ["b", "c"]
