"""The engine's Prometheus instruments: what happened to runs, counted where it happens.

Two kinds of numbers, kept apart on purpose (docs/metrics.md):

* **Events** — runs created, attempts assigned and started, runs succeeded, failed,
  cancelled, attempts retried, timed out and requeued after a lost worker, and the
  histograms of queue wait, run duration, scheduler rounds and flushes — are counted by
  the process where they happen, in the counters below. With several replicas each counts
  its own share and Prometheus sums them (``sum by (task) (rate(...))``).
* **State** — queue depth, the oldest queued run, running attempts, slots, connected
  workers, runs waiting for a concurrency key — is read from Postgres at scrape time
  (:mod:`stoker.engine.metrics.gauges`), so that any replica reports the whole truth.

Label cardinality is bounded: labels are the tenant id and the task name, never a run id;
past ``max_series`` distinct (tenant, task) pairs in one process, further task names are
counted under ``task="_other"`` (:func:`task_labels`).

Every recording function takes rows as the store returns them, so the callers (ingest,
scheduler, dispatcher, :mod:`stoker.engine.attempts`) add one line each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Counter, Histogram

OTHER = "_other"
"""The task label of series past the cardinality bound."""

_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_ROUND_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

_TT = ["tenant", "task"]

CREATED = Counter("stoker_runs_created", "Task runs created (triggered, spawned, scheduled).", _TT)
ASSIGNED = Counter("stoker_attempts_assigned", "Attempts assigned to a worker.", _TT)
STARTED = Counter("stoker_attempts_started", "Attempts a worker reported started.", _TT)
SUCCEEDED = Counter("stoker_runs_succeeded", "Runs that completed successfully.", _TT)
FAILED = Counter("stoker_runs_failed", "Runs that failed for good (no retry left).", _TT)
RETRIED = Counter(
    "stoker_attempts_retried", "Attempts that failed or timed out and were retried.", _TT
)
CANCELLED = Counter(
    "stoker_runs_cancelled",
    "Runs cancelled: by request, by a concurrency limit, or by their schedule timeout.",
    _TT,
)
TIMED_OUT = Counter(
    "stoker_attempts_timed_out", "Attempts past their execution timeout (retried or not).", _TT
)
REQUEUED = Counter(
    "stoker_attempts_requeued",
    "Attempts requeued because their worker was lost, stopped, or never got them.",
    _TT,
)
RATE_LIMITED = Counter(
    "stoker_rate_limit_deferrals",
    "Queued attempts the scheduler stepped aside because a rate limit was used up.",
    _TT,
)
QUEUE_WAIT = Histogram(
    "stoker_queue_wait_seconds",
    "From an attempt becoming ready (queued, or its retry delay passed) to its start.",
    _TT,
    buckets=_BUCKETS_S,
)
RUN_DURATION = Histogram(
    "stoker_run_duration_seconds",
    "From an attempt's start to its end (success or failure).",
    _TT,
    buckets=_BUCKETS_S,
)
SCHEDULER_ROUND = Histogram(
    "stoker_scheduler_round_seconds",
    "One scheduler round for one tenant (claim, place, assign).",
    buckets=_ROUND_BUCKETS_S,
)
FLUSH = Histogram(
    "stoker_flush_seconds",
    "One dispatcher flush of worker events (starts, completions, failures).",
    buckets=_ROUND_BUCKETS_S,
)
INGEST_BATCH = Histogram(
    "stoker_ingest_batch_seconds",
    "One ingest batch of triggered runs written to Postgres.",
    buckets=_ROUND_BUCKETS_S,
)


class _Series:
    """The (tenant, task) pairs this process has labelled, up to a bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[tuple[str, str]] = set()

    def labels(self, tenant_id: int, task_name: str) -> tuple[str, str]:
        key = (str(tenant_id), task_name)
        if key in self.seen:
            return key
        if len(self.seen) >= self.limit:
            return (key[0], OTHER)
        self.seen.add(key)
        return key


_series = _Series(20_000)


def set_max_series(limit: int) -> None:
    """Bounds the distinct (tenant, task) label pairs this process reports (engine config
    ``metrics_max_series``); pairs already labelled keep their labels."""
    _series.limit = limit


def task_labels(tenant_id: int, task_name: str) -> tuple[str, str]:
    """The labels of a (tenant, task) pair: the task's name, or ``_other`` past the bound."""
    return _series.labels(tenant_id, task_name)


def _count(counter: Counter, tenant_id: int, names: Iterable[str]) -> None:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    for name, n in counts.items():
        counter.labels(*task_labels(tenant_id, name)).inc(n)


def created(tenant_id: int, task_names: Iterable[str]) -> None:
    """Runs created for one tenant."""
    _count(CREATED, tenant_id, task_names)


def assigned(tenant_id: int, task_names: Iterable[str]) -> None:
    """Attempts of one tenant assigned to workers."""
    _count(ASSIGNED, tenant_id, task_names)


def rate_limited(tenant_id: int, task_names: Iterable[str]) -> None:
    """Attempts of one tenant stepped aside by a rate limit."""
    _count(RATE_LIMITED, tenant_id, task_names)


def started(tenant_id: int, task_name: str, wait_s: float | None) -> None:
    """An attempt started, ``wait_s`` after it became ready (None: unknown)."""
    labels = task_labels(tenant_id, task_name)
    STARTED.labels(*labels).inc()
    if wait_s is not None:
        QUEUE_WAIT.labels(*labels).observe(max(0.0, wait_s))


def succeeded(rows: Iterable[Mapping[str, Any]]) -> None:
    """Attempts that completed (rows of ``complete_attempts``)."""
    for r in rows:
        labels = task_labels(int(r["tenant_id"]), r["task_name"])
        SUCCEEDED.labels(*labels).inc()
        if r.get("run_s") is not None:
            RUN_DURATION.labels(*labels).observe(max(0.0, float(r["run_s"])))


def ended(rows: Iterable[Mapping[str, Any]]) -> None:
    """Attempts that ended without success (rows of ``fail_attempts``: their kind, and the
    run's status after it, QUEUED when retried)."""
    for r in rows:
        labels = task_labels(int(r["tenant_id"]), r["task_name"])
        kind, retried = r["kind"], r["status"] == "QUEUED"
        if kind == "TIMED_OUT":
            TIMED_OUT.labels(*labels).inc()
        if kind in ("FAILED", "TIMED_OUT"):
            if r.get("run_s") is not None:
                RUN_DURATION.labels(*labels).observe(max(0.0, float(r["run_s"])))
            (RETRIED if retried else FAILED).labels(*labels).inc()
        elif retried:
            REQUEUED.labels(*labels).inc()
        else:
            FAILED.labels(*labels).inc()


def cancelled(rows: Iterable[Mapping[str, Any]]) -> None:
    """Runs cancelled (rows naming ``tenant_id`` and ``task_name``)."""
    for r in rows:
        CANCELLED.labels(*task_labels(int(r["tenant_id"]), r["task_name"])).inc()
