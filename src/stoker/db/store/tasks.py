"""Task runs: definitions, creation, attempts starting and ending, timeouts, cancellation.

Statements of ``db/sql/tasks.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from stoker.db.store import Exec, Many


@dataclass(frozen=True, slots=True)
class UpsertTaskDefs:
    tenant_id: int
    names: list[str]
    configs: list[str]


upsert_task_defs = Exec[UpsertTaskDefs]("upsert_task_defs")


@dataclass(frozen=True, slots=True)
class GetTaskDefs:
    tenant_id: int


class TaskDef(TypedDict):
    """A task's stored definition."""

    name: str
    config: Any


get_task_defs = Many[GetTaskDefs, TaskDef]("get_task_defs")


@dataclass(frozen=True, slots=True)
class InsertTasks:
    tenant_id: int
    external_ids: list[uuid.UUID]
    task_names: list[str]
    priorities: list[int]
    inputs: list[str]
    metadata: list[str]
    max_retries: list[int]
    backoff_factors: list[float | None]
    backoff_max_ms: list[int]
    execution_timeouts_ms: list[int]
    schedule_timeouts_ms: list[int]
    run_at: list[datetime | None]
    statuses: list[str]
    errors: list[str | None]
    rate_limits: list[str | None]
    desired_worker_ids: list[int | None]
    concurrency_keys: list[str | None]


insert_tasks = Exec[InsertTasks]("insert_tasks")


@dataclass(frozen=True, slots=True)
class MarkStarted:
    task_ids: str
    attempts: str
    started_ms: str
    worker_ids: str


mark_started = Exec[MarkStarted]("mark_started")


@dataclass(frozen=True, slots=True)
class CompleteAttempts:
    task_ids: str
    attempts: str
    outputs: str
    finished_ms: str
    worker_ids: str
    started_ms: str
    with_metadata: bool = False
    """Return each run's additional metadata (for metrics labelled by metadata)."""


class CompletedRun(TypedDict):
    """A run whose attempt just succeeded (``run_s``: how long the attempt ran)."""

    id: int
    external_id: uuid.UUID
    tenant_id: int
    dag_id: int | None
    task_name: str
    run_s: float | None
    metadata: dict[str, Any] | None


complete_attempts = Many[CompleteAttempts, CompletedRun]("complete_attempts")


@dataclass(frozen=True, slots=True)
class FailAttempts:
    task_ids: list[int]
    attempts: list[int]
    errors: list[str]
    retryable: list[bool]
    counts: list[bool]
    delays_ms: list[int]
    kinds: list[str]
    reporters: list[int | None]
    max_requeues: int
    with_metadata: bool = False


class FailedAttempt(TypedDict):
    """An attempt just ended without success, and the run's status after it (QUEUED: retried)."""

    id: int
    external_id: uuid.UUID
    tenant_id: int
    status: str
    worker_id: int
    attempt: int
    dag_id: int | None
    task_name: str
    kind: str
    run_s: float | None
    metadata: dict[str, Any] | None


fail_attempts = Many[FailAttempts, FailedAttempt]("fail_attempts")


@dataclass(frozen=True, slots=True)
class ExpireScheduleTimeouts:
    limit: int
    error: str


class ExpiredRun(TypedDict):
    """A run cancelled by its schedule timeout."""

    id: int
    external_id: uuid.UUID
    tenant_id: int
    task_name: str


expire_schedule_timeouts = Many[ExpireScheduleTimeouts, ExpiredRun]("expire_schedule_timeouts")


@dataclass(frozen=True, slots=True)
class ExpiredRuntimes:
    limit: int


class Runtime(TypedDict):
    """An attempt held by a worker."""

    task_id: int
    attempt: int
    worker_id: int


expired_runtimes = Many[ExpiredRuntimes, Runtime]("expired_runtimes")


@dataclass(frozen=True, slots=True)
class RefreshTimeouts:
    task_ids: list[int]
    attempts: list[int]
    timeouts_ms: list[int]
    worker_ids: list[int]


refresh_timeouts = Exec[RefreshTimeouts]("refresh_timeouts")


@dataclass(frozen=True, slots=True)
class EndedAttempts:
    task_ids: str
    attempts: str


class EndedAttempt(TypedDict):
    """An attempt that no longer holds its task_runtime row."""

    task_id: int
    attempt: int


ended_attempts = Many[EndedAttempts, EndedAttempt]("ended_attempts")


@dataclass(frozen=True, slots=True)
class RuntimesOfWorkers:
    worker_ids: list[int]


runtimes_of_workers = Many[RuntimesOfWorkers, Runtime]("runtimes_of_workers")


@dataclass(frozen=True, slots=True)
class OrphanedRuntimes:
    dead_after_ms: int
    limit: int


orphaned_runtimes = Many[OrphanedRuntimes, Runtime]("orphaned_runtimes")


@dataclass(frozen=True, slots=True)
class RuntimesOfRegisteringWorker:
    worker_id: int
    tenant_id: int
    before: datetime


class HeldRuntime(TypedDict):
    """An attempt a registering worker holds; ``stale``: assigned before this registration."""

    task_id: int
    attempt: int
    stale: bool


runtimes_of_registering_worker = Many[RuntimesOfRegisteringWorker, HeldRuntime](
    "runtimes_of_registering_worker"
)


@dataclass(frozen=True, slots=True)
class CancelTasks:
    task_ids: list[int]
    errors: list[str]


class CancelledTask(TypedDict):
    """A task just cancelled, with the worker and attempt when it was running."""

    id: int
    external_id: uuid.UUID
    tenant_id: int
    worker_id: int | None
    attempt: int | None
    task_name: str


cancel_tasks = Many[CancelTasks, CancelledTask]("cancel_tasks")
