"""DAG progression: what happens in a workflow run when one of its steps ends.

Design (see docs/workflows.md for the user's view):

* A workflow run is a ``dag`` row; all its steps are ``task`` rows created with it. Roots
  without conditions are QUEUED at once; every other step is PENDING (no queue item, so it
  holds no worker slot however long it waits).
* Progression runs **inside the transaction that ends steps**, called explicitly as
  ``progress(tx, out, dag_ids)`` with that transaction's
  :class:`~stoker.engine.signals.Outbox`: :mod:`stoker.engine.attempts` (completions and
  final failures), the workflow ingest, the event ingest, cancel and replay. What it
  queues and finishes it says through the caller's outbox, so the NOTIFY goes out in the
  caller's transaction and the wake-ups after its commit. A crash either loses both the
  completion and its
  consequences or keeps both. Progression locks the runs' ``dag`` rows first (id order,
  so concurrent flushes never deadlock and never both miss a step whose two parents ended
  at once), then reads their steps, decides in memory and writes the decisions in a few
  batched statements, whatever the number of runs in the flush.
* A decision is per PENDING step whose parents are all final (:func:`stoker._core.dag.decide`):
  a failed/cancelled parent cancels it (and, step after step, everything downstream);
  ``cancel_if``, ``skip_if`` and ``wait_for`` are then tried in that order. A skipped step
  is COMPLETED with ``skipped`` set, and its children run. Steps that must wait register
  their sleep/event conditions in ``task_wait`` (:mod:`stoker.engine.flows.conditions`);
  the sweeper fires sleeps, the event ingest satisfies events, and both progress the run
  again.
* Handlers: ``on_failure`` runs once every regular step is final and one failed;
  ``on_success`` once all completed; otherwise the handler is skipped. The run is final
  when every step is: CANCELLED if a user cancelled it, FAILED if a step failed, CANCELLED
  if a step was cancelled, else COMPLETED.
* The sweeper (:mod:`stoker.engine.controllers.sweeper`, on the leader) fires due sleeps
  and re-progresses runs with nothing queued or running and nothing to wait for: the runs
  whose steps ended by a path without the hook (schedule timeouts, concurrency
  cancellations) or whose progression was lost. Progression is idempotent, so running it
  twice is harmless.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stoker._core.dag import ParentState, StepSpec, WorkflowSpec, decide
from stoker._core.status import FINAL
from stoker.db import Executor, Row
from stoker.db.store import conditions as condition_store
from stoker.db.store import dags as dag_store
from stoker.db.store import tasks as task_store
from stoker.engine.flows.conditions import insert_waits, no_waits, register_waits
from stoker.engine.signals import Outbox, Signals

log = logging.getLogger("stoker.engine.dags")


@dataclass(slots=True)
class _Step:
    row: Row  # a working copy, updated as decisions are made
    spec: StepSpec

    @property
    def status(self) -> str:
        return str(self.row["status"])


@dataclass(slots=True)
class _Plan:
    """Everything one progression decided, written in a few batched statements."""

    enqueue: dict[int, list[str]] = field(default_factory=dict)
    skip: list[int] = field(default_factory=list)
    cancel: dict[int, str] = field(default_factory=dict)
    waits: condition_store.InsertWaits = field(default_factory=no_waits)
    condition_errors: dict[int, list[str]] = field(default_factory=dict)
    finish: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    tenants_queued: set[int] = field(default_factory=set)
    tenants_gated: set[int] = field(default_factory=set)
    finished_runs: list[tuple[int, Any]] = field(default_factory=list)


def _error(type_: str, message: str) -> str:
    return json.dumps({"type": type_, "message": message, "traceback": ""})


class Progression:
    """Progresses DAG runs inside the transactions that end their steps."""

    def __init__(self, db: Executor, signals: Signals) -> None:
        self._db = db
        self._signals = signals
        self._versions: dict[int, WorkflowSpec] = {}

    # -- versions -----------------------------------------------------------------------

    async def versions(self, db: Executor, ids: Iterable[int]) -> dict[int, WorkflowSpec]:
        """Workflow versions by id (immutable, so cached for good)."""
        wanted = set(ids)
        missing = sorted(wanted - set(self._versions))
        if missing:
            for r in await dag_store.workflow_versions(db, dag_store.WorkflowVersions(missing)):
                self._versions[int(r["id"])] = WorkflowSpec.model_validate(r["config"])
        return {i: self._versions[i] for i in wanted if i in self._versions}

    # -- progression --------------------------------------------------------------------

    async def progress(self, tx: Executor, out: Outbox, dag_ids: Iterable[int]) -> None:
        """Advances the given DAG runs as far as they can go now, inside ``tx``; the steps
        it queues and the runs it finishes are told through ``out`` (``tx``'s outbox)."""
        ids = sorted(set(dag_ids))
        if not ids:
            return
        locked = [int(r["id"]) for r in await dag_store.lock_dags(tx, dag_store.LockDags(ids))]
        if not locked:
            return
        rows = await dag_store.dag_steps(tx, dag_store.DagSteps(locked))
        versions = await self.versions(tx, {int(r["version_id"]) for r in rows})
        satisfied: dict[int, dict[str, bool]] = {
            int(r["id"]): {str(c): bool(v) for c, v in r["waits"].items()}
            for r in rows
            if r["waits"]
        }
        by_dag: dict[int, list[dag_store.DagStep]] = {}
        for r in rows:
            by_dag.setdefault(int(r["dag_id"]), []).append(r)
        outputs = await self._outputs_needed(tx, by_dag, versions)
        plan = _Plan()
        for dag_id, steps in by_dag.items():
            spec = versions.get(int(steps[0]["version_id"]))
            if spec is None:
                log.error("DAG run %d has an unknown workflow version", dag_id)
                continue
            self._plan_dag(dag_id, steps, spec, satisfied, outputs, plan)
        await self._apply(tx, plan)
        # Told only once every statement succeeded: a caller that runs progression in a
        # savepoint and loses it must not signal what was rolled back.
        for tenant_id in plan.tenants_queued:
            out.queued(tenant_id, gated=tenant_id in plan.tenants_gated)
        for tenant_id, external_id in plan.finished_runs:
            out.finished(tenant_id, [external_id])

    async def _outputs_needed(
        self,
        tx: Executor,
        by_dag: dict[int, list[dag_store.DagStep]],
        versions: dict[int, WorkflowSpec],
    ) -> dict[int, Any]:
        """Outputs of the completed parents that some pending step's conditions read."""
        wanted: list[int] = []
        for steps in by_dag.values():
            spec = versions.get(int(steps[0]["version_id"]))
            if spec is None:
                continue
            by_name = {str(r["step"]): r for r in steps}
            for r in steps:
                if r["status"] != "PENDING":
                    continue
                try:
                    step = spec.step(str(r["step"]))
                except KeyError:
                    continue
                for cond in _parent_conditions(step):
                    p = by_name.get(cond)
                    if p is not None and p["status"] == "COMPLETED" and not p["skipped"]:
                        wanted.append(int(p["id"]))
        if not wanted:
            return {}
        rows = await dag_store.task_outputs(tx, dag_store.TaskOutputs(sorted(set(wanted))))
        return {int(r["id"]): r["output"] for r in rows}

    def _plan_dag(
        self,
        dag_id: int,
        rows: list[dag_store.DagStep],
        spec: WorkflowSpec,
        satisfied: dict[int, dict[str, bool]],
        outputs: dict[int, Any],
        plan: _Plan,
    ) -> None:
        steps: dict[str, _Step] = {}
        for r in rows:
            try:
                steps[str(r["step"])] = _Step(dict(r), spec.step(str(r["step"])))
            except KeyError:
                log.error("DAG run %d: step %r is not in its workflow version", dag_id, r["step"])
                return
        first = rows[0]
        tenant_id = int(first["tenant_id"])
        if first["cancelled"]:
            # Steps a concurrent flush queued after the cancel read its tasks go too (a
            # running one ends on its own; the run is CANCELLED either way).
            for s in steps.values():
                if s.status in ("PENDING", "QUEUED"):
                    plan.cancel[int(s.row["id"])] = _error(
                        "RunCancelledError", "the workflow run was cancelled"
                    )
                    s.row["status"] = "CANCELLED"
        regular = [s for s in steps.values() if s.spec.role == "step"]
        # Decisions can unlock more (a skip frees children, a cancel cascades), so decide
        # until nothing changes; queued and waiting steps change nothing further.
        changed = True
        while changed:
            changed = False
            for s in steps.values():
                if s.status != "PENDING" or int(s.row["id"]) in plan.enqueue:
                    continue
                task_id = int(s.row["id"])
                if s.spec.role != "step":
                    if any(r.status not in FINAL for r in regular):
                        continue
                    failed = any(r.status == "FAILED" for r in regular)
                    all_ok = all(r.status == "COMPLETED" for r in regular)
                    run = failed if s.spec.role == "on_failure" else all_ok
                    if run:
                        plan.enqueue[task_id] = [r.spec.name for r in regular]
                    else:
                        plan.skip.append(task_id)
                        s.row.update(status="COMPLETED", skipped=True)
                        changed = True
                    continue
                parents = {p: steps[p] for p in s.spec.parents}
                if any(p.status not in FINAL for p in parents.values()):
                    continue
                states = {
                    name: ParentState(
                        p.status, bool(p.row["skipped"]), outputs.get(int(p.row["id"]))
                    )
                    for name, p in parents.items()
                }
                decision = decide(s.spec, states, satisfied.get(task_id, {}))
                if decision.errors:
                    plan.condition_errors.setdefault(task_id, []).extend(decision.errors)
                if decision.action == "cancel":
                    plan.cancel[task_id] = _error("StepCancelledError", decision.reason)
                    s.row.update(status="CANCELLED", error=json.loads(plan.cancel[task_id]))
                    changed = True
                elif decision.action == "skip":
                    plan.skip.append(task_id)
                    s.row.update(status="COMPLETED", skipped=True)
                    changed = True
                elif decision.action == "queue":
                    plan.enqueue[task_id] = list(s.spec.parents)
                    plan.tenants_queued.add(tenant_id)
                else:
                    register_waits(
                        plan.waits, task_id, s.spec, dag_id, tenant_id, satisfied.get(task_id)
                    )
        if all(s.status in FINAL and int(s.row["id"]) not in plan.enqueue for s in steps.values()):
            order = {st.name: n for n, st in enumerate(spec.steps)}
            plan.finish[dag_id] = _outcome(
                first["cancelled"], sorted(steps.values(), key=lambda st: order[st.spec.name])
            )
        for s in steps.values():
            if int(s.row["id"]) in plan.enqueue:
                plan.tenants_queued.add(tenant_id)

    async def _apply(self, tx: Executor, plan: _Plan) -> None:
        await insert_waits(tx, plan.waits)
        # Skips and cancels first: the inputs of steps queued now name them.
        if plan.skip:
            await dag_store.skip_dag_steps(tx, dag_store.SkipDagSteps(sorted(plan.skip)))
        if plan.cancel:
            ids = sorted(plan.cancel)
            await task_store.cancel_tasks(
                tx, task_store.CancelTasks(ids, [plan.cancel[i] for i in ids])
            )
            await condition_store.clear_waits(tx, condition_store.ClearWaits(ids))
        if plan.enqueue:
            ids = sorted(plan.enqueue)
            # Steps with concurrency keys wait for admission instead of going to the queue.
            gated = await dag_store.enqueue_dag_steps(
                tx, dag_store.EnqueueDagSteps(ids, [json.dumps(plan.enqueue[i]) for i in ids])
            )
            plan.tenants_gated = {int(r["tenant_id"]) for r in gated}
        if plan.condition_errors:
            ids = sorted(plan.condition_errors)
            await condition_store.log_condition_errors(
                tx,
                condition_store.LogConditionErrors(
                    ids,
                    [
                        json.dumps({"type": "ConditionError", "message": "; ".join(e)})
                        for e in (plan.condition_errors[i] for i in ids)
                    ],
                ),
            )
        if plan.finish:
            ids = sorted(plan.finish)
            finished = await dag_store.finish_dags(
                tx,
                dag_store.FinishDags(
                    ids, [plan.finish[i][0] for i in ids], [plan.finish[i][1] for i in ids]
                ),
            )
            plan.finished_runs = [(int(r["tenant_id"]), r["external_id"]) for r in finished]

    async def progress_now(self, dag_ids: Iterable[int]) -> None:
        """Progresses runs in a transaction of its own (the sweeper's stalled runs)."""
        async with self._signals.transaction(self._db) as (tx, out):
            await self.progress(tx, out, dag_ids)


def _parent_conditions(step: StepSpec) -> list[str]:
    names: list[str] = []
    for group in (step.cancel_if, step.skip_if, step.wait_for):
        for item in group:
            for c in item.items if item.kind == "or" else [item]:
                if c.kind == "parent":
                    names.append(c.parent)
    return names


def _outcome(cancelled: bool, steps: list[_Step]) -> tuple[str, str | None]:
    """A finished run's status and error: that of its first failed step (in declaration
    order), else of its first cancelled one, preferring a cause (a schedule timeout, say)
    over a step cancelled only because a parent was."""
    if cancelled:
        return "CANCELLED", _error("RunCancelledError", "the workflow run was cancelled")
    for status in ("FAILED", "CANCELLED"):
        hit = sorted(
            (s for s in steps if s.status == status),
            key=lambda s: _error_type(s) == "StepCancelledError",
        )
        if hit:
            s = hit[0]
            error = s.row["error"] if isinstance(s.row["error"], dict) else {}
            return status, json.dumps(
                {
                    "type": str(error.get("type") or status),
                    "message": f"step {s.spec.name!r}: {error.get('message', status.lower())}",
                    "traceback": str(error.get("traceback") or ""),
                }
            )
    return "COMPLETED", None


def _error_type(step: _Step) -> str:
    error = step.row.get("error")
    return str(error.get("type", "")) if isinstance(error, dict) else ""
