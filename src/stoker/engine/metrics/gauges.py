"""State metrics read from Postgres at scrape time: queue depth, the oldest ready attempt,
running attempts, runs waiting for a concurrency key, connected workers and their slots.

Why from Postgres: the queue is shared by every engine replica, and a gauge kept in one
replica's memory would show only what that replica saw. Two cheap statements over the hot
queue tables (``metric_task_gauges``, ``metric_worker_gauges`` in ``db/sql/metrics.sql``)
give every replica the same truth. A scrape reuses a snapshot younger than ``cache_s``,
and concurrent scrapes share one read, so a burst of scrapers (several Prometheus servers,
a dashboard, an autoscaler polling the task-stats endpoint) costs one query per
``cache_s``, not one per request.

A (tenant, task) pair that had queued or running attempts keeps its ``stoker_queue_depth``
and ``stoker_queue_oldest_age_seconds`` series, at 0, for ``keep_s`` after it emptied, so a
queue that drains reads 0 rather than vanishing (a series that vanishes leaves alerts and
graphs on its last value); the delayed, running and concurrency-waiting series are written
only while not zero. The text is written directly in the Prometheus exposition format,
with each pair's label text kept between scrapes: with 10,000 task names a scrape renders
tens of thousands of samples, which the generic client library renders many times slower
(the bench scenario ``metrics`` times the whole scrape; the target is under 100 ms).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from stoker.db import Executor
from stoker.db.store import metrics as store
from stoker.engine.metrics import OTHER, escape

TASK_GAUGES: list[tuple[str, str, str]] = [
    ("stoker_queue_depth", "ready", "Attempts queued and ready to run (from Postgres)."),
    (
        "stoker_queue_delayed",
        "delayed",
        "Attempts queued but not due yet: retry backoff, a future run time, or a rate-limit "
        "deferral (from Postgres).",
    ),
    (
        "stoker_queue_oldest_age_seconds",
        "oldest_s",
        "How long the oldest ready attempt has waited (from Postgres).",
    ),
    ("stoker_attempts_running", "running", "Attempts held by workers (from Postgres)."),
    (
        "stoker_concurrency_waiting",
        "gated",
        "Runs waiting for a concurrency key to admit them (from Postgres).",
    ),
]
WORKER_GAUGES: list[tuple[str, str, str]] = [
    ("stoker_workers_connected", "workers", "Connected (active) workers (from Postgres)."),
    ("stoker_worker_slots", "slots", "Slots of the connected workers (from Postgres)."),
    (
        "stoker_worker_slots_used",
        "used",
        "Attempts the connected workers hold, one slot each (from Postgres).",
    ),
    (
        "stoker_worker_slots_free",
        "free",
        "Slots of the connected workers not holding an attempt (from Postgres).",
    ),
]
ALWAYS = frozenset({"ready", "oldest_s"})
"""The task gauges written for every task reported; the others only while not zero (a
scrape with 10,000 queued task names then writes 20,000 state lines, not 50,000)."""
GAUGE_NAMES = [name for name, _, _ in TASK_GAUGES + WORKER_GAUGES]
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
    """What the statements read at ``at`` (monotonic seconds)."""

    at: float
    tasks: list[TaskStat]
    workers: list[WorkerStat]


@dataclass(slots=True)
class _Cached:
    snapshot: Snapshot | None = None
    reading: asyncio.Future[Snapshot] | None = None
    seen: dict[tuple[int, str], float] = field(default_factory=dict)


class Gauges:
    """Reads and renders the state metrics, per tenant or for all tenants."""

    def __init__(
        self,
        db: Executor,
        *,
        cache_s: float = 1.0,
        keep_s: float = 600.0,
        max_series: int = 20_000,
    ) -> None:
        self._db = db
        self._cache_s = cache_s
        self._keep_s = keep_s
        self._max_series = max_series
        self._cached: dict[int | None, _Cached] = {}
        self._label_text: dict[tuple[int, str], str] = {}

    async def snapshot(self, tenant_id: int | None = None) -> Snapshot:
        """The state of one tenant (or all), at most ``cache_s`` old."""
        cached = self._cached.setdefault(tenant_id, _Cached())
        now = time.monotonic()
        if cached.snapshot is not None and now - cached.snapshot.at < self._cache_s:
            return cached.snapshot
        if cached.reading is not None:
            return await asyncio.shield(cached.reading)
        cached.reading = asyncio.get_running_loop().create_future()
        try:
            snap = await self._read(tenant_id, cached)
        except BaseException as exc:
            cached.reading.set_exception(exc)
            cached.reading.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        else:
            cached.reading.set_result(snap)
            cached.snapshot = snap
            return snap
        finally:
            cached.reading = None

    async def _read(self, tenant_id: int | None, cached: _Cached) -> Snapshot:
        params = store.MetricGauges(tenant_id)
        task_rows = await store.metric_task_gauges(self._db, params)
        worker_rows = await store.metric_worker_gauges(self._db, params)
        now = time.monotonic()
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
            for r in task_rows
        ]
        seen = cached.seen
        for t in tasks:
            seen[(t.tenant_id, t.task_name)] = now
        present = {(t.tenant_id, t.task_name) for t in tasks}
        for key, at in list(seen.items()):
            if now - at > self._keep_s:
                del seen[key]
            elif key not in present:
                tasks.append(TaskStat(*key))
        workers = [
            WorkerStat(r["tenant_id"], int(r["workers"]), int(r["slots"]), int(r["used"]))
            for r in worker_rows
        ]
        return Snapshot(now, tasks, workers)

    async def render(self, tenant_id: int | None = None) -> str:
        """The state metrics in the Prometheus text format."""
        snap = await self.snapshot(tenant_id)
        # Off the event loop: with 10,000 tasks this is tens of milliseconds of formatting.
        return await asyncio.to_thread(render, snap, self._max_series, self._label_text)


def _bounded(tasks: Iterable[TaskStat], limit: int) -> list[TaskStat]:
    """The stats with at most ``limit`` (tenant, task) pairs: past it (in name order), the
    rest of each tenant is summed under ``task="_other"``."""
    ordered = sorted(tasks, key=lambda t: (t.tenant_id, t.task_name))
    if len(ordered) <= limit:
        return ordered
    kept, rest = ordered[:limit], ordered[limit:]
    other: dict[int, TaskStat] = {}
    for t in rest:
        o = other.get(t.tenant_id, TaskStat(t.tenant_id, OTHER))
        other[t.tenant_id] = TaskStat(
            t.tenant_id,
            OTHER,
            o.ready + t.ready,
            o.delayed + t.delayed,
            max(o.oldest_s, t.oldest_s),
            o.running + t.running,
            o.gated + t.gated,
        )
    return kept + list(other.values())


def render(
    snap: Snapshot, max_series: int = 20_000, cache: dict[tuple[int, str], str] | None = None
) -> str:
    """``snap`` in the Prometheus text exposition format; ``cache`` keeps the label text of
    each (tenant, task) from one scrape to the next."""
    tasks = _bounded(snap.tasks, max_series)
    if cache is None or len(cache) > 4 * max_series:
        cache = {}
    labels = []
    for t in tasks:
        key = (t.tenant_id, t.task_name)
        lab = cache.get(key)
        if lab is None:
            lab = cache[key] = f'tenant="{t.tenant_id}",task="{escape(t.task_name)}"'
        labels.append(lab)
    out: list[str] = []
    for name, attr, help_text in TASK_GAUGES:
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")
        values = [getattr(t, attr) for t in tasks]
        if attr in ALWAYS:
            out.extend([f"{name}{{{lab}}} {v}\n" for lab, v in zip(labels, values, strict=True)])
        else:
            out.extend(
                [f"{name}{{{lab}}} {v}\n" for lab, v in zip(labels, values, strict=True) if v]
            )
    for name, attr, help_text in WORKER_GAUGES:
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")
        out.extend(f'{name}{{tenant="{w.tenant_id}"}} {getattr(w, attr)}\n' for w in snap.workers)
    return "".join(out)
