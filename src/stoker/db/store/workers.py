"""Workers: registration, heartbeats, liveness, labels.

Statements of ``db/sql/workers.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

from stoker.db.store import Exec, Many, NoParams, One


@dataclass(frozen=True, slots=True)
class RegisterWorker:
    tenant_id: int
    external_id: uuid.UUID
    name: str
    slots: int
    task_names: list[str]
    labels: str
    durable_slots: int


class RegisteredWorker(TypedDict):
    """A worker just registered."""

    id: int
    connected_at: datetime
    paused: bool


register_worker = One[RegisterWorker, RegisteredWorker]("register_worker")


@dataclass(frozen=True, slots=True)
class HeartbeatWorkers:
    external_ids: list[uuid.UUID]
    tenant_id: int


class LiveWorker(TypedDict):
    """A worker whose heartbeat was recorded."""

    external_id: uuid.UUID
    paused: bool
    drain: bool


heartbeat_workers = Many[HeartbeatWorkers, LiveWorker]("heartbeat_workers")


@dataclass(frozen=True, slots=True)
class WorkerTenant:
    external_id: uuid.UUID


class WorkerOwner(TypedDict):
    """The tenant of a worker."""

    tenant_id: int


worker_tenant = One[WorkerTenant, WorkerOwner]("worker_tenant")


@dataclass(frozen=True, slots=True)
class MarkDeadWorkers:
    dead_after_ms: int


class DeadWorker(TypedDict):
    """A worker just declared dead."""

    id: int
    external_id: uuid.UUID
    tenant_id: int


mark_dead_workers = Many[MarkDeadWorkers, DeadWorker]("mark_dead_workers")


forgive_missed_heartbeats = Exec[NoParams]("forgive_missed_heartbeats")


@dataclass(frozen=True, slots=True)
class StopWorker:
    worker_id: int


stop_worker = Exec[StopWorker]("stop_worker")


@dataclass(frozen=True, slots=True)
class WorkerIdsByExternal:
    tenant_id: int
    external_ids: list[uuid.UUID]


class WorkerId(TypedDict):
    """A worker's internal and external ids."""

    id: int
    external_id: uuid.UUID


worker_ids_by_external = Many[WorkerIdsByExternal, WorkerId]("worker_ids_by_external")


@dataclass(frozen=True, slots=True)
class UpdateWorkerLabels:
    worker_id: int
    labels: str


update_worker_labels = Exec[UpdateWorkerLabels]("update_worker_labels")


@dataclass(frozen=True, slots=True)
class ServedTaskNames:
    tenant_id: int


class ServedTaskName(TypedDict):
    """A task name a live worker serves."""

    task_name: str


served_task_names = Many[ServedTaskNames, ServedTaskName]("served_task_names")
