"""The dashboard's reads for its Workers, Tasks and workflows, Queues and Rate limits pages.

Statements of ``db/sql/dashboard_pages.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from stoker.db.store import Many


@dataclass(frozen=True, slots=True)
class DashWorkers:
    tenant_id: int
    statuses: list[str] | None
    worker_id: uuid.UUID | None
    limit: int


class WorkerRow(TypedDict):
    """A worker with the slots each of its pools holds now."""

    external_id: uuid.UUID
    name: str
    status: str
    slots: int
    durable_slots: int
    task_names: list[str]
    labels: Any
    last_heartbeat_at: datetime
    connected_at: datetime
    paused_at: datetime | None
    drain_requested_at: datetime | None
    db_now: datetime
    running: int
    used_slots: int
    used_durable_slots: int


dash_workers = Many[DashWorkers, WorkerRow]("dash_workers")


@dataclass(frozen=True, slots=True)
class DashWorkerRuns:
    tenant_id: int
    worker_id: uuid.UUID
    limit: int


class WorkerRunRow(TypedDict):
    """An attempt a worker holds."""

    external_id: uuid.UUID
    task_name: str
    status: str
    attempt: int
    assigned_at: datetime
    timeout_at: datetime | None
    started_at: datetime | None
    workflow_run_id: uuid.UUID | None
    step: str | None


dash_worker_runs = Many[DashWorkerRuns, WorkerRunRow]("dash_worker_runs")


@dataclass(frozen=True, slots=True)
class DashDefs:
    tenant_id: int
    name: str | None


class DefRow(TypedDict):
    """A task or workflow definition and its pause (paused_at None when not paused)."""

    name: str
    config: Any
    updated_at: datetime
    paused_at: datetime | None
    drop_runs: bool


dash_task_defs = Many[DashDefs, DefRow]("dash_task_defs")
dash_workflow_defs = Many[DashDefs, DefRow]("dash_workflow_defs")


@dataclass(frozen=True, slots=True)
class DashRunCounts:
    tenant_id: int
    since: datetime
    name: str | None


class RunCountRow(TypedDict):
    """How many runs of one task or workflow are in one status."""

    name: str
    status: str
    runs: int


dash_task_run_counts = Many[DashRunCounts, RunCountRow]("dash_task_run_counts")
dash_workflow_run_counts = Many[DashRunCounts, RunCountRow]("dash_workflow_run_counts")


@dataclass(frozen=True, slots=True)
class DashTenant:
    tenant_id: int


class QueueDepthRow(TypedDict):
    """Waiting attempts of one queue and priority."""

    queue: str
    priority: int
    depth: int
    rate_limited: int
    deferred: int
    oldest_created_at: datetime | None
    served: bool
    paused: bool
    db_now: datetime


dash_queue_depths = Many[DashTenant, QueueDepthRow]("dash_queue_depths")


@dataclass(frozen=True, slots=True)
class DashLimited:
    tenant_id: int
    limit: int


class ConcurrencyWaitRow(TypedDict):
    """Runs of one task waiting for a slot of one concurrency key."""

    task_name: str
    expression: str
    max_runs: int
    limit_strategy: str
    key: str
    waiting: int
    holding: int
    oldest_at: datetime
    db_now: datetime


dash_concurrency_waiting = Many[DashLimited, ConcurrencyWaitRow]("dash_concurrency_waiting")


class RateLimitRow(TypedDict):
    """A rate limit, the units its window holds now and the attempts it defers."""

    key: str
    limit_value: int
    window_ms: int
    dynamic: bool
    updated_at: datetime
    db_now: datetime
    used: int
    oldest_start_us: int | None
    waiting: int


dash_rate_limits = Many[DashLimited, RateLimitRow]("dash_rate_limits")
