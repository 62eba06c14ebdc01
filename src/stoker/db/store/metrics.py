"""Metrics read from Postgres (queue depth, running attempts, workers and slots).

Statements of ``db/sql/metrics.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from stoker.db.store import Many, One


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


@dataclass(frozen=True, slots=True)
class MetricExposition:
    tenant_id: int | None
    max_series: int


class Exposition(TypedDict):
    """Each state metric's sample lines in the text format (None: no sample)."""

    stoker_queue_depth: str | None
    stoker_queue_delayed: str | None
    stoker_queue_oldest_age_seconds: str | None
    stoker_attempts_running: str | None
    stoker_concurrency_waiting: str | None
    stoker_workers_connected: str | None
    stoker_worker_slots: str | None
    stoker_worker_slots_used: str | None
    stoker_worker_slots_free: str | None


metric_exposition = One[MetricExposition, Exposition]("metric_exposition")
