"""The REST API's reads (single runs, pages of runs, workers, workflow runs).

Statements of ``db/sql/read.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from stoker.db.store import Many, NoParams, One


class Ping(TypedDict):
    """The database answered."""

    ok: int


api_ping = One[NoParams, Ping]("api_ping")


@dataclass(frozen=True, slots=True)
class ApiGetRun:
    tenant_id: int
    run_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ApiRunConcurrency:
    tenant_id: int
    task_id: int


class RunSlot(TypedDict):
    """A concurrency slot a run holds or waits for."""

    expression: str
    max_runs: int
    limit_strategy: str
    key: str
    admitted: bool


api_run_concurrency = Many[ApiRunConcurrency, RunSlot]("api_run_concurrency")


@dataclass(frozen=True, slots=True)
class ApiRunEvents:
    tenant_id: int
    task_id: int


class RunEvent(TypedDict):
    """An attempt of a run that ended other than by success."""

    attempt: int
    kind: str
    data: Any
    created_at: datetime
    worker_external_id: uuid.UUID | None


api_run_events = Many[ApiRunEvents, RunEvent]("api_run_events")


@dataclass(frozen=True, slots=True)
class ApiListRuns:
    """A page of a tenant's runs: a time window, and the keyset cursor after the last run
    of the previous page."""

    tenant_id: int
    since: datetime | None
    until: datetime | None
    cursor_created_at: datetime | None
    cursor_run_id: uuid.UUID | None
    limit: int


class RunSummary(TypedDict):
    """A run in a page of runs (its error without traceback)."""

    id: int
    external_id: uuid.UUID
    task_name: str
    status: str
    error: Any
    additional_metadata: Any
    priority: int
    attempt: int
    retry_count: int
    max_retries: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker_external_id: uuid.UUID | None


class RunDetail(RunSummary):
    """One run with its input, output, placement and task definition."""

    input: Any
    output: Any
    assigned_at: datetime | None
    rate_limits: Any
    desired_worker_external_id: uuid.UUID | None
    task_config: Any


api_list_runs = Many[ApiListRuns, RunSummary]("api_list_runs")
api_get_run = One[ApiGetRun, RunDetail]("api_get_run")


@dataclass(frozen=True, slots=True)
class ApiListRunsByStatus(ApiListRuns):
    statuses: list[str]


class RunSummaryOfPage(RunSummary):
    """A run in a page read status by status (with its worker's internal id)."""

    worker_id: int | None


api_list_runs_by_status = Many[ApiListRunsByStatus, RunSummaryOfPage]("api_list_runs_by_status")


@dataclass(frozen=True, slots=True)
class ApiListRunsOfTask(ApiListRunsByStatus):
    task_name: str


api_list_runs_of_task = Many[ApiListRunsOfTask, RunSummaryOfPage]("api_list_runs_of_task")


@dataclass(frozen=True, slots=True)
class ApiListWorkers:
    tenant_id: int
    statuses: list[str] | None


class WorkerSummary(TypedDict):
    """A worker with how many attempts it holds."""

    external_id: uuid.UUID
    name: str
    status: str
    slots: int
    task_names: list[str]
    last_heartbeat_at: datetime
    connected_at: datetime
    running: int
    labels: Any
    durable_slots: int


api_list_workers = Many[ApiListWorkers, WorkerSummary]("api_list_workers")


@dataclass(frozen=True, slots=True)
class ApiListTaskDefs:
    tenant_id: int


class TaskDefSummary(TypedDict):
    """A task definition."""

    name: str
    config: Any
    updated_at: datetime


api_list_task_defs = Many[ApiListTaskDefs, TaskDefSummary]("api_list_task_defs")


@dataclass(frozen=True, slots=True)
class ApiGetWorkflowRun:
    tenant_id: int
    run_id: uuid.UUID


class WorkflowRunDetail(TypedDict):
    """One workflow run with its version's config."""

    id: int
    external_id: uuid.UUID
    workflow_name: str
    status: str
    input: Any
    additional_metadata: Any
    error: Any
    created_at: datetime
    finished_at: datetime | None
    config: Any


api_get_workflow_run = One[ApiGetWorkflowRun, WorkflowRunDetail]("api_get_workflow_run")


@dataclass(frozen=True, slots=True)
class ApiWorkflowSteps:
    tenant_id: int
    dag_id: int


class WorkflowStep(TypedDict):
    """A step of a workflow run with its worker, waits and children (JSON lists)."""

    id: int
    external_id: uuid.UUID
    task_name: str
    step: str
    status: str
    skipped: bool
    output: Any
    error: Any
    attempt: int
    retry_count: int
    max_retries: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    assigned_at: datetime | None
    worker_external_id: uuid.UUID | None
    waits: list[Any]
    children: list[Any]


api_workflow_steps = Many[ApiWorkflowSteps, WorkflowStep]("api_workflow_steps")


@dataclass(frozen=True, slots=True)
class ApiWorkflowStepEvents:
    tenant_id: int
    dag_id: int


class StepEvent(TypedDict):
    """An attempt of a workflow step that ended other than by success."""

    task_id: int
    attempt: int
    kind: str
    data: Any
    created_at: datetime
    worker_external_id: uuid.UUID | None


api_workflow_step_events = Many[ApiWorkflowStepEvents, StepEvent]("api_workflow_step_events")


@dataclass(frozen=True, slots=True)
class ApiListWorkflowRuns:
    tenant_id: int
    names: list[str] | None
    statuses: list[str] | None
    metadata: str | None
    cursor_created_at: datetime | None
    cursor_run_id: uuid.UUID | None
    limit: int


class WorkflowRunSummary(TypedDict):
    """A workflow run in a page of runs."""

    external_id: uuid.UUID
    workflow_name: str
    status: str
    additional_metadata: Any
    error: Any
    created_at: datetime
    finished_at: datetime | None


api_list_workflow_runs = Many[ApiListWorkflowRuns, WorkflowRunSummary]("api_list_workflow_runs")
