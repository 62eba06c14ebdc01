"""The engine's Prometheus instruments: what happened to runs, counted where it happens.

Two kinds of numbers, kept apart on purpose (docs/metrics.md):

* **Events** — runs created, attempts assigned and started, runs succeeded, failed,
  cancelled, attempts retried, timed out and requeued after a lost worker, and the
  histograms of queue wait and run duration — are counted by the process where they
  happen. With several replicas each counts its own share and Prometheus sums them
  (``sum by (task) (rate(...))``).
* **State** — queue depth, the oldest queued run, running attempts, slots, connected
  workers, runs waiting for a concurrency key — is read from Postgres at scrape time
  (:mod:`stoker.engine.metrics.gauges`), so that any replica reports the whole truth.

Label cardinality is bounded: labels are the tenant id and the task name, never a run id;
past ``max_series`` distinct (tenant, task) pairs in one process, further task names are
counted under ``task="_other"`` (:func:`task_labels`). Additional metadata becomes a label
only for the keys the operator names (``STOKER_METRICS_METADATA_LABELS``), in two counters
of their own (:class:`MetadataCounter`), each key's distinct values bounded.

Why not ``prometheus_client``'s labelled metrics for the per-task series: its exposition
costs ~15 µs a sample, so 10,000 task names (each with a ``_created`` sample besides)
took over half a second to scrape. The per-task instruments here are plain dicts rendered
by :func:`render` with each (tenant, task) label text built once — about a microsecond
a line. The engine's own unlabelled histograms (scheduler rounds, flushes,
ingest batches) stay ``prometheus_client`` metrics in its default registry.

Every recording function takes rows as the store returns them, so the callers (ingest,
scheduler, dispatcher, :mod:`stoker.engine.attempts`) add one line each.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import Histogram

OTHER = "_other"
"""The task label of series past the cardinality bound."""

Labels = tuple[str, str]
"""(tenant id, task name) as label values."""

_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 3600.0)
_ROUND_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


def escape(value: str) -> str:
    """A label value escaped for the exposition format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Series:
    """The (tenant, task) pairs this process has labelled, up to a bound, with each pair's
    label text built once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.text: dict[Labels, str] = {}

    def labels(self, tenant_id: int, task_name: str) -> Labels:
        key = (str(tenant_id), task_name)
        if key in self.text:
            return key
        if len(self.text) >= self.limit:
            key = (key[0], OTHER)
            if key in self.text:
                return key
        self.text[key] = f'tenant="{key[0]}",task="{escape(key[1])}"'
        return key


_series = _Series(20_000)


def set_max_series(limit: int) -> None:
    """Bounds the distinct (tenant, task) label pairs this process reports (engine config
    ``metrics_max_series``); pairs already labelled keep their labels."""
    _series.limit = limit


def task_labels(tenant_id: int, task_name: str) -> Labels:
    """The labels of a (tenant, task) pair: the task's name, or ``_other`` past the bound."""
    return _series.labels(tenant_id, task_name)


class TaskCounter:
    """A counter per (tenant, task)."""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name + "_total"
        self.help = help_text
        self.values: dict[Labels, int] = {}

    def inc(self, labels: Labels, n: int = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + n

    def value(self, tenant_id: int, task_name: str) -> int:
        """The count of one pair (0 when never counted)."""
        return self.values.get((str(tenant_id), task_name), 0)

    def render(self, tenant: str | None, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {self.help}\n# TYPE {self.name} counter\n")
        text, name = _series.text, self.name
        out.extend(
            f"{name}{{{text[k]}}} {v}\n"
            for k, v in list(self.values.items())
            if tenant is None or k[0] == tenant
        )


class TaskHistogram:
    """A histogram per (tenant, task), with fixed buckets (seconds)."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.help = help_text
        self.buckets = buckets
        self._le = [repr(float(b)) for b in buckets] + ["+Inf"]
        # Per pair: a count per bucket (not cumulative; the last is +Inf), then the sum.
        self.values: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, labels: Labels, seconds: float) -> None:
        entry = self.values.get(labels)
        if entry is None:
            entry = self.values[labels] = ([0] * (len(self.buckets) + 1), [0.0])
        entry[0][bisect.bisect_left(self.buckets, seconds)] += 1
        entry[1][0] += seconds

    def count(self, tenant_id: int, task_name: str) -> int:
        """How many observations one pair has."""
        entry = self.values.get((str(tenant_id), task_name))
        return sum(entry[0]) if entry else 0

    def render(self, tenant: str | None, out: list[str]) -> None:
        name = self.name
        out.append(f"# HELP {name} {self.help}\n# TYPE {name} histogram\n")
        text = _series.text
        for k, (counts, total) in list(self.values.items()):
            if tenant is not None and k[0] != tenant:
                continue
            lab = text[k]
            running = 0
            for le, n in zip(self._le, counts, strict=True):
                running += n
                out.append(f'{name}_bucket{{{lab},le="{le}"}} {running}\n')
            out.append(f"{name}_sum{{{lab}}} {total[0]!r}\n{name}_count{{{lab}}} {running}\n")


CREATED = TaskCounter(
    "stoker_runs_created", "Task runs created (triggered, spawned, by events and schedules)."
)
ASSIGNED = TaskCounter("stoker_attempts_assigned", "Attempts assigned to a worker.")
STARTED = TaskCounter("stoker_attempts_started", "Attempts a worker reported started.")
SUCCEEDED = TaskCounter("stoker_runs_succeeded", "Runs that completed successfully.")
FAILED = TaskCounter("stoker_runs_failed", "Runs that failed for good (no retry left).")
RETRIED = TaskCounter(
    "stoker_attempts_retried", "Attempts that failed or timed out and were retried."
)
CANCELLED = TaskCounter(
    "stoker_runs_cancelled",
    "Runs cancelled: by request, by a concurrency limit, or by their schedule timeout.",
)
TIMED_OUT = TaskCounter(
    "stoker_attempts_timed_out", "Attempts past their execution timeout (retried or not)."
)
REQUEUED = TaskCounter(
    "stoker_attempts_requeued",
    "Attempts requeued because their worker was lost, stopped, or never got them.",
)
RATE_LIMITED = TaskCounter(
    "stoker_rate_limit_deferrals",
    "Queued attempts the scheduler stepped aside because a rate limit was used up.",
)
QUEUE_WAIT = TaskHistogram(
    "stoker_queue_wait_seconds",
    "From an attempt becoming ready (queued, or its retry delay passed) to its start.",
    _BUCKETS_S,
)
RUN_DURATION = TaskHistogram(
    "stoker_run_duration_seconds",
    "From an attempt's start to its end (success or failure).",
    _BUCKETS_S,
)
TASK_METRICS: list[TaskCounter | TaskHistogram] = [
    CREATED,
    ASSIGNED,
    STARTED,
    SUCCEEDED,
    FAILED,
    RETRIED,
    CANCELLED,
    TIMED_OUT,
    REQUEUED,
    RATE_LIMITED,
    QUEUE_WAIT,
    RUN_DURATION,
]
"""Every per-task instrument, in the order they are rendered."""

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


class MetadataCounter:
    """Runs counted by (tenant, task, status) and the values of the metadata keys the
    engine was told to label by (``STOKER_METRICS_METADATA_LABELS``), bounded: at most
    ``max_values`` distinct values of one key (then ``_other``) and ``max_series`` series
    (then every key's value is ``_other``). A run without the key has the value ``""``."""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name + "_total"
        self.help = help_text
        self.keys: tuple[str, ...] = ()
        self.max_values = 100
        self.max_series = 20_000
        self._values: dict[str, set[str]] = {}
        self.values: dict[tuple[str, ...], int] = {}
        self._text: dict[tuple[str, ...], str] = {}

    def configure(self, keys: Iterable[str], max_values: int, max_series: int) -> None:
        self.keys = tuple(keys)
        self.max_values = max_values
        self.max_series = max_series
        self._values = {k: set() for k in self.keys}

    def _value(self, key: str, value: Any) -> str:
        if value is None:
            return ""
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        seen = self._values[key]
        if text in seen:
            return text
        if len(seen) >= self.max_values:
            return OTHER
        seen.add(text)
        return text

    def inc(self, tenant_id: int, task_name: str, status: str, metadata: Any) -> None:
        if not isinstance(metadata, dict):
            metadata = {}
        tenant, task = task_labels(tenant_id, task_name)
        key = (tenant, task, status, *(self._value(k, metadata.get(k)) for k in self.keys))
        if key not in self.values:
            if len(self.values) >= self.max_series:
                key = (tenant, task, status, *(OTHER for _ in self.keys))
            if key not in self._text:
                labels = [f'tenant="{tenant}"', f'task="{escape(task)}"']
                if status:
                    labels.append(f'status="{status}"')
                labels += [f'{k}="{escape(v)}"' for k, v in zip(self.keys, key[3:], strict=True)]
                self._text[key] = ",".join(labels)
        self.values[key] = self.values.get(key, 0) + 1

    def render(self, tenant: str | None, out: list[str]) -> None:
        if not self.keys:
            return
        out.append(f"# HELP {self.name} {self.help}\n# TYPE {self.name} counter\n")
        text, name = self._text, self.name
        out.extend(
            f"{name}{{{text[k]}}} {v}\n"
            for k, v in list(self.values.items())
            if tenant is None or k[0] == tenant
        )


CREATED_BY_METADATA = MetadataCounter(
    "stoker_runs_created_by_metadata",
    "Task runs created, by the additional-metadata keys named in STOKER_METRICS_METADATA_LABELS.",
)
FINISHED_BY_METADATA = MetadataCounter(
    "stoker_runs_finished_by_metadata",
    "Runs that completed (status COMPLETED) or failed for good (FAILED), by the "
    "additional-metadata keys named in STOKER_METRICS_METADATA_LABELS.",
)


def set_metadata_labels(keys: Iterable[str], max_values: int, max_series: int) -> None:
    """Labels run counts by these metadata keys (engine config; none: no such series)."""
    for counter in (CREATED_BY_METADATA, FINISHED_BY_METADATA):
        counter.configure(keys, max_values, max_series)


def metadata_labels_on() -> bool:
    """Whether runs are counted by metadata (the finishing queries then return it)."""
    return bool(CREATED_BY_METADATA.keys)


def created_with_metadata(tenant_id: int, runs: Iterable[tuple[str, bytes | str]]) -> None:
    """Runs created, as (task name, additional metadata JSON); only while labels are on."""
    for name, raw in runs:
        try:
            metadata = json.loads(raw) if raw else {}
        except ValueError:
            metadata = {}
        CREATED_BY_METADATA.inc(tenant_id, name, "", metadata)


def render(tenant_id: int | None = None) -> str:
    """The per-task instruments in the Prometheus text format (one tenant's, or all)."""
    tenant = None if tenant_id is None else str(tenant_id)
    out: list[str] = []
    for metric in TASK_METRICS:
        metric.render(tenant, out)
    CREATED_BY_METADATA.render(tenant, out)
    FINISHED_BY_METADATA.render(tenant, out)
    return "".join(out)


def _count(counter: TaskCounter, tenant_id: int, names: Iterable[str]) -> None:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    for name, n in counts.items():
        counter.inc(task_labels(tenant_id, name), n)


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
    """An attempt started, ``wait_s`` after it became ready (None: unknown). An attempt
    whose task is unknown here (held before a worker reconnected) is not counted."""
    if not task_name:
        return
    labels = task_labels(tenant_id, task_name)
    STARTED.inc(labels)
    if wait_s is not None:
        QUEUE_WAIT.observe(labels, max(0.0, wait_s))


def succeeded(rows: Iterable[Mapping[str, Any]]) -> None:
    """Attempts that completed (rows of ``complete_attempts``)."""
    by_metadata = metadata_labels_on()
    for r in rows:
        labels = task_labels(int(r["tenant_id"]), r["task_name"])
        SUCCEEDED.inc(labels)
        if r.get("run_s") is not None:
            RUN_DURATION.observe(labels, max(0.0, float(r["run_s"])))
        if by_metadata:
            FINISHED_BY_METADATA.inc(
                int(r["tenant_id"]), r["task_name"], "COMPLETED", r.get("metadata")
            )


def ended(rows: Iterable[Mapping[str, Any]]) -> None:
    """Attempts that ended without success (rows of ``fail_attempts``: their kind, and the
    run's status after it, QUEUED when retried)."""
    by_metadata = metadata_labels_on()
    for r in rows:
        labels = task_labels(int(r["tenant_id"]), r["task_name"])
        kind, retried = r["kind"], r["status"] == "QUEUED"
        if by_metadata and not retried:
            FINISHED_BY_METADATA.inc(
                int(r["tenant_id"]), r["task_name"], "FAILED", r.get("metadata")
            )
        if kind == "TIMED_OUT":
            TIMED_OUT.inc(labels)
        if kind in ("FAILED", "TIMED_OUT"):
            if r.get("run_s") is not None:
                RUN_DURATION.observe(labels, max(0.0, float(r["run_s"])))
            (RETRIED if retried else FAILED).inc(labels)
        elif retried:
            REQUEUED.inc(labels)
        else:
            FAILED.inc(labels)


def cancelled(rows: Iterable[Mapping[str, Any]]) -> None:
    """Runs cancelled (rows naming ``tenant_id`` and ``task_name``)."""
    for r in rows:
        CANCELLED.inc(task_labels(int(r["tenant_id"]), r["task_name"]))
