"""State metrics read from Postgres at scrape time: queue depth, the oldest ready attempt,
running attempts, runs waiting for a concurrency key, connected workers and their slots.

Why from Postgres: the queue is shared by every engine replica, and a gauge kept in one
replica's memory would show only what that replica saw. One statement over the hot queue
tables (``metric_exposition`` in ``db/sql/metrics.sql``) gives every replica the same
truth, and writes the samples in the Prometheus text format itself: with 10,000 task names
a scrape then moves one row of text instead of 10,000 rows to format in Python, which was
most of its cost. Every defined task keeps its depth and oldest-age series at 0 when its
queue is empty (a series that vanishes leaves alerts and graphs on its last value); the
delayed, running and concurrency-waiting series are written only while not zero.

A scrape reuses what was read less than ``cache_s`` ago, and concurrent scrapes share one
read, so a burst of scrapers (several Prometheus servers, a dashboard, an autoscaler
polling the task-stats endpoint) costs one query per ``cache_s``, not one per request. The
task-stats endpoint reads one tenant's numbers as rows (``metric_task_gauges``,
:meth:`Gauges.snapshot`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from stoker.db import Executor
from stoker.db.store import metrics as store

T = TypeVar("T")

TASK_GAUGES: list[tuple[str, str]] = [
    ("stoker_queue_depth", "Attempts queued and ready to run (from Postgres)."),
    (
        "stoker_queue_delayed",
        "Attempts queued but not due yet: retry backoff, a future run time, or a rate-limit "
        "deferral (from Postgres).",
    ),
    (
        "stoker_queue_oldest_age_seconds",
        "How long the oldest ready attempt has waited (from Postgres).",
    ),
    ("stoker_attempts_running", "Attempts held by workers (from Postgres)."),
    (
        "stoker_concurrency_waiting",
        "Runs waiting for a concurrency key to admit them (from Postgres).",
    ),
]
WORKER_GAUGES: list[tuple[str, str]] = [
    ("stoker_workers_connected", "Connected (active) workers (from Postgres)."),
    ("stoker_worker_slots", "Slots of the connected workers (from Postgres)."),
    (
        "stoker_worker_slots_used",
        "Attempts the connected workers hold, one slot each (from Postgres).",
    ),
    (
        "stoker_worker_slots_free",
        "Slots of the connected workers not holding an attempt (from Postgres).",
    ),
]
GAUGE_NAMES = [name for name, _ in TASK_GAUGES + WORKER_GAUGES]
"""Every metric this module writes (the dashboard test checks the names it uses)."""


@dataclass(frozen=True, slots=True)
class TaskStat:
    """One task's queue and running counts at the snapshot's instant."""

    tenant_id: int
    task_name: str
    ready: int = 0
    delayed: int = 0
    oldest_s: float = 0.0
    running: int = 0
    gated: int = 0


@dataclass(frozen=True, slots=True)
class WorkerStat:
    """One tenant's connected workers and slots."""

    tenant_id: int
    workers: int = 0
    slots: int = 0
    used: int = 0

    @property
    def free(self) -> int:
        return max(0, self.slots - self.used)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One tenant's tasks with work queued, running or waiting, and its workers."""

    tasks: list[TaskStat]
    workers: list[WorkerStat]


@dataclass(slots=True)
class _Cached(Generic[T]):
    """A value read at ``at`` (monotonic seconds), and the read under way, if any."""

    value: T | None = None
    at: float = 0.0
    reading: asyncio.Future[T] | None = None


@dataclass(slots=True)
class _Cache(Generic[T]):
    """Values by key, each read at most once per ``ttl`` whoever asks."""

    ttl: float
    entries: dict[int | None, _Cached[T]] = field(default_factory=dict)

    async def get(self, key: int | None, read: Callable[[], Awaitable[T]]) -> T:
        entry = self.entries.setdefault(key, _Cached())
        if entry.value is not None and time.monotonic() - entry.at < self.ttl:
            return entry.value
        if entry.reading is not None:
            return await asyncio.shield(entry.reading)
        entry.reading = asyncio.get_running_loop().create_future()
        try:
            value = await read()
        except BaseException as exc:
            entry.reading.set_exception(exc)
            entry.reading.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        else:
            entry.reading.set_result(value)
            entry.value, entry.at = value, time.monotonic()
            return value
        finally:
            entry.reading = None


class Gauges:
    """Reads the state metrics, per tenant or for all tenants."""

    def __init__(self, db: Executor, *, cache_s: float = 1.0, max_series: int = 20_000) -> None:
        self._db = db
        self._max_series = max_series
        self._texts: _Cache[str] = _Cache(cache_s)
        self._snapshots: _Cache[Snapshot] = _Cache(cache_s)

    async def render(self, tenant_id: int | None = None) -> str:
        """The state metrics of one tenant (or all) in the Prometheus text format."""
        return await self._texts.get(tenant_id, lambda: self._render(tenant_id))

    async def _render(self, tenant_id: int | None) -> str:
        row = await store.metric_exposition(
            self._db, store.MetricExposition(tenant_id, self._max_series)
        )
        out: list[str] = []
        for name, help_text in TASK_GAUGES + WORKER_GAUGES:
            out.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")
            lines = row[name] if row is not None else None  # type: ignore[literal-required]
            if lines:
                out.append(lines)
                out.append("\n")
        return "".join(out)

    async def snapshot(self, tenant_id: int) -> Snapshot:
        """One tenant's busy tasks and its workers, at most ``cache_s`` old."""
        return await self._snapshots.get(tenant_id, lambda: self._snapshot(tenant_id))

    async def _snapshot(self, tenant_id: int) -> Snapshot:
        params = store.MetricGauges(tenant_id)
        tasks = [
            TaskStat(
                r["tenant_id"],
                r["task_name"],
                int(r["ready"]),
                int(r["delayed"]),
                float(r["oldest_s"]),
                int(r["running"]),
                int(r["gated"]),
            )
            for r in await store.metric_task_gauges(self._db, params)
        ]
        workers = [
            WorkerStat(r["tenant_id"], int(r["workers"]), int(r["slots"]), int(r["used"]))
            for r in await store.metric_worker_gauges(self._db, params)
        ]
        return Snapshot(tasks, workers)
