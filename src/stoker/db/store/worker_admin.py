"""Workers as an operator sees and steers them: listing with current runs, pausing.

Statements of ``db/sql/worker_admin.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from stoker.db.store import Many, One


@dataclass(frozen=True, slots=True)
class AdminListWorkers:
    tenant_id: int
    statuses: list[str] | None
    worker_id: uuid.UUID | None


class AdminWorker(TypedDict):
    """A worker with what it runs now."""

    external_id: uuid.UUID
    name: str
    status: str
    slots: int
    durable_slots: int
    task_names: list[str]
    labels: dict[str, Any]
    last_heartbeat_at: datetime
    heartbeat_age_s: float
    connected_at: datetime
    paused_at: datetime | None
    current_runs: list[uuid.UUID]


admin_list_workers = Many[AdminListWorkers, AdminWorker]("admin_list_workers")


@dataclass(frozen=True, slots=True)
class SetWorkerPaused:
    tenant_id: int
    worker_id: uuid.UUID
    paused: bool


class PausedWorker(TypedDict):
    """A worker just paused or resumed."""

    id: int
    external_id: uuid.UUID
    paused_at: datetime | None


set_worker_paused = One[SetWorkerPaused, PausedWorker]("set_worker_paused")


@dataclass(frozen=True, slots=True)
class SetWorkerDrain:
    tenant_id: int
    worker_id: uuid.UUID


set_worker_drain = One[SetWorkerDrain, PausedWorker]("set_worker_drain")
