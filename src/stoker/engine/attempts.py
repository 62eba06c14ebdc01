"""The one place attempts end: success, failure, loss, cancellation, schedule timeout.

* :meth:`Attempts.complete` — successes, inside the dispatcher's flush transaction;
* :meth:`Attempts.end` — failures, timeouts, lost and stopped workers, with the retry
  decision;
* :meth:`Attempts.cancel` — cancels (runs cancelled by request, concurrency limits);
* :meth:`Attempts.expire_schedule_timeouts` — queued attempts no worker took in time;
* :meth:`Attempts.expire_durable_runs` — durable runs past their whole-run ``timeout``.

Each says what it finished or requeued through the transaction's
:class:`~stoker.engine.signals.Outbox`, and the final ends of DAG steps progress their
runs in the same transaction (:meth:`Progression.progress
<stoker.engine.flows.progression.Progression.progress>`, called here, not through hooks).
Telling workers to stop attempts that ended is the caller's part (it owns the dispatcher):
:func:`stops` groups the rows to tell. A durable parent's log entry waiting for a run that
ends here is settled in the same transaction, by the ``on_finishing`` hook its outbox
runs before commit (:mod:`stoker.engine.durable.children`) — the hook every path that
ends runs shares, DAG progression and cancels included.

Every path that ends an attempt other than by success or cancel goes through
:meth:`Attempts.end`, one ``fail_attempts`` statement per batch, which decides in Postgres
between a retry (a new attempt queued after the backoff) and the run's final failure. The
batch is split apart when the database refuses one attempt's end (see
:mod:`stoker.engine.faults`), so that the others still end; a worker's error text is made
storable (NUL shown as ``\\x00``), since a failure that already happened cannot be
refused. Only an attempt that still holds its ``task_runtime`` row can end, so an attempt
ends exactly once whoever reports it; an end reported by a worker (``reporter``) counts
only if that worker holds the attempt.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stoker._core.wire import storable_text
from stoker._proto import engine_pb2 as pb
from stoker.db import Executor, int_array, json_array
from stoker.db.store import durable as durable_store
from stoker.db.store import tasks as task_store
from stoker.engine import faults, metrics
from stoker.engine.flows.progression import Progression
from stoker.engine.signals import Outbox, Signals

log = logging.getLogger("stoker.engine.attempts")


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """Why one attempt ended without success."""

    task_id: int
    attempt: int
    kind: str  # FAILED, TIMED_OUT, WORKER_LOST, ASSIGNMENT_LOST, WORKER_STOPPED
    error: dict[str, str]
    retryable: bool = True
    counts: bool = True
    delay_ms: int = -1
    # The worker that reported the end (its task_runtime row must name it), or None for
    # the engine's own decisions (timeouts, dead workers).
    reporter: int | None = None

    @classmethod
    def failed(
        cls,
        task_id: int,
        attempt: int,
        error_type: str,
        message: str,
        *,
        retryable: bool = True,
        reporter: int | None = None,
    ) -> AttemptEnd:
        error = {"type": error_type, "message": message, "traceback": ""}
        return cls(task_id, attempt, "FAILED", error, retryable=retryable, reporter=reporter)

    @classmethod
    def lost(
        cls, task_id: int, attempt: int, kind: str, message: str, *, reporter: int | None = None
    ) -> AttemptEnd:
        """An attempt lost with its worker: requeued without using up a retry."""
        error = {"type": "WorkerLost", "message": message, "traceback": ""}
        return cls(task_id, attempt, kind, error, retryable=True, counts=False, reporter=reporter)

    @classmethod
    def timed_out(cls, task_id: int, attempt: int, timeout_ms: int | None = None) -> AttemptEnd:
        limit = f" of {timeout_ms / 1000:g}s" if timeout_ms else ""
        error = {
            "type": "TaskTimeoutError",
            "message": f"the attempt ran past its execution timeout{limit}",
            "traceback": "",
        }
        return cls(task_id, attempt, "TIMED_OUT", error)

    @classmethod
    def from_event(cls, ev: pb.TaskEvent, reporter: int) -> AttemptEnd:
        error = {
            "type": ev.error.type or "Exception",
            "message": ev.error.message,
            "traceback": ev.error.traceback,
        }
        kind = "TIMED_OUT" if ev.error.type == "TaskTimeoutError" else "FAILED"
        delay = ev.retry_after_ms if ev.retry_after_ms > 0 else -1
        return cls(
            ev.task_id,
            ev.attempt,
            kind,
            error,
            retryable=not ev.non_retryable,
            delay_ms=delay,
            reporter=reporter,
        )


@dataclass(frozen=True, slots=True)
class Completion:
    """One attempt a worker reported as succeeded (already checked: it holds the attempt)."""

    task_id: int
    attempt: int
    output: bytes
    at_ms: int
    reporter: int
    started_ms: int = 0
    """When the attempt started, if its start is written with its completion (0: it was
    written before, by ``mark_started``)."""


def run_timeout_error(what: str = "its whole-run timeout") -> str:
    """The error document of a durable run failed at its whole-run deadline."""
    return json.dumps(
        {
            "type": "RunTimeoutError",
            "message": f"the durable run did not finish within {what} (evictions included)",
            "traceback": "",
        }
    )


SCHEDULE_TIMEOUT_ERROR = json.dumps(
    {
        "type": "ScheduleTimeoutError",
        "message": "no worker took the task before its schedule timeout",
        "traceback": "",
    }
)


def stops(
    rows: Iterable[task_store.CancelledTask | task_store.FailedAttempt | durable_store.ExpiredRun],
    reason: str,
) -> dict[int, list[tuple[int, int, str]]]:
    """The attempts among ``rows`` that were running, by worker: what to tell the workers
    to stop (through ``Dispatcher.cancel``) once the end is committed."""
    by_worker: dict[int, list[tuple[int, int, str]]] = {}
    for r in rows:
        if r["worker_id"] is not None and r["attempt"] is not None:
            by_worker.setdefault(int(r["worker_id"]), []).append(
                (int(r["id"]), int(r["attempt"]), reason)
            )
    return by_worker


def _finished(out: Outbox, rows: Iterable[Mapping[str, Any]]) -> None:
    by_tenant: dict[int, list[Any]] = {}
    for r in rows:
        by_tenant.setdefault(int(r["tenant_id"]), []).append(r["external_id"])
    for tenant_id, ids in by_tenant.items():
        out.finished(tenant_id, ids)


class Attempts:
    """Ends attempts in batches, progresses the DAG runs they belong to, and signals it."""

    def __init__(
        self, db: Executor, signals: Signals, progression: Progression, *, max_requeues: int
    ) -> None:
        self._db = db
        self._signals = signals
        self._progression = progression
        self._max_requeues = max_requeues

    async def progress(
        self,
        tx: Executor,
        out: Outbox,
        finals: Iterable[Mapping[str, Any]],
        *,
        isolated: bool = True,
    ) -> None:
        """Progresses the DAG runs of tasks that just reached a final state, inside ``tx``.

        ``isolated``: in a savepoint, so that progression that fails does not take the
        outcomes it follows down with it (the runs are left as they were; the DAG sweeper
        progresses runs with nothing queued or running within a second); what it would
        have signalled is then dropped with it. A caller that retries its whole
        transaction without progression instead passes False and saves the savepoint's
        two round trips (the dispatcher's flush, on the hot path).
        """
        dag_ids = sorted({int(r["dag_id"]) for r in finals if r.get("dag_id") is not None})
        if not dag_ids:
            return
        if not isolated:
            await self._progression.progress(tx, out, dag_ids)
            return
        part = self._signals.outbox()
        try:
            async with tx.transaction() as sp:
                await self._progression.progress(sp, part, dag_ids)
        except Exception:
            log.exception("progressing DAG runs %s failed; the sweeper retries", dag_ids)
        else:
            out.merge(part)

    async def complete(
        self, tx: Executor, out: Outbox, done: Sequence[Completion], *, progress: bool
    ) -> list[task_store.CompletedRun]:
        """Stores successes inside ``tx`` (the dispatcher's flush); returns the rows of the
        attempts that were still running (the others ended meanwhile by another path).
        ``progress``: progress their DAG runs in ``tx`` too (not isolated: the caller
        retries without progression when the transaction fails)."""
        if not done:
            return []
        rows = await task_store.complete_attempts(
            tx,
            task_store.CompleteAttempts(
                int_array(c.task_id for c in done),
                int_array(c.attempt for c in done),
                json_array(c.output or b"null" for c in done),
                int_array(c.at_ms for c in done),
                int_array(c.reporter for c in done),
                int_array(c.started_ms for c in done),
                metrics.metadata_labels_on(),
            ),
        )
        _finished(out, rows)
        out.after_commit(lambda: metrics.succeeded(rows))
        if progress:
            await self.progress(tx, out, rows, isolated=False)
        return rows

    async def cancel(
        self, tx: Executor, out: Outbox, task_ids: Sequence[int], errors: Sequence[str]
    ) -> list[task_store.CancelledTask]:
        """Cancels tasks inside ``tx`` (queue items and running attempts removed); the
        caller progresses their DAG runs and, after commit, stops the running attempts
        (:func:`stops`)."""
        if not task_ids:
            return []
        rows = await task_store.cancel_tasks(
            tx, task_store.CancelTasks(list(task_ids), list(errors))
        )
        _finished(out, rows)
        out.after_commit(lambda: metrics.cancelled(rows))
        return rows

    async def expire_schedule_timeouts(self, limit: int) -> int:
        """Cancels up to ``limit`` queued attempts past their schedule timeout; how many.
        (A DAG step so cancelled is progressed by the sweeper.)"""
        async with self._signals.transaction(self._db) as (tx, out):
            rows = await task_store.expire_schedule_timeouts(
                tx, task_store.ExpireScheduleTimeouts(limit, SCHEDULE_TIMEOUT_ERROR)
            )
            _finished(out, rows)
            out.after_commit(lambda: metrics.cancelled(rows))
        return len(rows)

    async def expire_durable_runs(self, limit: int) -> list[durable_store.ExpiredRun]:
        """Fails up to ``limit`` durable runs past their whole-run deadline (evicted,
        queued or running; not retried) and progresses their DAG runs; returns them. The
        caller stops the attempts that were running (``worker_id`` set)."""
        async with self._signals.transaction(self._db) as (tx, out):
            rows = await durable_store.expire_durable_runs(
                tx, durable_store.ExpireDurableRuns(limit, run_timeout_error())
            )
            await self.progress(tx, out, rows)
            _finished(out, rows)
        return rows

    async def end(self, ends: list[AttemptEnd]) -> list[task_store.FailedAttempt]:
        """Ends the attempts; returns the rows of those that were still running.

        One transaction for the batch; if the database refuses one attempt's end (a value
        out of range), the batch is split so that the others end regardless
        (:func:`~stoker.engine.faults.isolate`), and a refused end is recorded again with
        the reported error replaced by why it could not be stored. An outage raises: the
        caller retries, and ending an attempt twice is a no-op.
        """
        if not ends:
            return []
        result = await faults.isolate(
            ends, lambda part: self._end(list(part)), what="ending attempts"
        )
        if result.failed:
            retry = [
                dataclasses.replace(
                    e,
                    error={
                        "type": "InvalidFailure",
                        "message": storable_text(
                            f"the attempt failed, but its failure could not be stored as "
                            f"reported ({type(exc).__name__}: {exc})"
                        ),
                        "traceback": "",
                    },
                    delay_ms=-1,
                )
                for e, exc in result.failed
            ]
            again = await faults.isolate(
                retry, lambda part: self._end(list(part)), what="ending attempts"
            )
            result.written += again.written
            for e, exc in again.failed:
                log.error("attempt %d of task %d could not be ended: %s", e.attempt, e.task_id, exc)
            result.outage = result.outage or again.outage
        rows = [r for _, part in result.written for r in part]
        if result.outage is not None:
            raise result.outage
        return rows

    async def _end(self, ends: list[AttemptEnd]) -> list[task_store.FailedAttempt]:
        """Ends attempts in one transaction (their final failures progress their DAG runs
        in it); its outbox tells whoever waits once it commits."""
        async with self._signals.transaction(self._db) as (tx, out):
            rows = await task_store.fail_attempts(
                tx,
                task_store.FailAttempts(
                    [e.task_id for e in ends],
                    [e.attempt for e in ends],
                    [json.dumps({k: storable_text(v) for k, v in e.error.items()}) for e in ends],
                    [e.retryable for e in ends],
                    [e.counts for e in ends],
                    [e.delay_ms for e in ends],
                    [e.kind for e in ends],
                    [e.reporter for e in ends],
                    self._max_requeues,
                    metrics.metadata_labels_on(),
                ),
            )
            finals = [r for r in rows if r["status"] != "QUEUED"]
            await self.progress(tx, out, finals)
            _finished(out, finals)
            for tenant_id in {int(r["tenant_id"]) for r in rows if r["status"] == "QUEUED"}:
                out.queued(tenant_id)
            out.after_commit(lambda: metrics.ended(rows))
        return rows
