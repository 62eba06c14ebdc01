"""The schedules controller: starts scheduled runs when they are due (leader only).

Each round is **one transaction**. Its first statement (``fire_due_plain_task_runs``)
locks the due ``scheduled_run`` rows (``FOR UPDATE SKIP LOCKED``, so a second leader or a
parallel round skips them) and, for the runs of *plain* tasks — no concurrency or
rate-limit policy, nothing to evaluate per run — marks them FIRED and writes their task
rows and queue items in the same statement, without their input or metadata ever leaving
Postgres. When it locked other rows (workflows, tasks with a policy, a task unregistered
since), a second statement (``fire_due_scheduled_runs``) marks those FIRED with the ids
their runs get, and their runs are written with those ids by the writers ingest's flush
uses (:func:`~stoker.engine.ingest.write_task_runs` for tasks,
:meth:`WorkflowIngest.write_runs` for workflows; names, payloads and policy checked by
:meth:`Ingest.prepare`); then the round commits. The runs and the marks commit together
or not at all, so a scheduled run fires **exactly once** across replicas, leader changes
and crashes, with no key to look up: a leader that dies mid-round leaves the rows
SCHEDULED and no run, and the next leader fires them.

Why not through ingest's buffer (as the crons controller does, with a request key per
tick): the buffer writes in a transaction of its own, so exactly-once needed a key per run
recorded with it, and 10,000 runs due in one second paid that and a second commit per
round; writing in the round's own transaction is both exact and cheaper (a round of 2,000
is three statements: claim-and-mark, the runs, and commit).

**Refused runs.** The runs of one tenant and kind are written in a savepoint; when that
fails (a task unregistered since, a payload now refused), its rows are written one by one
in savepoints of their own, so that only the bad ones fail: those are marked FAILED with
the reason (``fail_scheduled_runs``), and never retried.

**On time.** Between rounds the loop sleeps until the earliest due time (at most
``interval_s``), and is woken at once by a create or reschedule on this replica
(:meth:`ScheduleTimers.wake`) or on another one (``stoker_schedules``), so a run due
sooner than the planned wake-up is not late. A round that fired something is followed at
once by another; one that fired ``_BUSY`` or more (runs falling due fast) by
``_PARALLEL`` loops of short rounds back to back, so that a run waits a fraction of a
short round before one claims it (docs/schedules.md has the figures). Runs carry
``stoker_schedule`` (the schedule's id) in their additional metadata.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from stoker.db import Executor, NoParams
from stoker.db.store import schedules as store
from stoker.engine import faults
from stoker.engine.controllers.leadership import Leadership
from stoker.engine.ingest import Ingest, TriggerInput, write_task_runs
from stoker.engine.ingest.workflows import WorkflowIngest, WorkflowTriggerInput
from stoker.engine.service import LoopService
from stoker.engine.signals import Outbox, Signals

log = logging.getLogger("stoker.engine.schedules")

_BATCH = 2_000
"""Most runs the first round after a wake-up fires (a backlog after a failover)."""
_BUSY = 20
"""A round that fired this many is followed by ``_PARALLEL`` rounds at a time."""
_BUSY_BATCH = 500
"""Most runs a round fires while runs are falling due: short rounds, claimed often."""
_PARALLEL = 3
"""Rounds at a time while runs are falling due."""


class ScheduleTimers(LoopService):
    """Fires due scheduled runs, on the leader."""

    name = "schedules"

    def __init__(
        self,
        db: Executor,
        signals: Signals,
        ingest: Ingest,
        workflows: WorkflowIngest,
        leadership: Leadership,
        *,
        interval_s: float,
    ) -> None:
        super().__init__()
        self._db = db
        self._run_signals = signals
        self._ingest = ingest
        self._workflows = workflows
        self._leadership = leadership
        self._interval = interval_s
        self._wake = self.signal()
        self.fired = 0
        """Runs started by this replica (for tests and metrics)."""

    def wake(self) -> None:
        """A scheduled run was created or rescheduled: look again at once."""
        self._wake.set()

    def on_remote(self, _body: str) -> None:
        """``stoker_schedules`` from another replica."""
        self._wake.set()

    async def run(self) -> None:
        while not self.stopping.is_set():
            delay = self._interval
            if self._leadership.is_leader:
                delay, fired = await self._safe_round(_BATCH)
                if fired >= _BUSY:
                    # Runs are falling due fast: rounds go on back to back, _PARALLEL of
                    # them at a time, until one finds nothing due.
                    delay = min(await asyncio.gather(*(self._busy() for _ in range(_PARALLEL))))
                if delay == 0.0:
                    continue
            await self._wake.wait(delay)

    async def _busy(self) -> float:
        """Rounds back to back while they fire something: each one claims what fell due
        while the others ran (disjoint rows, SKIP LOCKED), so a run waits for a fraction of
        a round before one claims it, and Postgres works on one round while this process
        handles another."""
        while not self.stopping.is_set() and self._leadership.is_leader:
            delay, _ = await self._safe_round(_BUSY_BATCH)
            if delay > 0.0:
                return delay
        return self._interval

    async def _safe_round(self, limit: int) -> tuple[float, int]:
        try:
            return await self.round(limit)
        except Exception:
            log.exception("a round of scheduled runs failed; it is retried")
            return self._interval, 0

    async def round(self, limit: int = _BATCH) -> tuple[float, int]:
        """Fires what is due (at most ``limit``); returns how many it fired and seconds
        until the next one: 0 when it fired some (more may be due by now), else the time
        to the next due run (at most the interval)."""
        async with self._run_signals.transaction(self._db) as (tx, out):
            plain = await store.fire_due_plain_task_runs(tx, store.FireDueScheduledRuns(limit))
            quick = locked = 0
            for r in plain:
                if r["tenant_id"] is None:
                    locked = r["runs"]
                else:
                    quick += r["runs"]
                    out.queued(r["tenant_id"], gated=False)
            due: list[store.FiredScheduledRun] = []
            if locked > quick:  # due rows of other tasks or of workflows
                due = await store.fire_due_scheduled_runs(
                    tx, store.FireDueScheduledRuns(max(1, limit - quick))
                )
            if due:
                groups: dict[tuple[int, bool], list[store.FiredScheduledRun]] = {}
                for row in due:
                    groups.setdefault((row["tenant_id"], row["task_name"] is None), []).append(row)
                failed = store.FailScheduledRuns([], [])
                for (tenant_id, workflow), rows in groups.items():
                    for row_id, error in await self._fire(tx, out, tenant_id, workflow, rows):
                        failed.ids.append(row_id)
                        failed.errors.append(error)
                if failed.ids:
                    await store.fail_scheduled_runs(tx, failed)
        self.fired += quick
        if due:
            self.fired += len(due) - len(failed.ids)
        if due or quick:
            return 0.0, len(due) + quick
        nxt = await store.next_scheduled_run(self._db, NoParams())
        if nxt is None or nxt["run_at"] is None:
            return self._interval, len(due)
        left = (nxt["run_at"] - datetime.now(UTC)).total_seconds()
        return float(max(0.0, min(self._interval, left))), len(due)

    async def _fire(
        self,
        tx: Executor,
        out: Outbox,
        tenant_id: int,
        workflow: bool,
        rows: list[store.FiredScheduledRun],
    ) -> list[tuple[int, str]]:
        """Writes the runs of ``rows`` in a savepoint of ``tx``; when that is refused,
        each row alone, so that only the bad ones fail. The rows refused, with why."""
        own = self._run_signals.outbox()
        try:
            async with tx.transaction() as savepoint:
                await self._write(savepoint, own, tenant_id, workflow, rows)
        except Exception as exc:
            if faults.transient(exc):
                raise  # the database is away: the round is retried as a whole
            if len(rows) == 1:
                name = rows[0]["task_name"] or rows[0]["workflow_name"]
                log.error(
                    "scheduled run %s of %r is refused: %s", rows[0]["external_id"], name, exc
                )
                return [(rows[0]["id"], str(exc) or type(exc).__name__)]
            refused: list[tuple[int, str]] = []
            for row in rows:
                refused += await self._fire(tx, out, tenant_id, workflow, [row])
            return refused
        out.merge(own)
        return []

    async def _write(
        self,
        tx: Executor,
        out: Outbox,
        tenant_id: int,
        workflow: bool,
        rows: list[store.FiredScheduledRun],
    ) -> None:
        ids = [r["run_id"] for r in rows]
        if workflow:
            items = [
                WorkflowTriggerInput(
                    r["workflow_name"] or "",
                    r["input"].encode(),
                    r["metadata"].encode(),
                    r["priority"],
                )
                for r in rows
            ]
            await self._workflows.write_runs(tx, out, tenant_id, items, ids)
            return
        runs = await self._ingest.prepare(
            tenant_id,
            [
                TriggerInput(
                    r["task_name"] or "", r["input"].encode(), r["metadata"].encode(), r["priority"]
                )
                for r in rows
            ],
            ids,
        )
        out.queued(tenant_id, gated=await write_task_runs(tx, tenant_id, runs, out))
