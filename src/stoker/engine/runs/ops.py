"""Cancelling and replaying runs (workflow runs and single-task runs), one or in bulk.

Request-driven (the REST API and the gRPC servicers call :class:`RunOps`), not a loop.

Cancel: in one transaction the runs' DAG rows are locked and marked cancelled, every
unfinished task of the runs — and, through ``child_run``, of the child runs their tasks
spawned, recursively — is CANCELLED (queue items and running attempts removed), and the
DAG runs progress to their final state. After the commit each running attempt's worker is
told through its stream (``Dispatcher.cancel``), which frees the slot and makes the worker
set ``ctx.cancelled`` and cancel the attempt; a late result of such an attempt is ignored
because its ``task_runtime`` row is gone. So a cancelled run never stays RUNNING.

Replay: a finished run goes back to RUNNING with its FAILED and CANCELLED steps (and its
handlers) PENDING as a new attempt with fresh retries; COMPLETED steps keep their outputs,
and progression queues the steps whose parents are complete. A single-task run that failed
or was cancelled is queued again as a new attempt (through concurrency admission when it
has keys). The failed or cancelled child runs of the tasks replayed are replayed in the
same transaction, recursively, so a re-run parent that spawns its children again (same
index or key) gets children that run again instead of their old failure. A durable
task's run replays with its log: the new attempt opens the log (a new invocation on the
same branch) and gets every recorded call back, so its completed steps do not run again.
The replay needs no fence of its own: a finished run has no live attempt, and a cancelled
attempt's requests are refused once its ``task_runtime`` row is gone.

Reset (durable runs, docs/durable.md "Reset"): in one transaction the log branches at a
position (a new branch forking there becomes active, the pending waits at or after it are
dropped, the live invocation is fenced off) and the task runs again as a new attempt — a
running attempt is ended and its worker told to stop, a finished run reopens. Earlier
positions replay, later ones execute again.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from stoker._core.durable import MAX_BRANCHES
from stoker._core.status import FINAL, RunStatus
from stoker._core.wire import encode_json
from stoker.db import Executor
from stoker.db.store import conditions as condition_store
from stoker.db.store import dags as dag_store
from stoker.db.store import durable as durable_store
from stoker.db.store import runs as run_store
from stoker.db.store import tasks as task_store
from stoker.engine.attempts import Attempts, stops
from stoker.engine.dispatcher import Dispatcher
from stoker.engine.flows.progression import Progression
from stoker.engine.signals import Signals
from stoker.errors import InvalidRequestError, NotFoundError

log = logging.getLogger("stoker.engine.cancel")

MAX_BULK = 10_000
_DEADLOCK_RETRIES = 3
_MAX_RESTORE_DEPTH = 20


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a bulk operation did to one run."""

    run_id: str
    outcome: str  # cancelled, replayed, already_finished, not_finished, not_found, completed
    status: str
    message: str


@dataclass(frozen=True, slots=True)
class ResetOutcome:
    """What a reset did: the branch it made active, forking at ``position``, the
    invocation it fenced the log to, how many pending waits it dropped, and the run's
    status afterwards (QUEUED unless it was still queued or waiting to start)."""

    run_id: str
    position: int
    branch: int
    invocation: int
    dropped: int
    status: str


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs a bulk operation applies to (None: any)."""

    names: list[str] | None = None
    statuses: list[str] | None = None
    since: datetime | None = None
    until: datetime | None = None
    additional_metadata: dict[str, Any] | None = None


class RunOps:
    """Cancel and replay."""

    def __init__(
        self,
        db: Executor,
        signals: Signals,
        dispatcher: Dispatcher,
        attempts: Attempts,
        progression: Progression,
    ) -> None:
        self._db = db
        self._signals = signals
        self._dispatcher = dispatcher
        self._attempts = attempts
        self._progression = progression

    async def _targets(
        self, tenant_id: int, run_ids: list[str], flt: RunFilter | None
    ) -> tuple[Sequence[run_store.ResolvedRun], list[Outcome]]:
        if flt is not None and not run_ids:
            filtered = await run_store.filter_runs(
                self._db,
                run_store.FilterRuns(
                    tenant_id,
                    flt.names or None,
                    flt.statuses or None,
                    flt.since,
                    flt.until,
                    json.dumps(flt.additional_metadata) if flt.additional_metadata else None,
                    MAX_BULK,
                ),
            )
            return filtered, []
        parsed: dict[str, uuid.UUID] = {}
        missing: list[Outcome] = []
        for r in run_ids:
            try:
                parsed[r] = uuid.UUID(r)
            except ValueError:
                missing.append(Outcome(r, "not_found", "", f"{r!r} is not a run id"))
        rows = await run_store.resolve_runs(
            self._db, run_store.ResolveRuns(tenant_id, list(parsed.values()))
        )
        found = {str(r["external_id"]) for r in rows}
        for text, value in parsed.items():
            if str(value) not in found:
                missing.append(Outcome(text, "not_found", "", f"no run with id {text}"))
        return rows, missing

    # -- cancel -------------------------------------------------------------------------

    async def cancel(
        self, tenant_id: int, run_ids: list[str], flt: RunFilter | None, reason: str = ""
    ) -> list[Outcome]:
        """Cancels runs and their children; one outcome per run."""
        if not run_ids and flt is None:
            raise InvalidRequestError("cancel needs run ids or a filter")
        rows, outcomes = await self._targets(tenant_id, run_ids, flt)
        live = [r for r in rows if r["status"] not in FINAL]
        for r in rows:
            if r["status"] in FINAL:
                outcomes.append(
                    Outcome(
                        str(r["external_id"]),
                        "already_finished",
                        str(r["status"]),
                        f"run {r['external_id']} already finished ({r['status']}); "
                        "nothing to cancel",
                    )
                )
        if not live:
            return outcomes
        why = reason or "cancelled by request"
        dag_ids = sorted({int(r["dag_id"]) for r in live if r["dag_id"] is not None})
        task_ids = sorted({int(r["task_id"]) for r in live if r["task_id"] is not None})
        # Tasks first, then their runs: the order in which a flush that completes a step
        # takes its locks. A deadlock with some other path is retried.
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                cancelled = await self._cancel_tx(dag_ids, task_ids, why)
                break
            except psycopg.errors.DeadlockDetected:
                if attempt == _DEADLOCK_RETRIES - 1:
                    raise
                log.info("cancel deadlocked with another transaction; retrying")
        for worker_id, items in stops(cancelled, why).items():
            await self._dispatcher.cancel(worker_id, items)
        for r in live:
            outcomes.append(
                Outcome(str(r["external_id"]), "cancelled", "CANCELLED", f"cancelled: {why}")
            )
        return outcomes

    async def _cancel_tx(
        self, dag_ids: list[int], task_ids: list[int], why: str
    ) -> list[task_store.CancelledTask]:
        async with self._signals.transaction(self._db) as (tx, out):
            tasks = await run_store.cancellable_tasks(
                tx, run_store.CancellableTasks(dag_ids, task_ids)
            )
            ids = sorted({int(t["id"]) for t in tasks})
            error = json.dumps({"type": "RunCancelledError", "message": why, "traceback": ""})
            cancelled = await self._attempts.cancel(tx, out, ids, [error] * len(ids))
            await condition_store.clear_waits(tx, condition_store.ClearWaits(ids))
            all_dags = sorted(set(dag_ids) | {int(t["dag_id"]) for t in tasks if t["dag_id"]})
            await dag_store.lock_dags(tx, dag_store.LockDags(all_dags))
            await run_store.mark_dags_cancelled(tx, run_store.MarkDagsCancelled(all_dags))
            await self._progression.progress(tx, out, all_dags)
        return cancelled

    # -- replay -------------------------------------------------------------------------

    async def replay(
        self, tenant_id: int, run_ids: list[str], flt: RunFilter | None
    ) -> list[Outcome]:
        """Re-runs finished runs from their failed or cancelled tasks."""
        if not run_ids and flt is None:
            raise InvalidRequestError("replay needs run ids or a filter")
        rows, outcomes = await self._targets(tenant_id, run_ids, flt)
        todo: list[run_store.ResolvedRun] = []
        for r in rows:
            run_id, status = str(r["external_id"]), str(r["status"])
            if status not in FINAL:
                outcomes.append(
                    Outcome(run_id, "not_finished", status, f"run {run_id} is still {status}")
                )
            elif status == "COMPLETED":
                outcomes.append(
                    Outcome(
                        run_id, "completed", status, f"run {run_id} completed; nothing to replay"
                    )
                )
            else:
                todo.append(r)
        if not todo:
            return outcomes
        dag_ids = sorted({int(r["dag_id"]) for r in todo if r["dag_id"] is not None})
        task_ids = sorted({int(r["task_id"]) for r in todo if r["task_id"] is not None})
        async with self._signals.transaction(self._db) as (tx, out):
            # The runs are held live first (locked, or brought back from history), with the
            # child runs they spawned (recursively), so that failed children can be
            # replayed with them and the archiver cannot move any of them meanwhile.
            await self._restore(tx, tenant_id, [r["external_id"] for r in todo])
            # The failed children of what is replayed are replayed with it (recursively).
            for c in await run_store.replayable_children(
                tx, run_store.ReplayableChildren(dag_ids, task_ids)
            ):
                if c["dag_id"] is not None:
                    dag_ids.append(int(c["dag_id"]))
                elif c["task_id"] is not None:
                    task_ids.append(c["task_id"])
            dag_ids, task_ids = sorted(set(dag_ids)), sorted(set(task_ids))
            await dag_store.lock_dags(tx, dag_store.LockDags(dag_ids))
            if dag_ids:
                handlers = await self._handler_task_names(tx, dag_ids)
                await run_store.replay_dags(
                    tx, run_store.ReplayDags(dag_ids, json.dumps(sorted(handlers)))
                )
            replayed = []
            if task_ids:
                replayed = await run_store.replay_tasks(tx, run_store.ReplayTasks(task_ids))
            out.queued(tenant_id, gated=any(r["gated"] for r in replayed))
            await self._progression.progress(tx, out, dag_ids)
        for r in todo:
            outcomes.append(Outcome(str(r["external_id"]), "replayed", "RUNNING", "replayed"))
        return outcomes

    # -- replay from a step, or with another input ----------------------------------------

    async def replay_from(
        self,
        tenant_id: int,
        run_id: str,
        *,
        step: str | None = None,
        input: Any = None,
        with_input: bool = False,
    ) -> Outcome:
        """Re-runs one finished run (completed too) from a chosen step, or with another input.

        ``step`` (a workflow run): that step and every step downstream of it run again, and
        so do the run's failed and cancelled steps and its handlers; the other steps keep
        their outcome and output. ``with_input``: the run's input becomes ``input`` and
        the whole run runs again (every step of a workflow run). A run still going is
        refused, and so is a task that keeps a durable log (its recorded calls belong to
        the old run: reset it to position 1 instead).
        """
        if step is None and not with_input:
            raise InvalidRequestError("replay_from needs a step or an input")
        try:
            rid = uuid.UUID(run_id)
        except ValueError:
            raise NotFoundError(f"{run_id!r} is not a run id") from None
        raw: str | None = None
        if with_input:
            raw = encode_json(input, "the edited input").decode()
        found = await run_store.resolve_runs(self._db, run_store.ResolveRuns(tenant_id, [rid]))
        if not found:
            raise NotFoundError(f"no run with id {rid}")
        run = found[0]
        status = str(run["status"])
        if status not in FINAL:
            raise InvalidRequestError(
                f"run {rid} is still {status}: a run is replayed once it has finished"
            )
        if run["dag_id"] is None and step is not None and not with_input:
            raise InvalidRequestError(
                f"run {rid} is a single-task run: it has no steps to replay from"
            )
        async with self._signals.transaction(self._db) as (tx, out):
            await self._restore(tx, tenant_id, [rid])
            dag_ids: list[int] = []
            task_ids: list[int] = []
            if run["dag_id"] is not None:
                dag_id = int(run["dag_id"])
                steps = await self._steps_to_replay(tx, dag_id, step, everything=with_input)
                await self._refuse_durable(tx, rid, dag_id, sorted(steps), None)
                for c in await run_store.replayable_children(
                    tx, run_store.ReplayableChildren([dag_id], [])
                ):
                    if c["dag_id"] is not None and int(c["dag_id"]) != dag_id:
                        dag_ids.append(int(c["dag_id"]))
                    elif c["task_id"] is not None:
                        task_ids.append(c["task_id"])
                await dag_store.lock_dags(tx, dag_store.LockDags(sorted({dag_id, *dag_ids})))
                again = await run_store.replay_dag_steps(
                    tx, run_store.ReplayDagSteps(dag_id, sorted(steps), raw)
                )
                if not again:
                    raise InvalidRequestError(f"run {rid} is no longer finished")
            else:
                task_id = int(run["task_id"] or 0)
                assert raw is not None
                await self._refuse_durable(tx, rid, None, [], task_id)
                for c in await run_store.replayable_children(
                    tx, run_store.ReplayableChildren([], [task_id])
                ):
                    if c["dag_id"] is not None:
                        dag_ids.append(int(c["dag_id"]))
                    elif c["task_id"] is not None and c["task_id"] != task_id:
                        task_ids.append(c["task_id"])
                queued = await run_store.replay_task_with_input(
                    tx, run_store.ReplayTaskWithInput(task_id, raw)
                )
                if not queued:
                    raise InvalidRequestError(f"run {rid} is no longer finished")
                out.queued(tenant_id, gated=queued[0]["gated"])
            # Failed children of what runs again run again too, as in a plain replay.
            dag_ids, task_ids = sorted(set(dag_ids)), sorted(set(task_ids))
            if dag_ids:
                handlers = await self._handler_task_names(tx, dag_ids)
                await run_store.replay_dags(
                    tx, run_store.ReplayDags(dag_ids, json.dumps(sorted(handlers)))
                )
            if task_ids:
                replayed = await run_store.replay_tasks(tx, run_store.ReplayTasks(task_ids))
                out.queued(tenant_id, gated=any(r["gated"] for r in replayed))
            if run["dag_id"] is not None:
                dag_ids.append(int(run["dag_id"]))
            out.queued(tenant_id, gated=False)
            await self._progression.progress(tx, out, sorted(set(dag_ids)))
        how = f"from step {step}" if step is not None else "with the edited input"
        return Outcome(str(rid), "replayed", "RUNNING", f"replayed {how}")

    async def _steps_to_replay(
        self, tx: Executor, dag_id: int, step: str | None, *, everything: bool
    ) -> set[str]:
        """The steps of a DAG run that run again: all of them, or ``step``, what is
        downstream of it, the failed and cancelled ones and the handlers."""
        rows = await dag_store.dag_steps(tx, dag_store.DagSteps([dag_id]))
        if not rows:
            raise InvalidRequestError("the workflow run has no steps")
        versions = await self._progression.versions(tx, {int(rows[0]["version_id"])})
        spec = next(iter(versions.values()))
        names = {s.name for s in spec.steps}
        if everything:
            return names
        if step not in names or spec.step(step).role != "step":
            known = ", ".join(s.name for s in spec.regular())
            raise InvalidRequestError(f"the workflow has no step {step!r}; its steps: {known}")
        chosen = {step}
        for s in spec.steps:  # declaration order: parents before children
            if s.role == "step" and chosen.intersection(s.parents):
                chosen.add(s.name)
        chosen |= {str(r["step"]) for r in rows if r["status"] in ("FAILED", "CANCELLED")}
        chosen |= {s.name for s in spec.steps if s.role != "step"}
        return chosen

    @staticmethod
    async def _refuse_durable(
        tx: Executor, rid: uuid.UUID, dag_id: int | None, steps: list[str], task_id: int | None
    ) -> None:
        durable = await run_store.durable_tasks_among(
            tx, run_store.DurableTasksAmong(dag_id, steps, task_id)
        )
        if durable:
            names = ", ".join(sorted(str(d["name"]) for d in durable))
            raise InvalidRequestError(
                f"run {rid} would run durable tasks again ({names}) whose logs recorded "
                "the old run: reset a durable task's run to position 1 instead"
            )

    # -- reset (durable runs) -----------------------------------------------------------

    async def reset(
        self, tenant_id: int, run_id: str, position: int, reason: str = ""
    ) -> ResetOutcome:
        """Branches a durable run's log at ``position`` and runs the task again from it.

        NotFoundError for an unknown run; InvalidRequestError for a run that has no
        durable log (not a durable task's run, or not started yet) or a position outside
        1 .. last visible position + 1.
        """
        try:
            rid = uuid.UUID(run_id)
        except ValueError:
            raise NotFoundError(f"{run_id!r} is not a run id") from None
        if position < 1:
            raise InvalidRequestError(f"reset position {position} is refused: positions start at 1")
        why = reason or f"reset to position {position}"
        stopped: list[durable_store.EndedAttempt] = []
        async with self._signals.transaction(self._db) as (tx, out):
            # A step is held live with its workflow run (which may be in history).
            dag = await durable_store.durable_step_dag(
                tx, durable_store.LockDurableRun(tenant_id, rid)
            )
            await self._restore(tx, tenant_id, [rid if dag is None else dag["external_id"]])
            run = await durable_store.lock_durable_run(
                tx, durable_store.LockDurableRun(tenant_id, rid)
            )
            if run is None:
                raise await self._not_resettable(tx, tenant_id, rid)
            if dag is not None and run["status"] in FINAL:
                self._check_finished_step(rid, str(run["status"]), str(dag["status"]))
            key = (run["task_id"], run["created_at"])
            if await durable_store.lock_durable_log(tx, durable_store.LockDurableLog(*key)) is None:
                raise InvalidRequestError(
                    f"run {rid} has no durable log: task {run['task_name']!r} is not a "
                    "durable task, or the run has not started yet"
                )
            visible = await durable_store.visible_durable_log(
                tx, durable_store.VisibleDurableLog(*key)
            )
            top = max((e["position"] for e in visible), default=0)
            if position > top + 1:
                raise InvalidRequestError(
                    f"reset position {position} is out of range: the log of run {rid} has "
                    f"positions 1..{top}, so a reset takes 1..{top + 1}"
                )
            done = await durable_store.reset_durable_log(
                tx, durable_store.ResetDurableLog(*key, position, why)
            )
            assert done is not None  # the position was checked under the lock
            if done["branch"] > MAX_BRANCHES:
                raise InvalidRequestError(
                    f"run {rid} was reset {MAX_BRANCHES - 1:,} times already, the most a "
                    "durable run's log takes"
                )
            status = str(run["status"])
            running = status in (RunStatus.ASSIGNED, RunStatus.RUNNING)
            if running:
                error = json.dumps({"type": "RunResetError", "message": why, "traceback": ""})
                stopped = list(
                    await durable_store.end_reset_attempt(
                        tx, durable_store.EndResetAttempt(key[0], error)
                    )
                )
            # A queued run's next attempt opens the new branch by itself. An evicted one
            # waited for what the reset may just have dropped: it is queued now, still
            # admitted (it kept its concurrency slots while evicted), and the restore a
            # later settlement would do finds it no longer EVICTED.
            evicted = status == RunStatus.EVICTED
            if dag is not None and status in FINAL:
                # A failed or cancelled step of a finished workflow run: the workflow run
                # is replayed (as runs.replay does: its failed and cancelled steps and its
                # handlers run again), this step from its new branch.
                dag_ids = [int(dag["dag_id"])]
                handlers = await self._handler_task_names(tx, dag_ids)
                await run_store.replay_dags(
                    tx, run_store.ReplayDags(dag_ids, json.dumps(sorted(handlers)))
                )
                await self._progression.progress(tx, out, dag_ids)
                again = await durable_store.lock_durable_run(
                    tx, durable_store.LockDurableRun(tenant_id, rid)
                )
                status = str(again["status"]) if again is not None else status
            elif running or evicted or status in FINAL:
                queued = await durable_store.requeue_reset_task(
                    tx, durable_store.RequeueResetTask(key[0], running or evicted)
                )
                assert queued is not None
                out.queued(tenant_id, gated=queued["gated"])
                status = RunStatus.QUEUED.value
        for row in stopped:
            await self._dispatcher.cancel(
                int(row["worker_id"]), [(int(row["task_id"]), int(row["attempt"]), why)]
            )
        return ResetOutcome(
            str(rid), position, done["branch"], done["invocation"], int(done["dropped"]), status
        )

    @staticmethod
    def _check_finished_step(rid: uuid.UUID, status: str, dag_status: str) -> None:
        """Refuses the reset of a finished workflow step that cannot run again soundly."""
        if status == RunStatus.COMPLETED:
            # Later steps ran on its output, or the workflow run ended with it: running it
            # again alone would leave them as they are.
            raise InvalidRequestError(
                f"run {rid} is a step of a workflow run that completed already: the steps "
                "after it ran on its output, so a completed step is reset only before it "
                "finishes"
            )
        if dag_status not in FINAL:
            raise InvalidRequestError(
                f"run {rid} is a {status} step of a workflow run that is still "
                f"{dag_status}: reset it once the workflow run has finished"
            )

    async def _not_resettable(
        self, tx: Executor, tenant_id: int, rid: uuid.UUID
    ) -> InvalidRequestError | NotFoundError:
        rows = await run_store.resolve_runs(tx, run_store.ResolveRuns(tenant_id, [rid]))
        if rows and rows[0]["dag_id"] is not None:
            return InvalidRequestError(
                f"run {rid} is a workflow run; reset applies to the run of a durable task "
                "or of a durable step (the step's run id)"
            )
        return NotFoundError(f"no run with id {rid}")

    async def _restore(self, tx: Executor, tenant_id: int, run_ids: list[uuid.UUID]) -> None:
        """Holds the runs live, and level by level their child runs: what is live and
        finished is locked against the archiver, what already moved to history comes back.
        A child may have moved while its parent is still live (it finished first), so the
        children of every task held, locked or restored, are looked up. (Children of
        running tasks are not: a replay only re-runs children of failed or cancelled ones.)"""
        seen: set[uuid.UUID] = set()
        for _ in range(_MAX_RESTORE_DEPTH):
            run_ids = [r for r in run_ids if r not in seen]
            if not run_ids:
                return
            seen.update(run_ids)
            held = await run_store.lock_live_runs(tx, run_store.LockLiveRuns(tenant_id, run_ids))
            held += await run_store.restore_runs(tx, run_store.RestoreRuns(tenant_id, run_ids))
            children = await run_store.child_run_ids(
                tx, run_store.ChildRunIds([int(r["id"]) for r in held])
            )
            run_ids = [r["external_id"] for r in children]

    async def _handler_task_names(self, tx: Executor, dag_ids: list[int]) -> set[str]:
        rows = await dag_store.dag_steps(tx, dag_store.DagSteps(dag_ids))
        versions = await self._progression.versions(tx, {int(r["version_id"]) for r in rows})
        return {s.task_name for v in versions.values() for s in v.steps if s.role != "step"}
