"""Workflows and DAG runs: definitions and versions, creating runs, and progression.

Statements of ``db/sql/dags.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, TypedDict

from stoker.db.store import Exec, Many


@dataclass(frozen=True, slots=True)
class RegisterWorkflow:
    tenant_id: int
    name: str
    hash: str
    config: str


register_workflow = Exec[RegisterWorkflow]("register_workflow")


@dataclass(frozen=True, slots=True)
class CurrentWorkflows:
    tenant_id: int


class CurrentWorkflow(TypedDict):
    """The version of a workflow new runs use."""

    name: str
    version_id: int
    config: Any


current_workflows = Many[CurrentWorkflows, CurrentWorkflow]("current_workflows")


@dataclass(frozen=True, slots=True)
class WorkflowVersions:
    ids: list[int]


class WorkflowVersion(TypedDict):
    """A stored workflow version."""

    id: int
    name: str
    config: Any


workflow_versions = Many[WorkflowVersions, WorkflowVersion]("workflow_versions")


@dataclass(frozen=True, slots=True)
class InsertDags:
    tenant_id: int
    external_ids: list[uuid.UUID]
    names: list[str]
    version_ids: list[int]
    inputs: list[str]
    metadata: list[str]


class InsertedDag(TypedDict):
    """A DAG run just created."""

    id: int
    external_id: uuid.UUID


insert_dags = Many[InsertDags, InsertedDag]("insert_dags")


@dataclass(frozen=True, slots=True)
class AttachDagTasks:
    task_external_ids: list[uuid.UUID]
    dag_external_ids: list[uuid.UUID]
    steps: list[str]


attach_dag_tasks = Exec[AttachDagTasks]("attach_dag_tasks")


@dataclass(frozen=True, slots=True)
class LockDags:
    dag_ids: list[int]


class LockedDag(TypedDict):
    """A DAG run locked for progression."""

    id: int


lock_dags = Many[LockDags, LockedDag]("lock_dags")


@dataclass(frozen=True, slots=True)
class DagSteps:
    dag_ids: list[int]


class DagStep(TypedDict):
    """A step of a locked DAG run, with its waits ({cond: satisfied}, None without any)."""

    id: int
    dag_id: int
    tenant_id: int
    step: str
    status: str
    skipped: bool
    error: Any
    version_id: int
    cancelled: bool
    dag_external_id: uuid.UUID
    waits: dict[str, bool] | None


dag_steps = Many[DagSteps, DagStep]("dag_steps")


@dataclass(frozen=True, slots=True)
class TaskOutputs:
    task_ids: list[int]


class TaskOutput(TypedDict):
    """A task's output."""

    id: int
    output: Any


task_outputs = Many[TaskOutputs, TaskOutput]("task_outputs")


@dataclass(frozen=True, slots=True)
class EnqueueDagSteps:
    task_ids: list[int]
    parents: list[str]


class GatedTenant(TypedDict):
    """A tenant whose readied steps wait for concurrency admission."""

    tenant_id: int


enqueue_dag_steps = Many[EnqueueDagSteps, GatedTenant]("enqueue_dag_steps")


@dataclass(frozen=True, slots=True)
class SkipDagSteps:
    task_ids: list[int]


skip_dag_steps = Exec[SkipDagSteps]("skip_dag_steps")


@dataclass(frozen=True, slots=True)
class FinishDags:
    dag_ids: list[int]
    statuses: list[str]
    errors: list[str | None]


class FinishedDag(TypedDict):
    """A DAG run just finished."""

    external_id: uuid.UUID
    tenant_id: int


finish_dags = Many[FinishDags, FinishedDag]("finish_dags")


@dataclass(frozen=True, slots=True)
class StalledDags:
    limit: int


class StalledDag(TypedDict):
    """A DAG run whose progression was missed."""

    id: int


stalled_dags = Many[StalledDags, StalledDag]("stalled_dags")
