"""Sticky children: ``child.run(input, sticky=True)`` from inside a task prefers the
worker running the parent; two real worker processes serve the tasks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stoker import Stoker
from tests.apps.sticky import declare
from tests.harness import WorkerProcess

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def workers(engine: Any, tenant: Any, tmp_path: Any) -> Iterator[list[WorkerProcess]]:
    procs = [
        WorkerProcess("tests.apps.sticky:app", tenant, engine.db_url, tmp_path, f"sticky-{n}")
        for n in (1, 2)
    ]
    try:
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.kill()


def test_sticky_children_run_on_the_parents_worker(
    tenant: Any, workers: list[WorkerProcess]
) -> None:
    app: Stoker = declare(tenant.client())
    try:
        for _ in range(3):
            out = app.tasks["sticky_t_parent"].run({"n": 3})
            assert out["parent"] in {w.worker_id for w in workers}
            assert out["sticky"] == [out["parent"]] * 3
            # Without it, placement takes the least busy worker: the other one, at first
            # (the parent holds a slot on its own).
            assert set(out["plain"]) != {out["parent"]}
    finally:
        app.close()
