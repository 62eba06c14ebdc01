"""Metrics read from Postgres (queue depth, running attempts, workers and slots).

Statements of ``db/sql/metrics.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from stoker.db.store import Many


@dataclass(frozen=True, slots=True)
class MetricGauges:
    tenant_id: int | None


class TaskGauges(TypedDict):
    """One task's queue and running counts (see ``metric_task_gauges``)."""

    tenant_id: int
    task_name: str
    ready: int
    delayed: int
    oldest_s: float
    running: int
    gated: int


metric_task_gauges = Many[MetricGauges, TaskGauges]("metric_task_gauges")


class WorkerGauges(TypedDict):
    """One tenant's connected workers and slots."""

    tenant_id: int
    workers: int
    slots: int
    durable_slots: int
    used: int


metric_worker_gauges = Many[MetricGauges, WorkerGauges]("metric_worker_gauges")
