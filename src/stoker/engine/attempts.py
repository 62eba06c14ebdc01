"""Ending attempts that did not complete: failures, timeouts, lost workers.

Every path that ends an attempt other than by success goes through :meth:`Attempts.end`,
one ``fail_attempts`` statement per batch, which decides in Postgres between a retry (a new
attempt queued after the backoff) and the run's final failure. The batch is split apart
when the database refuses one attempt's end (see :mod:`stoker.engine.faults`), so that the
others still end; a worker's error text is made storable (NUL shown as ``\\x00``), since a
failure that already happened cannot be refused. Only an attempt that still holds its
``task_runtime`` row can end, so an attempt ends exactly once whoever reports it; an end
reported by a worker (``reporter``) counts only if that worker holds the attempt.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stoker._core.wire import storable_text
from stoker._proto import engine_pb2 as pb
from stoker.db import Executor
from stoker.db.store import tasks as task_store
from stoker.engine import faults, notify
from stoker.engine.runs.watcher import RunWatcher

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


DagHook = Callable[[Executor, list[int]], Awaitable[Callable[[], None]]]
"""Called inside the transaction that ended tasks of DAG runs, with those runs' ids; it
progresses them there and returns what to do once that transaction commits."""


class Attempts:
    """Ends attempts in batches and tells whoever waits what happened."""

    def __init__(
        self,
        db: Executor,
        watcher: RunWatcher,
        *,
        max_requeues: int,
        on_requeued: Callable[[], None],
    ) -> None:
        self._db = db
        self.watcher = watcher
        self._max_requeues = max_requeues
        self._on_requeued = on_requeued
        self.engine_id = ""
        self.dag_hooks: list[DagHook] = []

    async def progress_dags(
        self, tx: Executor, finals: Iterable[Mapping[str, Any]], *, isolated: bool = True
    ) -> list[Callable[[], None]]:
        """Runs the DAG hooks for the runs of tasks that just reached a final state.

        ``isolated``: in a savepoint, so that progression that fails does not take the
        outcomes it follows down with it (the runs are left as they were; the DAG sweeper
        progresses runs with nothing queued or running within a second). A caller that
        retries its whole transaction without progression instead passes False and saves
        the savepoint's two round trips (the dispatcher's flush, on the hot path).
        """
        dag_ids = sorted({int(r["dag_id"]) for r in finals if r.get("dag_id") is not None})
        if not dag_ids:
            return []
        if not isolated:
            return [await hook(tx, dag_ids) for hook in self.dag_hooks]
        afters: list[Callable[[], None]] = []
        for hook in self.dag_hooks:
            try:
                async with tx.transaction() as sp:
                    afters.append(await hook(sp, dag_ids))
            except Exception:
                log.exception("progressing DAG runs %s failed; the sweeper retries", dag_ids)
        return afters

    async def end(
        self, ends: list[AttemptEnd], db: Executor | None = None
    ) -> list[task_store.FailedAttempt]:
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
            ends, lambda part: self._end(list(part), db), what="ending attempts"
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
                retry, lambda part: self._end(list(part), db), what="ending attempts"
            )
            result.written += again.written
            for e, exc in again.failed:
                log.error("attempt %d of task %d could not be ended: %s", e.attempt, e.task_id, exc)
            result.outage = result.outage or again.outage
        rows = [r for _, part in result.written for r in part]
        if result.outage is not None:
            raise result.outage
        return rows

    async def _end(
        self, ends: list[AttemptEnd], db: Executor | None
    ) -> list[task_store.FailedAttempt]:
        """Ends attempts in one transaction (their final failures progress their DAG runs
        in it) and, once committed, tells whoever waits."""
        async with (db or self._db).transaction() as tx:
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
                ),
            )
            after = await self.progress_dags(tx, [r for r in rows if r["status"] != "QUEUED"])
            finals = {int(r["tenant_id"]) for r in rows if r["status"] != "QUEUED"}
            requeued = {int(r["tenant_id"]) for r in rows if r["status"] == "QUEUED"}
            await notify.send(tx, notify.FINISHED, finals, self.engine_id)
            await notify.send(tx, notify.QUEUE, requeued, self.engine_id)
        self.watcher.finished(r["external_id"] for r in rows if r["status"] != "QUEUED")
        for done in after:
            done()
        if requeued:
            self._on_requeued()
        return rows
