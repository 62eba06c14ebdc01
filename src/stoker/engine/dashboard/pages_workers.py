"""The Workers page's data: each worker's heartbeat age, slots by pool, labels and the
attempts it holds.

A worker has two pools of slots, ``slots`` for plain tasks and ``durable_slots`` for
durable ones; an attempt holds its task's ``slot_cost`` slots of its pool (the
dispatcher's accounting, :mod:`stoker.engine.dispatcher.conns`). A live worker whose last
heartbeat is older than :data:`LATE_AFTER` is shown as late: the engine has not yet
declared it dead, but it may be.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from stoker.db import Executor
from stoker.db.store import dashboard_pages as store
from stoker.engine.dashboard.pages_words import ago
from stoker.errors import NotFoundError

LATE_AFTER = timedelta(seconds=15)
"""A heartbeat this old makes a live worker "late" on the page (heartbeats come every few
seconds; the engine declares a worker dead later, after its own timeout)."""

MAX_WORKERS = 500
MAX_HELD = 200


@dataclass(frozen=True, slots=True)
class Pool:
    """One pool of a worker's slots."""

    name: str
    used: int
    total: int

    @property
    def percent(self) -> int:
        """How full the pool is, 0-100 (for a bar)."""
        return min(100, round(100 * self.used / self.total)) if self.total else 0


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A worker as the page shows it."""

    id: uuid.UUID
    name: str
    status: str
    late: bool
    heartbeat_age: str
    heartbeat_at: datetime
    connected: str
    pools: list[Pool]
    labels: dict[str, Any]
    task_names: list[str]
    running: int
    paused: str
    """Since when the worker is paused, in words ("" when it is not)."""
    draining: str = ""
    """Since when the worker is asked to drain, in words ("" when it is not)."""


@dataclass(frozen=True, slots=True)
class HeldRun:
    """An attempt a worker holds now."""

    run_id: uuid.UUID
    task_name: str
    status: str
    attempt: int
    assigned: str
    workflow_run_id: uuid.UUID | None
    step: str | None


def _view(row: store.WorkerRow) -> WorkerView:
    now = row["db_now"]
    pools = [Pool("slots", row["used_slots"], row["slots"])]
    if row["durable_slots"] or row["used_durable_slots"]:
        pools.append(Pool("durable slots", row["used_durable_slots"], row["durable_slots"]))
    age = now - row["last_heartbeat_at"]
    return WorkerView(
        id=row["external_id"],
        name=row["name"],
        status=row["status"],
        late=row["status"] == "ACTIVE" and age > LATE_AFTER,
        heartbeat_age=ago(row["last_heartbeat_at"], now),
        heartbeat_at=row["last_heartbeat_at"],
        connected=ago(row["connected_at"], now),
        pools=pools,
        labels=dict(row["labels"] or {}),
        task_names=sorted(row["task_names"]),
        running=row["running"],
        paused=ago(row["paused_at"], now) if row["paused_at"] else "",
        draining=ago(row["drain_requested_at"], now) if row["drain_requested_at"] else "",
    )


async def list_workers(
    db: Executor, tenant_id: int, statuses: list[str] | None
) -> list[WorkerView]:
    """The tenant's workers (live ones first), at most :data:`MAX_WORKERS`."""
    rows = await store.dash_workers(
        db, store.DashWorkers(tenant_id, statuses or None, None, MAX_WORKERS)
    )
    return [_view(r) for r in rows]


async def worker_detail(
    db: Executor, tenant_id: int, worker_id: uuid.UUID
) -> tuple[WorkerView, list[HeldRun]]:
    """One worker and the attempts it holds; NotFoundError when the tenant has no such
    worker."""
    rows = await store.dash_workers(db, store.DashWorkers(tenant_id, None, worker_id, 1))
    if not rows:
        raise NotFoundError(f"no worker {worker_id} in this tenant")
    held = await store.dash_worker_runs(db, store.DashWorkerRuns(tenant_id, worker_id, MAX_HELD))
    now = rows[0]["db_now"]
    return _view(rows[0]), [
        HeldRun(
            run_id=h["external_id"],
            task_name=h["task_name"],
            status=h["status"],
            attempt=h["attempt"],
            assigned=ago(h["assigned_at"], now),
            workflow_run_id=h["workflow_run_id"],
            step=h["step"],
        )
        for h in held
    ]
