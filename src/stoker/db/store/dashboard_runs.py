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
