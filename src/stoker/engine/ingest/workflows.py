"""Ingest of workflows: definitions, workflow runs, child runs and user events.

* Workflow runs are validated at once, then parked in the task ingest's buffer
  (:meth:`Ingest.submit`), so the runs of every caller that arrive while a flush runs are
  written together, in the flush's one transaction: their ``dag`` rows, all their steps
  (through :func:`write_task_runs`, like single tasks, so rate limits, concurrency keys
  and policy errors behave alike) and their DAG links. Roots without conditions are QUEUED
  at once (or wait for concurrency admission); every other step is PENDING until DAG
  progression (:mod:`stoker.engine.flows.progression`) readies it.
* A child run is recorded in ``child_run`` under its parent task, its index (the n-th spawn
  of the parent's attempt) and an optional key, in the same transaction as the run itself;
  a parent that spawns again after a retry gets the existing child back.
* A user event is stored, then matched against the event conditions that were waiting
  before it arrived: key equality, the optional scope (a workflow run id), and the CEL
  expression over ``input`` (the payload), ``additional_metadata`` (the event's),
  ``run_input`` and ``run_metadata`` (the waiting run's). Satisfied runs progress in the
  same transaction. An expression that fails on a payload is recorded on the waiting step
  (``task_wait.error`` and a CONDITION_ERROR event) and matches nothing; other waits go on.
* Request keys (:mod:`stoker.engine.ingest.requests`): a workflow trigger's key is
  recorded by the flush like a task trigger's. Spawns and event pushes write in their own
  transaction, which records the key at its end; a retry finds the key before doing any
  work, and a retry racing its first call (both past that check) waits on the key's row
  and rolls back. A spawn is idempotent without a key too, through its children's
  ``(parent, index)`` and ``(parent, child_key)``; the key adds the content check and
  answers a retry exactly as the first call was answered.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from stoker._core import envelope
from stoker._core.cel import compile_expression
from stoker._core.dag import WorkflowSpec
from stoker._core.wire import TaskConfig, text_problem
from stoker.db import Executor
from stoker.db.store import children as child_store
from stoker.db.store import conditions as condition_store
from stoker.db.store import dags as dag_store
from stoker.db.store import events as event_store
from stoker.engine.flows.progression import Progression
from stoker.engine.ingest import Ingest, NewTaskRun, TriggerInput, requests, write_task_runs
from stoker.engine.ingest.requests import RequestKey
from stoker.engine.signals import Outbox, Signals
from stoker.errors import InvalidRequestError, NotFoundError, UnknownTaskError

_DEFS_TTL_S = 5.0


@dataclass(frozen=True, slots=True)
class WorkflowTriggerInput:
    """One workflow run to create, as received."""

    workflow_name: str
    input: bytes
    additional_metadata: bytes = b""
    priority: int = 0


@dataclass(frozen=True, slots=True)
class ChildInput:
    """One child run to spawn: a task (``task_name``) or a workflow (``workflow_name``)."""

    task_name: str
    workflow_name: str
    input: bytes
    additional_metadata: bytes
    priority: int
    child_index: int
    child_key: str


@dataclass(frozen=True, slots=True)
class EventInput:
    """One user event."""

    key: str
    payload: bytes
    additional_metadata: bytes = b""
    scope: str = ""


@dataclass(frozen=True, slots=True)
class _NewRun:
    external_id: uuid.UUID
    name: str
    input: bytes
    additional_metadata: bytes
    priority: int


class WorkflowIngest:
    """Writes workflow definitions, workflow runs, child runs and user events."""

    def __init__(self, db: Executor, signals: Signals, ingest: Ingest, dags: Progression) -> None:
        self._db = db
        self._signals = signals
        self._ingest = ingest
        self._dags = dags
        self._workflows: dict[int, tuple[float, dict[str, tuple[int, WorkflowSpec]]]] = {}

    # -- definitions --------------------------------------------------------------------

    async def register(
        self, tenant_id: int, workflows: Sequence[tuple[str, bytes, list[tuple[str, bytes]]]]
    ) -> None:
        """Stores workflows (name, config JSON, their steps' task definitions)."""
        tasks = [t for _, _, defs in workflows for t in defs]
        if tasks:
            await self._ingest.register_tasks(tenant_id, tasks)
        async with self._db.transaction() as tx:
            for name, raw, _ in workflows:
                if not name or len(name) > 200 or text_problem(name):
                    raise InvalidRequestError(
                        f"workflow name {name!r} must be 1 to 200 characters, without NUL"
                    )
                try:
                    spec = WorkflowSpec.model_validate_json(raw)
                except ValidationError as exc:
                    raise InvalidRequestError(
                        f"workflow {name!r} has an invalid definition: {exc}"
                    ) from None
                config = spec.model_dump_json()
                await dag_store.register_workflow(
                    tx, dag_store.RegisterWorkflow(tenant_id, name, spec.hash(), config)
                )
        self._workflows.pop(tenant_id, None)

    async def workflows(
        self, tenant_id: int, *, refresh: bool = False
    ) -> dict[str, tuple[int, WorkflowSpec]]:
        """The tenant's workflows: name -> (current version id, spec)."""
        cached = self._workflows.get(tenant_id)
        if cached and not refresh and cached[0] > time.monotonic():
            return cached[1]
        rows = await dag_store.current_workflows(self._db, dag_store.CurrentWorkflows(tenant_id))
        found = {
            str(r["name"]): (int(r["version_id"]), WorkflowSpec.model_validate(r["config"]))
            for r in rows
        }
        self._workflows[tenant_id] = (time.monotonic() + _DEFS_TTL_S, found)
        return found

    async def _known(
        self, tenant_id: int, workflow_names: set[str], task_names: set[str]
    ) -> tuple[dict[str, tuple[int, WorkflowSpec]], dict[str, TaskConfig]]:
        workflows = await self.workflows(tenant_id)
        if workflow_names - set(workflows):
            workflows = await self.workflows(tenant_id, refresh=True)
        missing = sorted(workflow_names - set(workflows))
        if missing:
            known = ", ".join(sorted(workflows)) or "none"
            raise UnknownTaskError(
                f"no workflow named {missing[0]!r} is registered; registered workflows: {known}"
            )
        steps = {s.task_name for n in workflow_names for s in workflows[n][1].steps}
        defs = await self._ingest.task_defs(tenant_id)
        if (steps | task_names) - set(defs):
            defs = await self._ingest.task_defs(tenant_id, refresh=True)
        for name in sorted((steps | task_names) - set(defs)):
            known = ", ".join(sorted(defs)) or "none"
            raise UnknownTaskError(
                f"no task named {name!r} is registered; registered tasks: {known}"
            )
        # Refreshes the ingest's cache of static rate-limit keys when a task names one.
        await self._ingest.static_keys_for(tenant_id, steps | task_names, defs)
        return workflows, defs

    # -- workflow runs ------------------------------------------------------------------

    async def trigger(
        self,
        tenant_id: int,
        items: list[WorkflowTriggerInput],
        request: RequestKey | None = None,
    ) -> list[str]:
        """Creates workflow runs and returns their ids once they are stored (for a retry
        of the call with ``request``: the first call's)."""
        if not items:
            return []
        workflows, defs = await self._known(tenant_id, {i.workflow_name for i in items}, set())
        runs = [
            _NewRun(uuid.uuid4(), i.workflow_name, i.input, i.additional_metadata, i.priority)
            for i in items
        ]
        for r in runs:
            self._check(r, f"workflow {r.name!r}")
        return await self._ingest.submit(
            tenant_id,
            self._write_parked,
            [(r, workflows, defs) for r in runs],
            [str(r.external_id) for r in runs],
            request,
        )

    async def _write_parked(
        self,
        tx: Executor,
        out: Outbox,
        tenant_id: int,
        items: list[tuple[_NewRun, dict[str, tuple[int, WorkflowSpec]], dict[str, TaskConfig]]],
    ) -> None:
        """The ingest's batch writer: every parked workflow run of a tenant in one go."""
        workflows: dict[str, tuple[int, WorkflowSpec]] = {}
        defs: dict[str, TaskConfig] = {}
        for _, w, d in items:
            workflows.update(w)
            defs.update(d)
        await self._insert_workflow_runs(
            tx, out, tenant_id, [r for r, _, _ in items], workflows, defs
        )

    def _check(self, run: _NewRun, subject: str, input_name: str = "input") -> None:
        self._ingest.check_payload(
            TriggerInput(run.name, run.input, run.additional_metadata, run.priority),
            subject=subject,
            input_name=input_name,
        )

    async def _insert_workflow_runs(
        self,
        tx: Executor,
        out: Outbox,
        tenant_id: int,
        runs: list[_NewRun],
        workflows: dict[str, tuple[int, WorkflowSpec]],
        defs: dict[str, TaskConfig],
    ) -> None:
        """Writes DAG runs and their steps inside ``tx``, telling ``out`` what it queued."""
        dags = dag_store.InsertDags(tenant_id, [], [], [], [], [])
        attach = dag_store.AttachDagTasks([], [], [])
        rows: list[NewTaskRun] = []
        progress = False
        for run in runs:
            version_id, spec = workflows[run.name]
            raw_input = run.input or b"null"
            metadata = run.additional_metadata or b"{}"
            dags.external_ids.append(run.external_id)
            dags.names.append(run.name)
            dags.version_ids.append(version_id)
            dags.inputs.append(raw_input.decode())
            dags.metadata.append(metadata.decode())
            wrapped = envelope.wrap_root(raw_input)
            for step in spec.steps:
                root = step.role == "step" and not step.parents
                queued = root and not (step.wait_for or step.skip_if or step.cancel_if)
                progress |= root and not queued
                config = defs[step.task_name]
                policy = self._ingest.policy(tenant_id, step.task_name, config, raw_input, metadata)
                if policy.error:
                    progress = True
                item = TriggerInput(step.task_name, wrapped, metadata, run.priority)
                task_id = uuid.uuid4()
                rows.append(NewTaskRun(task_id, config, item, policy, pending=not queued))
                attach.task_external_ids.append(task_id)
                attach.dag_external_ids.append(run.external_id)
                attach.steps.append(step.name)
        inserted = await dag_store.insert_dags(tx, dags)
        gated = await write_task_runs(tx, tenant_id, rows)
        await dag_store.attach_dag_tasks(tx, attach)
        out.queued(tenant_id, gated=gated)
        if progress:
            await self._dags.progress(tx, out, [int(r["id"]) for r in inserted])

    # -- child runs ---------------------------------------------------------------------

    async def spawn(
        self,
        tenant_id: int,
        parent_task_id: int,
        items: list[ChildInput],
        request: RequestKey | None = None,
    ) -> list[tuple[str, bool]]:
        """Creates the children of a running task; (run id, existed already) per item. A
        retry of the call with ``request`` gets the same children (all existing)."""
        if not items:
            return []
        if (answer := await requests.recorded(self._db, tenant_id, request)) is not None:
            return [(i, True) for i in answer.run_ids]
        try:
            return await self._spawn(tenant_id, parent_task_id, items, request)
        except requests.Replayed as replayed:
            return [(i, True) for i in replayed.answer.run_ids]

    async def _spawn(
        self,
        tenant_id: int,
        parent_task_id: int,
        items: list[ChildInput],
        request: RequestKey | None,
    ) -> list[tuple[str, bool]]:
        parent = await child_store.parent_task(
            self._db, child_store.ParentTask(tenant_id, parent_task_id)
        )
        if parent is None:
            raise NotFoundError(f"no task with id {parent_task_id} to spawn children from")
        for i in items:
            if bool(i.task_name) == bool(i.workflow_name):
                raise InvalidRequestError("a child names exactly one of a task and a workflow")
            if text_problem(i.child_key):
                raise InvalidRequestError(f"child_key {i.child_key!r} is refused: it holds NUL")
        workflows, defs = await self._known(
            tenant_id,
            {i.workflow_name for i in items if i.workflow_name},
            {i.task_name for i in items if i.task_name},
        )
        ids = [uuid.uuid4() for _ in items]
        for i, external_id in zip(items, ids, strict=True):
            self._check(
                _NewRun(
                    external_id,
                    i.task_name or i.workflow_name,
                    i.input,
                    i.additional_metadata,
                    i.priority,
                ),
                f"child {i.task_name or i.workflow_name!r}",
            )
        keys = [i.child_key for i in items]
        indexes = [i.child_index for i in items]
        async with self._signals.transaction(self._db) as (tx, out):
            claimed = await child_store.claim_children(
                tx,
                child_store.ClaimChildren(
                    tenant_id,
                    parent_task_id,
                    indexes,
                    keys,
                    ids,
                    [bool(i.workflow_name) for i in items],
                ),
            )
            new = {r["external_id"] for r in claimed}
            found = await child_store.existing_children(
                tx, child_store.ExistingChildren(parent_task_id, indexes, keys)
            )
            by_n = {int(r["n"]) - 1: r["external_id"] for r in found}
            result = [(str(by_n.get(n, ids[n])), ids[n] not in new) for n in range(len(items))]
            fresh = [(i, ids[n]) for n, i in enumerate(items) if ids[n] in new]
            task_rows = [
                NewTaskRun(
                    external_id,
                    defs[i.task_name],
                    TriggerInput(i.task_name, i.input, i.additional_metadata, i.priority),
                    self._ingest.policy(
                        tenant_id, i.task_name, defs[i.task_name], i.input, i.additional_metadata
                    ),
                )
                for i, external_id in fresh
                if i.task_name
            ]
            wf_runs = [
                _NewRun(external_id, i.workflow_name, i.input, i.additional_metadata, i.priority)
                for i, external_id in fresh
                if i.workflow_name
            ]
            if task_rows:
                out.queued(tenant_id, gated=await write_task_runs(tx, tenant_id, task_rows))
            if wf_runs:
                await self._insert_workflow_runs(tx, out, tenant_id, wf_runs, workflows, defs)
            await requests.record(tx, tenant_id, requests.Call(request, [r for r, _ in result]))
        return result

    # -- events -------------------------------------------------------------------------

    async def push_events(
        self, tenant_id: int, events: list[EventInput], request: RequestKey | None = None
    ) -> tuple[list[str], int]:
        """Stores events and satisfies the conditions waiting for them; (event ids, how many
        conditions they satisfied). A retry of the call with ``request`` stores nothing and
        gets the first call's answer."""
        if not events:
            return [], 0
        if (answer := await requests.recorded(self._db, tenant_id, request)) is not None:
            return answer.run_ids, answer.satisfied
        try:
            return await self._push_events(tenant_id, events, request)
        except requests.Replayed as replayed:
            return replayed.answer.run_ids, replayed.answer.satisfied

    async def _push_events(
        self, tenant_id: int, events: list[EventInput], request: RequestKey | None
    ) -> tuple[list[str], int]:
        payloads: list[Any] = []
        metadata: list[dict[str, Any]] = []
        for e in events:
            if not e.key or len(e.key) > 500 or text_problem(e.key):
                raise InvalidRequestError(
                    f"event key {e.key!r} must be 1 to 500 characters, without NUL"
                )
            if text_problem(e.scope):
                raise InvalidRequestError(f"event scope {e.scope!r} is refused: it holds NUL")
            self._check(
                _NewRun(uuid.uuid4(), e.key, e.payload, e.additional_metadata, 0),
                f"event {e.key!r}",
                "payload",
            )
            payloads.append(json.loads(e.payload) if e.payload else None)
            md = json.loads(e.additional_metadata) if e.additional_metadata else {}
            metadata.append(md)
        keys = sorted({e.key for e in events})
        async with self._signals.transaction(self._db) as (tx, out):
            stored = await event_store.insert_user_events(
                tx,
                event_store.InsertUserEvents(
                    tenant_id,
                    [e.key for e in events],
                    [json.dumps(p) for p in payloads],
                    [json.dumps(m) for m in metadata],
                    [e.scope for e in events],
                ),
            )
            waits = await condition_store.waits_for_events(
                tx, condition_store.WaitsForEvents(tenant_id, keys)
            )
            matched, errors = _match(waits, events, payloads, metadata, stored)
            if matched or errors:
                dag_ids = sorted({int(w["dag_id"]) for w, _ in matched + errors})
                await dag_store.lock_dags(tx, dag_store.LockDags(dag_ids))
                if errors:
                    await condition_store.record_wait_errors(
                        tx,
                        condition_store.RecordWaitErrors(
                            [int(w["task_id"]) for w, _ in errors],
                            [str(w["cond"]) for w, _ in errors],
                            [msg for _, msg in errors],
                        ),
                    )
                    await condition_store.log_condition_errors(
                        tx,
                        condition_store.LogConditionErrors(
                            [int(w["task_id"]) for w, _ in errors],
                            [
                                json.dumps({"type": "ConditionError", "message": msg})
                                for _, msg in errors
                            ],
                        ),
                    )
                if matched:
                    await condition_store.satisfy_waits(
                        tx,
                        condition_store.SatisfyWaits(
                            [int(w["task_id"]) for w, _ in matched],
                            [str(w["cond"]) for w, _ in matched],
                        ),
                    )
                    await self._dags.progress(tx, out, dag_ids)
            ids = [str(r["external_id"]) for r in stored]
            await requests.record(tx, tenant_id, requests.Call(request, ids, len(matched)))
        return ids, len(matched)


def _match(
    waits: list[condition_store.EventWait],
    events: list[EventInput],
    payloads: list[Any],
    metadata: list[dict[str, Any]],
    stored: list[event_store.StoredEvent],
) -> tuple[
    list[tuple[condition_store.EventWait, str]], list[tuple[condition_store.EventWait, str]]
]:
    """Which waits the events satisfy, and which expressions failed (with why)."""
    matched: list[tuple[condition_store.EventWait, str]] = []
    errors: list[tuple[condition_store.EventWait, str]] = []
    for w in waits:
        created: datetime = w["created_at"]
        for e, payload, md, s in zip(events, payloads, metadata, stored, strict=True):
            if e.key != w["event_key"] or s["created_at"] < created:
                continue
            if e.scope and e.scope != w["dag_external_id"]:
                continue
            expression = w["expression"]
            if expression:
                try:
                    value = compile_expression(expression).execute(
                        {
                            "input": payload,
                            "additional_metadata": md,
                            "run_input": w["run_input"],
                            "run_metadata": w["run_metadata"],
                        }
                    )
                except Exception as exc:
                    errors.append(
                        (
                            w,
                            f"event {e.key!r}: the expression {expression!r} failed: "
                            f"{type(exc).__name__}: {exc}",
                        )
                    )
                    continue
                if value is not True:
                    continue
            matched.append((w, e.key))
            break
    return matched, errors


__all__ = ["ChildInput", "EventInput", "WorkflowIngest", "WorkflowTriggerInput"]
