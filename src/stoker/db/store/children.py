"""Child runs spawned from inside a task.

Statements of ``db/sql/children.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TypedDict

from stoker.db.store import Many, One


@dataclass(frozen=True, slots=True)
class ClaimChildren:
    tenant_id: int
    parent_task_id: int
    child_indexes: list[int]
    child_keys: list[str]
    external_ids: list[uuid.UUID]
    is_workflow: list[bool]


class ClaimedChild(TypedDict):
    """A child run just recorded."""

    external_id: uuid.UUID


claim_children = Many[ClaimChildren, ClaimedChild]("claim_children")


@dataclass(frozen=True, slots=True)
class ExistingChildren:
    parent_task_id: int
    child_indexes: list[int]
    child_keys: list[str]


class ExistingChild(TypedDict):
    """The child run already recorded for the n-th (1-based) requested child."""

    n: int
    external_id: uuid.UUID


existing_children = Many[ExistingChildren, ExistingChild]("existing_children")


@dataclass(frozen=True, slots=True)
class ParentTask:
    tenant_id: int
    task_id: int


class Parent(TypedDict):
    """The task spawning children."""

    id: int
    tenant_id: int
    attempt: int
    status: str
    dag_id: int | None


parent_task = One[ParentTask, Parent]("parent_task")


@dataclass(frozen=True, slots=True)
class ParentWorker:
    task_id: int


class WorkerOfTask(TypedDict):
    worker_id: int


parent_worker = One[ParentWorker, WorkerOfTask]("parent_worker")
