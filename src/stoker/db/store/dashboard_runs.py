"""The dashboard's reads of runs: overview series, stuck runs, the runs list.

Statements of ``db/sql/dashboard_runs.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict

from stoker.db.store import Many, One


@dataclass(frozen=True, slots=True)
class DashOverviewSeries:
    tenant_id: int
    since: datetime
    until: datetime
    step: timedelta
    buckets: int


class SeriesRow(TypedDict):
    """One bucket of the overview's charts."""

    i: int
    lo: datetime
    completed: int
    failed: int
    wait_p50: float | None
    wait_p95: float | None
    duration_p50: float | None
    duration_p95: float | None
    queued: int
    running: int


dash_overview_series = Many[DashOverviewSeries, SeriesRow]("dash_overview_series")


@dataclass(frozen=True, slots=True)
class DashTopFailing:
    tenant_id: int
    since: datetime
    until: datetime


class FailingTask(TypedDict):
    task_name: str
    failed: int
    total: int


dash_top_failing = Many[DashTopFailing, FailingTask]("dash_top_failing")


@dataclass(frozen=True, slots=True)
class DashTenant:
    tenant_id: int


class Capacity(TypedDict):
    slots: int
    workers: int


dash_slot_capacity = One[DashTenant, Capacity]("dash_slot_capacity")


class StuckOnWorker(TypedDict):
    """A run held by a worker that is no longer live."""

    external_id: uuid.UUID
    task_name: str
    status: str
    created_at: datetime
    started_at: datetime | None
    worker_name: str
    worker_status: str
    last_heartbeat_at: datetime


dash_stuck_on_workers = Many[DashTenant, StuckOnWorker]("dash_stuck_on_workers")


class QueuedTask(TypedDict):
    task_name: str
    queued: int
    oldest: datetime


dash_queued_by_task = Many[DashTenant, QueuedTask]("dash_queued_by_task")


@dataclass(frozen=True, slots=True)
class DashListRuns:
    tenant_id: int
    kinds: list[str]
    statuses: list[str] | None
    name: str | None
    since: datetime
    until: datetime
    metadata: str | None
    cursor_created_at: datetime | None
    cursor_kind: str | None
    cursor_run_id: uuid.UUID | None
    limit: int


class ListedRun(TypedDict):
    """A row of the runs list."""

    kind: str
    id: int
    external_id: uuid.UUID
    name: str
    status: str
    additional_metadata: dict[str, object]
    attempt: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error_message: str | None
    worker_name: str | None


dash_list_runs = Many[DashListRuns, ListedRun]("dash_list_runs")


@dataclass(frozen=True, slots=True)
class DashMatchRuns:
    tenant_id: int
    kinds: list[str]
    statuses: list[str] | None
    name: str | None
    since: datetime
    until: datetime
    metadata: str | None
    max_runs: int


class MatchedRun(TypedDict):
    external_id: uuid.UUID


dash_match_runs = Many[DashMatchRuns, MatchedRun]("dash_match_runs")


@dataclass(frozen=True, slots=True)
class DashMatchRunsMeta:
    tenant_id: int
    kinds: list[str]
    statuses: list[str] | None
    name: str | None
    since: datetime
    until: datetime
    metadata: str | None
    required: str
    max_runs: int


dash_match_runs_meta = Many[DashMatchRunsMeta, MatchedRun]("dash_match_runs_meta")


@dataclass(frozen=True, slots=True)
class DashRunsHistogram:
    tenant_id: int
    kinds: list[str]
    statuses: list[str] | None
    name: str | None
    since: datetime
    until: datetime
    metadata: str | None
    step: timedelta
    buckets: int


class HistogramCell(TypedDict):
    i: int
    status: str
    n: int
    capped: bool


dash_runs_histogram = Many[DashRunsHistogram, HistogramCell]("dash_runs_histogram")


@dataclass(frozen=True, slots=True)
class DashRunKind:
    tenant_id: int
    run_id: uuid.UUID


class RunKind(TypedDict):
    kind: str
    dag_external_id: uuid.UUID | None
    step: str | None


dash_run_kind = One[DashRunKind, RunKind]("dash_run_kind")


@dataclass(frozen=True, slots=True)
class DashRunChildren:
    tenant_id: int
    run_ids: list[uuid.UUID]


class ChildRow(TypedDict):
    """A run spawned by a task run."""

    parent_run_id: uuid.UUID
    run_id: uuid.UUID
    child_index: int
    name: str
    status: str


dash_run_children = Many[DashRunChildren, ChildRow]("dash_run_children")
