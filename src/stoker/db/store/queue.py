"""The queue: attempts waiting for a worker, their claim and assignment.

Statements of ``db/sql/queue.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

from stoker.db.store import Exec, Many, NoParams


@dataclass(frozen=True, slots=True)
class ClaimQueueItems:
    tenant_id: int
    queues: list[str]
    limits: list[int]


class ClaimedItem(TypedDict):
    """A queue item locked by this round (``rate_limits``: its JSON text)."""

    id: int
    task_id: int
    attempt: int
    queue: str
    priority: int
    rate_limits: str | None
    desired_worker_id: int | None
    available_at: datetime


claim_queue_items = Many[ClaimQueueItems, ClaimedItem]("claim_queue_items")


@dataclass(frozen=True, slots=True)
class AssignQueueItems:
    item_ids: str
    task_ids: str
    attempts: str
    worker_ids: str
    timeout_grace_ms: int
    assigned_at: datetime | None


class Assignment(TypedDict):
    """What a worker needs to run an assigned attempt (input and metadata as JSON text)."""

    task_id: int
    external_id: uuid.UUID
    task_name: str
    input: str
    additional_metadata: str
    retry_count: int
    execution_timeout_ms: int
    attempt: int
    worker_id: int
    max_retries: int
    workflow_run_id: uuid.UUID | None
    parent_run_id: uuid.UUID | None
    child_index: int | None
    child_key: str | None
    filter_payload: str | None


assign_queue_items = Many[AssignQueueItems, Assignment]("assign_queue_items")


@dataclass(frozen=True, slots=True)
class EnqueueTasks:
    task_ids: list[int]


enqueue_tasks = Exec[EnqueueTasks]("enqueue_tasks")


@dataclass(frozen=True, slots=True)
class DeferQueueItems:
    item_ids: list[int]
    until: list[datetime]


defer_queue_items = Exec[DeferQueueItems]("defer_queue_items")


analyze_queue = Exec[NoParams]("analyze_queue")


vacuum_queue = Exec[NoParams]("vacuum_queue")
