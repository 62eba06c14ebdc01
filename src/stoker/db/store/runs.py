"""Runs as the client sees them: states and results (the long poll), and cancel, replay and restore.

Statements of ``db/sql/runs.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from stoker.db.store import Exec, Many


@dataclass(frozen=True, slots=True)
class RunStates:
    tenant_id: int
    external_ids: list[uuid.UUID]


class RunState(TypedDict):
    """A run's status, and the outcome (output as JSON text, error) of a finished one."""

    external_id: uuid.UUID
    status: str
    output: str | None
    error: Any


run_states = Many[RunStates, RunState]("run_states")


run_states_history = Many[RunStates, RunState]("run_states_history")


@dataclass(frozen=True, slots=True)
class FinishedRunStates:
    tenant_id: int
    external_ids: str
    """One array literal of canonical UUID text (``'{a,b}'``)."""


class FinishedRunState(TypedDict):
    """A finished run's outcome, its id as text (output as JSON text, error)."""

    external_id: str
    status: str
    output: str | None
    error: Any


finished_run_states = Many[FinishedRunStates, FinishedRunState]("finished_run_states")


@dataclass(frozen=True, slots=True)
class RunResultsByIds:
    external_ids: list[uuid.UUID]


class RunResult(RunState):
    """A finished run's outcome (output as JSON text), with its tenant."""

    tenant_id: int


run_results_by_ids = Many[RunResultsByIds, RunResult]("run_results_by_ids")


@dataclass(frozen=True, slots=True)
class ResolveRuns:
    tenant_id: int
    run_ids: list[uuid.UUID]


class ResolvedRun(TypedDict):
    """A run id as a DAG run (dag_id) or a single-task run (task_id)."""

    external_id: uuid.UUID
    dag_id: int | None
    task_id: int | None
    status: str


resolve_runs = Many[ResolveRuns, ResolvedRun]("resolve_runs")


@dataclass(frozen=True, slots=True)
class FilterRuns:
    tenant_id: int
    names: list[str] | None
    statuses: list[str] | None
    since: datetime | None
    until: datetime | None
    metadata: str | None
    limit: int


class FilteredRun(TypedDict):
    """A run matching a bulk filter."""

    external_id: uuid.UUID
    dag_id: int | None
    task_id: int | None
    status: str
    created_at: datetime


filter_runs = Many[FilterRuns, FilteredRun]("filter_runs")


@dataclass(frozen=True, slots=True)
class CancellableTasks:
    dag_ids: list[int]
    task_ids: list[int]


class CancellableTask(TypedDict):
    """An unfinished task of the runs being cancelled."""

    id: int
    dag_id: int | None


cancellable_tasks = Many[CancellableTasks, CancellableTask]("cancellable_tasks")


@dataclass(frozen=True, slots=True)
class MarkDagsCancelled:
    dag_ids: list[int]


mark_dags_cancelled = Exec[MarkDagsCancelled]("mark_dags_cancelled")


@dataclass(frozen=True, slots=True)
class ReplayableChildren:
    dag_ids: list[int]
    task_ids: list[int]


class ReplayableChild(TypedDict):
    """A failed or cancelled child run: a DAG run (dag_id) or a single-task run (task_id)."""

    dag_id: int | None
    task_id: int | None


replayable_children = Many[ReplayableChildren, ReplayableChild]("replayable_children")


@dataclass(frozen=True, slots=True)
class LockLiveRuns:
    tenant_id: int
    run_ids: list[uuid.UUID]


class RunTask(TypedDict):
    """A task id of the runs being replayed."""

    id: int


lock_live_runs = Many[LockLiveRuns, RunTask]("lock_live_runs")


@dataclass(frozen=True, slots=True)
class RestoreRuns:
    tenant_id: int
    run_ids: list[uuid.UUID]


restore_runs = Many[RestoreRuns, RunTask]("restore_runs")


@dataclass(frozen=True, slots=True)
class ChildRunIds:
    task_ids: list[int]


class ChildRunId(TypedDict):
    """A child run's id."""

    external_id: uuid.UUID


child_run_ids = Many[ChildRunIds, ChildRunId]("child_run_ids")


@dataclass(frozen=True, slots=True)
class ReplayDags:
    dag_ids: list[int]
    handler_task_names: str


class ReplayedStep(TypedDict):
    """A step put back to PENDING, by its DAG run."""

    dag_id: int


replay_dags = Many[ReplayDags, ReplayedStep]("replay_dags")


@dataclass(frozen=True, slots=True)
class ReplayTasks:
    task_ids: list[int]


class ReplayedTask(TypedDict):
    """A single-task run re-queued (``gated``: waiting for concurrency admission)."""

    task_id: int
    gated: bool


replay_tasks = Many[ReplayTasks, ReplayedTask]("replay_tasks")


@dataclass(frozen=True, slots=True)
class ReplayDagSteps:
    dag_id: int
    steps: list[str]
    input: str | None


replay_dag_steps = Many[ReplayDagSteps, ReplayedStep]("replay_dag_steps")


@dataclass(frozen=True, slots=True)
class ReplayTaskWithInput:
    task_id: int
    input: str


replay_task_with_input = Many[ReplayTaskWithInput, ReplayedTask]("replay_task_with_input")


@dataclass(frozen=True, slots=True)
class DurableTasksAmong:
    dag_id: int | None
    steps: list[str]
    task_id: int | None


class DurableTaskName(TypedDict):
    """A task that keeps a durable log, by its step name (or task name)."""

    id: int
    name: str


durable_tasks_among = Many[DurableTasksAmong, DurableTaskName]("durable_tasks_among")
