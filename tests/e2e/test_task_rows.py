"""End to end: what a finished task's row says about its attempt, however its start and its
completion reached the engine (in separate flushes, or written together by the completion)."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from stoker import Stoker
from tests.apps import basic
from tests.apps.basic import Greet, Sleep

pytestmark = pytest.mark.timeout(120)


def test_every_finished_run_keeps_its_start(engine: Any, tenant: Any, worker_factory: Any) -> None:
    worker_factory("tests.apps.basic:app", slots=50)
    app = basic.declare(Stoker(address=engine.grpc_address, token=tenant.token))
    quick = app.tasks["greet"].run_many([Greet(name=str(i)) for i in range(200)])
    slow = app.tasks["slow"].run_many([Sleep(seconds=0.3, tag=str(i)) for i in range(5)])
    app.runs.results([*quick, *slow], timeout=60)
    with psycopg.connect(engine.db_url) as conn:
        rows = conn.execute(
            "SELECT external_id::text, status, started_at, finished_at, assigned_at"
            " FROM stoker.task WHERE external_id = ANY(%s::uuid[])",
            ([r.run_id for r in [*quick, *slow]],),
        ).fetchall()
    assert len(rows) == 205
    for run_id, status, started, finished, assigned in rows:
        assert status == "COMPLETED", run_id
        assert started is not None and finished is not None and assigned is not None
        assert started <= finished, run_id
    slow_ids = {r.run_id for r in slow}
    # A task that ran 0.3 s started (worker's stamp) that much before it finished.
    for run_id, _, started, finished, _ in rows:
        if run_id in slow_ids:
            assert (finished - started).total_seconds() >= 0.29, run_id
    # Run events report the start of a finished run.

    async def kinds() -> list[str]:
        return [e.kind async for e in app.runs.events(quick[0])]

    assert "started" in asyncio.run(kinds())
