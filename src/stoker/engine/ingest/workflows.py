"""Ingest of workflow runs, child runs and user events.

Definitions (workflows, their versions, task configurations, policy) come from
:class:`~stoker.engine.definitions.Definitions`. Runs of every kind are written by the task
ingest's group-commit flush; this module validates them and hands it writers, and the flush
never calls back into this module's state (no Ingest → WorkflowIngest → Ingest chain).

* Workflow runs are validated at once, then parked in the task ingest's buffer
  (:meth:`Ingest.submit`), so the runs of every caller that arrive while a flush runs are
  written together, in the flush's one transaction: their ``dag`` rows, all their steps
  (through :func:`write_task_runs`, like single tasks, so rate limits, concurrency keys
  and policy errors behave alike) and their DAG links. Roots without conditions are QUEUED
  at once (or wait for concurrency admission); every other step is PENDING until DAG
  progression (:mod:`stoker.engine.flows.progression`) readies it.
* A child run is recorded in ``child_run`` under its parent task, its index (the n-th spawn
  of the parent's attempt) and an optional key, in the same transaction as the run itself;
  a parent that spawns again after a retry gets the existing child back. A spawn call is
  parked in the same buffer (:meth:`Ingest.submit_call`) and written in a savepoint of the
  flush's transaction, so spawns of many parents commit together and one bad spawn fails
  only itself.
* A user event is stored under the (tenant, key) locks that durable waits' registration
  takes too; the runs of the tasks and workflows subscribed to its key are written in the
  same transaction, as their filters allow (:mod:`stoker.engine.ingest.events`), and
  recorded as the event's (``event_run``). It is then matched against the event conditions
  of workflow steps and durable waits (:mod:`stoker.engine.durable.waits`, which settles the
  durable waits that hold and whose workers are hinted right after the commit). A step's
  condition takes events that arrived after it began waiting: key equality, the optional
  scope (a workflow run id), and the CEL expression over ``input`` (the payload),
  ``additional_metadata`` (the event's), ``run_input`` and ``run_metadata`` (the waiting
  run's). Satisfied runs progress in the same transaction. An expression that fails on a
  payload is recorded on the waiting step (``task_wait.error`` and a CONDITION_ERROR event)
  and matches nothing; other waits go on.
* Request keys (:mod:`stoker.engine.ingest.requests`): a workflow trigger's key is
  recorded by the flush like a task trigger's. A spawn records its key at the end of its
  savepoint, an event push at the end of its own transaction; a retry finds the key before
  doing any work, and a retry racing its first call (both past that check) waits on the
  key's row and rolls back (its savepoint, for a spawn). A spawn is idempotent without a
  key too, through its children's ``(parent, index)`` and ``(parent, child_key)``; the key
  adds the content check and answers a retry exactly as the first call was answered.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from stoker._core import envelope
from stoker._core.cel import compile_expression
from stoker._core.wire import TaskConfig, text_problem
from stoker.db import Batch, Executor
from stoker.db.store import children as child_store
from stoker.db.store import conditions as condition_store
from stoker.db.store import dags as dag_store
from stoker.db.store import events as event_store
from stoker.db.store import requests as request_store
from stoker.engine import notify
from stoker.engine.definitions import Definitions, Resolved, Workflows
from stoker.engine.durable.waits import (
    DurableWaits,
    EventMatch,
    EventSettlement,
    settled_entries,
)
from stoker.engine.durable.wake import Wakes
from stoker.engine.flows.progression import Progression
from stoker.engine.ingest import idempotency, requests
from stoker.engine.ingest.buffer import Ingest, RunIds, Written
from stoker.engine.ingest.events import (
    EventView,
    Subscriber,
    plan_runs,
    run_metadata,
    subscribed,
    subscribers,
)
from stoker.engine.ingest.requests import RequestKey
from stoker.engine.ingest.tasks import NewTaskRun, TriggerInput, check_payload, write_task_runs
from stoker.engine.signals import Outbox, Signals
from stoker.errors import InvalidRequestError, NotFoundError


@dataclass(frozen=True, slots=True)
class WorkflowTriggerInput:
    """One workflow run to create, as received."""

    workflow_name: str
    input: bytes
    additional_metadata: bytes = b""
    priority: int = 0
    idempotency_key: str = ""
    idempotency_ttl_ms: int = 0


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
    sticky: bool = False
    """A child task that prefers the parent's worker (sticky children)."""


class SpawnLog(Protocol):
    """What records a durable task's children in its log, in their spawn's savepoint
    (:meth:`WorkflowIngest.spawn_logged`)."""

    async def guard(self, tx: Executor) -> str | None:
        """Before the children are written: why not to write them (None: go on)."""
        ...

    def child_index(self, position: int) -> int:
        """After the guard: the child index of a child recorded at ``position``."""
        ...

    async def record(self, tx: Executor, out: Outbox, children: list[tuple[str, bool]]) -> Any:
        """After: records the children ((run id, existed) per item); the answer."""
        ...


@dataclass(frozen=True, slots=True)
class EventInput:
    """One user event. ``priority``: of the runs it starts (0: each task's default)."""

    key: str
    payload: bytes
    additional_metadata: bytes = b""
    scope: str = ""
    priority: int = 0
    webhook_id: int | None = None
    """The webhook the event came through (None: pushed through the API)."""
    body: bytes | None = None
    """A webhook event's request body, exactly as received (kept beside the payload)."""


@dataclass(frozen=True, slots=True)
class PushedEvent:
    """One stored event: its id, the runs it started, the waiting conditions it satisfied."""

    event_id: str
    run_ids: list[str]
    satisfied: int = 0


@dataclass(frozen=True, slots=True)
class Pushed:
    """What a push stored: each event (in the order given) and how many waiting conditions
    the events satisfied in all."""

    events: list[PushedEvent]
    satisfied: int
    replayed: bool = False
    """The push repeated an earlier one (its request key was recorded): these are the
    earlier push's events, and nothing was stored."""


@dataclass(frozen=True, slots=True)
class _Event:
    """A stored event as the runs it starts are made from it."""

    id: int
    external_id: str
    created_at: datetime
    key: str
    scope: str
    payload: Any
    metadata: dict[str, Any]
    priority: int


@dataclass(frozen=True, slots=True)
class _NewRun:
    external_id: uuid.UUID
    name: str
    input: bytes
    additional_metadata: bytes
    priority: int


class WorkflowIngest:
    """Validates workflow runs, child runs and user events; runs go through ``ingest``'s
    buffer, events are written here."""

    def __init__(
        self,
        db: Executor,
        signals: Signals,
        definitions: Definitions,
        ingest: Ingest,
        dags: Progression,
        *,
        max_payload_bytes: int,
        durable_waits: DurableWaits | None = None,
        wakes: Wakes | None = None,
    ) -> None:
        self._db = db
        self._signals = signals
        self._definitions = definitions
        self._ingest = ingest
        self._dags = dags
        self._max_payload = max_payload_bytes
        self._durable_waits = durable_waits
        self._wakes = wakes

    # -- workflow runs ------------------------------------------------------------------

    async def trigger(
        self,
        tenant_id: int,
        items: list[WorkflowTriggerInput],
        request: RequestKey | None = None,
    ) -> RunIds:
        """Creates workflow runs and returns their ids once they are stored (for a retry
        of the call with ``request``: the first call's; for a run whose idempotency key
        names a live run: that run's)."""
        if not items:
            return RunIds([])
        known = await self._definitions.resolve(
            tenant_id, workflow_names=sorted({i.workflow_name for i in items})
        )
        runs = [
            _NewRun(uuid.uuid4(), i.workflow_name, i.input, i.additional_metadata, i.priority)
            for i in items
        ]
        for r in runs:
            self._check(r, f"workflow {r.name!r}")
        keys = [
            idempotency.check(
                i.idempotency_key, i.idempotency_ttl_ms, f"workflow {i.workflow_name!r}"
            )
            for i in items
        ]
        return await self._ingest.submit(
            tenant_id,
            self._write_parked,
            [(r, known.workflows, known.tasks) for r in runs],
            [str(r.external_id) for r in runs],
            request,
            keys,
        )

    async def write_runs(
        self,
        tx: Executor,
        out: Outbox,
        tenant_id: int,
        items: list[WorkflowTriggerInput],
        external_ids: list[uuid.UUID],
    ) -> None:
        """Validates and writes workflow runs with ``external_ids`` inside the caller's
        transaction ``tx`` (the schedules controller: the runs and the marking of their
        schedules commit together). No idempotency keys here: the caller's transaction is
        what makes the write exactly once."""
        known = await self._definitions.resolve(
            tenant_id, workflow_names=sorted({i.workflow_name for i in items})
        )
        runs = [
            _NewRun(e, i.workflow_name, i.input, i.additional_metadata, i.priority)
            for i, e in zip(items, external_ids, strict=True)
        ]
        for r in runs:
            self._check(r, f"workflow {r.name!r}")
        await self._insert_workflow_runs(tx, out, tenant_id, runs, known.workflows, known.tasks)

    async def _write_parked(
        self,
        tx: Executor,
        out: Outbox,
        tenant_id: int,
        items: list[tuple[_NewRun, Workflows, dict[str, TaskConfig]]],
    ) -> None:
        """The ingest's batch writer: every parked workflow run of a tenant in one go."""
        workflows: Workflows = {}
        defs: dict[str, TaskConfig] = {}
        for _, w, d in items:
            workflows.update(w)
            defs.update(d)
        await self._insert_workflow_runs(
            tx, out, tenant_id, [r for r, _, _ in items], workflows, defs
        )

    def _check(self, run: _NewRun, subject: str, input_name: str = "input") -> None:
        check_payload(
            TriggerInput(run.name, run.input, run.additional_metadata, run.priority),
            self._max_payload,
            subject=subject,
            input_name=input_name,
        )

    async def _insert_workflow_runs(
        self,
        tx: Executor,
        out: Outbox,
        tenant_id: int,
        runs: list[_NewRun],
        workflows: Workflows,
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
                policy = self._definitions.policy(
                    tenant_id, step.task_name, config, raw_input, metadata
                )
                if policy.error:
                    progress = True
                item = TriggerInput(step.task_name, wrapped, metadata, run.priority)
                task_id = uuid.uuid4()
                rows.append(NewTaskRun(task_id, config, item, policy, pending=not queued))
                attach.task_external_ids.append(task_id)
                attach.dag_external_ids.append(run.external_id)
                attach.steps.append(step.name)
        inserted = await dag_store.insert_dags(tx, dags)
        gated = await write_task_runs(tx, tenant_id, rows, out)
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
            return _replayed_spawn(answer)
        ids = [uuid.uuid4() for _ in items]
        known = await self._check_spawn(tenant_id, parent_task_id, items, ids)

        async def write(tx: Executor, out: Outbox) -> Written:
            return await self._write_spawn(
                tx, out, tenant_id, parent_task_id, items, ids, known.workflows, known.tasks
            )

        result: list[tuple[str, bool]] = await self._ingest.submit_call(
            tenant_id, write, len(items), _replayed_spawn, request
        )
        return result

    async def spawn_logged(
        self,
        tenant_id: int,
        parent_task_id: int,
        items: list[ChildInput],
        ids: list[uuid.UUID],
        log: SpawnLog,
    ) -> Any:
        """Creates children of a running durable task together with their log entries: in
        the savepoint that writes the children, ``log.guard`` runs first (a refusal, such
        as a stale invocation, writes nothing and is the answer) and ``log.record`` after,
        with (run id, existed already) per item; its return value is the answer. ``ids``
        are the run ids to give the new children (a child that exists keeps its own)."""
        if not items:
            return None
        known = await self._check_spawn(tenant_id, parent_task_id, items, ids)

        async def write(tx: Executor, out: Outbox) -> Written:
            refused = await log.guard(tx)
            if refused is not None:
                return Written(refused, [])
            # The index depends on the log's branch, known under the log's lock.
            indexed = [replace(i, child_index=log.child_index(i.child_index)) for i in items]
            w = await self._write_spawn(
                tx, out, tenant_id, parent_task_id, indexed, ids, known.workflows, known.tasks
            )
            return Written(await log.record(tx, out, w.answer), w.run_ids)

        def replayed(answer: requests.Answer) -> Any:  # no request key: never called
            raise AssertionError("a logged spawn has no request key")

        # The guard locks the parent's log: calls of one flush take those locks in task id
        # order, as every other writer of several logs does.
        return await self._ingest.submit_call(
            tenant_id, write, len(items), replayed, None, order=parent_task_id
        )

    async def _check_spawn(
        self,
        tenant_id: int,
        parent_task_id: int,
        items: list[ChildInput],
        ids: list[uuid.UUID],
    ) -> Resolved:
        """Checks a spawn before it is parked: the parent, the items, the definitions."""
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
        known = await self._definitions.resolve(
            tenant_id,
            sorted({i.task_name for i in items if i.task_name}),
            sorted({i.workflow_name for i in items if i.workflow_name}),
        )
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
        return known

    async def _write_spawn(
        self,
        tx: Executor,
        out: Outbox,
        tenant_id: int,
        parent_task_id: int,
        items: list[ChildInput],
        ids: list[uuid.UUID],
        workflows: Workflows,
        defs: dict[str, TaskConfig],
    ) -> Written:
        """Claims the children's indexes and keys under the parent and writes the new
        ones, inside the flush's savepoint for this spawn; answers (run id, existed) per
        item."""
        keys = [i.child_key for i in items]
        indexes = [i.child_index for i in items]
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
        parent_worker = None
        if any(i.sticky and i.task_name for i, _ in fresh):
            # Sticky children prefer the worker running their parent now.
            row = await child_store.parent_worker(tx, child_store.ParentWorker(parent_task_id))
            parent_worker = int(row["worker_id"]) if row else None
        task_rows = [
            NewTaskRun(
                external_id,
                defs[i.task_name],
                TriggerInput(i.task_name, i.input, i.additional_metadata, i.priority),
                self._definitions.policy(
                    tenant_id, i.task_name, defs[i.task_name], i.input, i.additional_metadata
                ),
                desired_worker_id=parent_worker if i.sticky else None,
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
            out.queued(tenant_id, gated=await write_task_runs(tx, tenant_id, task_rows, out))
        if wf_runs:
            await self._insert_workflow_runs(tx, out, tenant_id, wf_runs, workflows, defs)
        return Written(result, [r for r, _ in result])

    # -- events -------------------------------------------------------------------------

    async def push_events(
        self, tenant_id: int, events: list[EventInput], request: RequestKey | None = None
    ) -> Pushed:
        """Ingests events: stores them, starts a run of every task and workflow subscribed
        to their keys (subject to their filters; :mod:`stoker.engine.ingest.events`) and
        satisfies the conditions waiting for them, all in one transaction. A retry of the
        call with ``request`` stores nothing and gets the first call's answer. This is the
        one entry point of events, whatever brings them (the SDK, REST, webhooks)."""
        if not events:
            return Pushed([], 0)
        try:
            return await self._push_events(tenant_id, events, request)
        except requests.Replayed as replayed:
            return await self._replayed_push(tenant_id, replayed.answer)

    async def _replayed_push(self, tenant_id: int, answer: requests.Answer) -> Pushed:
        """A retried push's answer: the first call's events and the runs they started."""
        ids = [uuid.UUID(i) for i in answer.run_ids]
        rows = await event_store.runs_of_events(self._db, event_store.RunsOfEvents(tenant_id, ids))
        runs: dict[str, list[str]] = {}
        for r in rows:
            runs.setdefault(str(r["event_id"]), []).append(str(r["run_id"]))
        return Pushed(
            [PushedEvent(i, runs.get(i, [])) for i in answer.run_ids], answer.satisfied, True
        )

    async def _subscribers(
        self, tenant_id: int, keys: list[str]
    ) -> tuple[list[list[Subscriber]], Resolved | None]:
        """Each key's subscribers, and the definitions their runs need (None: none)."""
        subs = subscribers(
            await self._definitions.tasks(tenant_id), await self._definitions.workflows(tenant_id)
        )
        matched = [subscribed(subs, k) if subs else [] for k in keys]
        names = {(s.kind, s.name) for m in matched for s in m}
        if not names:
            return matched, None
        known = await self._definitions.resolve(
            tenant_id,
            sorted(n for k, n in names if k == "task"),
            sorted(n for k, n in names if k == "workflow"),
        )
        return matched, known

    async def _start_runs(
        self,
        tx: Executor,
        out: Outbox,
        tenant_id: int,
        events: list[_Event],
        matched: list[list[Subscriber]],
        known: Resolved | None,
        replay: int,
        filters: list[event_store.FilterRow],
    ) -> list[list[str]]:
        """Writes the runs ``events`` start inside ``tx`` and records them as the events'
        runs (``replay``: 0 at the push, n for the n-th replay); their ids per event.
        ``filters``: :func:`_subscriber_filters`, read in ``tx``. The task runs and the
        records are sent without waiting (in a pipelined transaction they travel with
        what follows)."""
        started: list[list[str]] = [[] for _ in events]
        if known is None:
            return started
        planned = plan_runs(
            [EventView(e.key, e.scope, e.payload, e.metadata) for e in events], matched, filters
        )
        if not planned:
            return started
        task_rows: list[NewTaskRun] = []
        wf_runs: list[_NewRun] = []
        record = event_store.InsertEventRuns(tenant_id, [], [], [], [], [], [], replay)
        keyed: list[tuple[idempotency.IdemKey, str]] = []
        payloads: dict[uuid.UUID, Any] = {}  # the filter payload of each run that has one
        for p in planned:
            e = events[p.event]
            raw = json.dumps(e.payload if e.payload is not None else {}).encode()
            md = json.dumps(run_metadata(e.metadata, e.external_id, e.key, p.filter)).encode()
            run_id = uuid.uuid4()
            name = p.subscriber.name
            if p.subscriber.kind == "task":
                config = known.tasks[name]
                policy = self._definitions.policy(tenant_id, name, config, raw, md)
                try:
                    key = idempotency.key_for(name, config, "", 0, raw, md)
                except InvalidRequestError as exc:
                    # The task's idempotency expression fails on this event: that run
                    # fails with why, the event's other runs start.
                    key, policy = None, replace(policy, error=exc.message)
                if key is not None:
                    keyed.append((key, str(run_id)))
                item = TriggerInput(name, raw, md, e.priority)
                task_rows.append(NewTaskRun(run_id, config, item, policy))
            else:
                wf_runs.append(_NewRun(run_id, name, raw, md, e.priority))
            if p.filter is not None:
                payloads[run_id] = p.filter["payload"]
            started[p.event].append(str(run_id))
            record.event_ids.append(e.id)
            record.created_at.append(e.created_at)
            record.run_ids.append(run_id)
            record.task_names.append(name if p.subscriber.kind == "task" else None)
            record.workflow_names.append(name if p.subscriber.kind == "workflow" else None)
            record.filter_ids.append(p.filter["external_id"] if p.filter else None)
        if keyed:
            # A task's idempotency expression applies as to a direct trigger: a run whose
            # key names a live run is not made, and the event records that run instead.
            decisions = await idempotency.resolve(tx, tenant_id, keyed)
            existing = {
                uuid.UUID(run): uuid.UUID(d.run_id)
                for (_, run), d in zip(keyed, decisions, strict=True)
                if d.deduplicated
            }
            if existing:
                task_rows = [r for r in task_rows if r.external_id not in existing]
                record = replace(record, run_ids=[existing.get(r, r) for r in record.run_ids])
                started = [[str(existing.get(uuid.UUID(r), r)) for r in runs] for runs in started]
        if task_rows:
            out.queued(tenant_id, gated=await write_task_runs(tx, tenant_id, task_rows, out))
        if wf_runs:
            await self._insert_workflow_runs(
                tx, out, tenant_id, wf_runs, known.workflows, known.tasks
            )
        await event_store.insert_event_runs.send(tx, record)
        made = [r.external_id for r in task_rows] + [r.external_id for r in wf_runs]
        kept = [r for r in made if r in payloads]
        if kept:
            await event_store.insert_run_filter_payloads.send(
                tx,
                event_store.InsertRunFilterPayloads(
                    tenant_id, kept, [json.dumps(payloads[r]) for r in kept]
                ),
            )
        return started

    async def replay_event(self, tenant_id: int, event_id: str) -> list[str]:
        """Starts the runs of a stored event again: its subscribers and filters as they are
        now, with the event's payload, metadata, scope and priority (waits are not
        satisfied again); the new runs' ids, recorded as the event's runs of this replay."""
        (external_id,) = _event_ids([event_id])
        row = await event_store.get_event(self._db, event_store.GetEvent(tenant_id, external_id))
        if row is None:
            raise NotFoundError(f"no event with id {event_id}")
        previous = await event_store.event_runs(
            self._db, event_store.EventRuns(row["id"], row["created_at"])
        )
        matched, known = await self._subscribers(tenant_id, [row["key"]])
        event = _Event(
            row["id"],
            str(row["external_id"]),
            row["created_at"],
            row["key"],
            row["scope"] or "",
            row["payload"],
            dict(row["additional_metadata"] or {}),
            row["priority"],
        )
        replay = max((r["replay"] for r in previous), default=0) + 1
        async with self._signals.transaction(self._db) as (tx, out):
            filters: list[event_store.FilterRow] = []
            if (q := _subscriber_filters(tenant_id, matched, known)) is not None:
                filters = await event_store.subscriber_filters(tx, q)
            (started,) = await self._start_runs(
                tx, out, tenant_id, [event], matched, known, replay, filters
            )
        return started

    async def _push_events(
        self, tenant_id: int, events: list[EventInput], request: RequestKey | None
    ) -> Pushed:
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
                _NewRun(uuid.uuid4(), e.key, e.payload, e.additional_metadata, e.priority),
                f"event {e.key!r}",
                "payload",
            )
            payloads.append(json.loads(e.payload) if e.payload else None)
            md = json.loads(e.additional_metadata) if e.additional_metadata else {}
            metadata.append(md)
        matched, known = await self._subscribers(tenant_id, [e.key for e in events])
        keys = sorted({e.key for e in events})
        ids = [str(uuid.uuid4()) for _ in events]
        call = requests.Call(request, ids)
        # Round trips: the transaction is pipelined. BEGIN, the key locks, the request key,
        # the events, the subscribers' filters and the waits on the keys go in one batch;
        # the runs, their records and the NOTIFY are sent without waiting and travel with
        # COMMIT. Only matched waits (rare beside starts) cost round trips of their own.
        async with self._signals.transaction(self._db, pipeline=True) as (tx, out):
            batch = Batch()
            # The (tenant, key) locks durable waits' registration takes too: whichever
            # commits second sees the other's rows. Taken before anything else.
            event_store.lock_event_keys.add(batch, event_store.LockEventKeys(tenant_id, keys))
            claim_params = requests.claim_params(tenant_id, [call])
            claim = (
                request_store.claim_request_keys.add(batch, claim_params)
                if claim_params is not None
                else None
            )
            stored_q = event_store.insert_user_events.add(
                batch,
                event_store.InsertUserEvents(
                    tenant_id,
                    [uuid.UUID(i) for i in ids],
                    [e.key for e in events],
                    [json.dumps(p) for p in payloads],
                    [json.dumps(m) for m in metadata],
                    [e.scope for e in events],
                    [e.priority for e in events],
                    [e.webhook_id for e in events],
                    [e.body for e in events],
                ),
            )
            filters_params = _subscriber_filters(tenant_id, matched, known)
            filters_q = (
                event_store.subscriber_filters.add(batch, filters_params)
                if filters_params is not None
                else None
            )
            waits_q = condition_store.waits_for_events.add(
                batch, condition_store.WaitsForEvents(tenant_id, keys)
            )
            await tx.run(batch)
            if claim is not None:
                recorded = {str(r["request_key"]) for r in claim.rows}
                (answer,) = await requests.claimed(tx, tenant_id, [call], recorded)
                if isinstance(answer, InvalidRequestError):
                    raise answer
                if answer is not None:
                    raise requests.Replayed(answer)
            stored = stored_q.rows
            started = await self._start_runs(
                tx,
                out,
                tenant_id,
                [
                    _Event(
                        int(r["id"]),
                        str(r["external_id"]),
                        r["created_at"],
                        e.key,
                        e.scope,
                        p,
                        md,
                        e.priority,
                    )
                    for r, e, p, md in zip(stored, events, payloads, metadata, strict=True)
                ],
                matched,
                known,
                0,
                filters_q.rows if filters_q is not None else [],
            )
            waits = waits_q.rows
            found, errors = _match(waits, events, payloads, metadata, stored)
            durable = [(w, i) for w, i in found if w["dag_id"] is None]
            satisfying = [(w, i) for w, i in found if w["dag_id"] is not None]
            satisfied = len(satisfying)
            each = [0] * len(events)
            for _, i in satisfying + durable:
                each[i] += 1
            settlement: EventSettlement | None = None
            if durable and self._durable_waits is not None:
                # Sent, not awaited: the durable match travels with COMMIT and is read
                # after it (the settled waits, whom to wake, how many were satisfied).
                settlement = await self._durable_waits.on_events(
                    tx,
                    [
                        EventMatch(
                            int(w["task_id"]),
                            _created_at(w),
                            str(w["cond"]),
                            int(stored[i]["id"]),
                        )
                        for w, i in durable
                    ],
                    [int(s["id"]) for s in stored],
                )
            if satisfying or errors:
                dag_ids = sorted(
                    {int(w["dag_id"]) for w, _ in satisfying + errors if w["dag_id"] is not None}
                )
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
                if satisfying:
                    await condition_store.satisfy_waits(
                        tx,
                        condition_store.SatisfyWaits(
                            [int(w["task_id"]) for w, _ in satisfying],
                            [str(w["cond"]) for w, _ in satisfying],
                        ),
                    )
                    await self._dags.progress(tx, out, dag_ids)
            if request is not None and settlement is not None:
                await request_store.set_request_satisfied_counting.send(
                    tx,
                    request_store.SetRequestSatisfiedCounting(
                        tenant_id,
                        request.key,
                        satisfied,
                        sorted({int(w["task_id"]) for w, _ in durable}),
                        [int(s["id"]) for s in stored],
                    ),
                )
            elif request is not None and satisfied:
                await request_store.set_request_satisfied.send(
                    tx, request_store.SetRequestSatisfied(tenant_id, request.key, satisfied)
                )
        if settlement is not None:
            satisfied += settlement.satisfied
            settled = settlement.settled()
            restored = {w.tenant_id for w in settled if w.restored}
            if restored:
                # Evicted tasks were queued again: the scheduler here looks at once, the
                # other replicas' at this NOTIFY (sent after the commit, as a hint).
                for t in restored:
                    self._signals.remote_queued(t)
                await notify.send_many(self._db, {notify.QUEUE: restored}, self._signals.engine_id)
            woken = settlement.woken()
            if woken and self._wakes is not None:
                # Right after the commit that settled their waits, the workers get the
                # settled entries (or, when connected elsewhere, a hint to re-read).
                await self._wakes.deliver(woken, settled_entries(settled))
        return Pushed(
            [PushedEvent(i, r, n) for i, r, n in zip(ids, started, each, strict=True)], satisfied
        )


def _subscriber_filters(
    tenant_id: int, matched: list[list[Subscriber]], known: Resolved | None
) -> event_store.SubscriberFilters | None:
    """The read of the filters of the subscribers events matched (None: no subscriber)."""
    if known is None:
        return None
    names = {(s.kind, s.name) for m in matched for s in m}
    return event_store.SubscriberFilters(
        tenant_id,
        sorted(n for k, n in names if k == "task"),
        sorted(n for k, n in names if k == "workflow"),
    )


def _event_ids(ids: list[str]) -> list[uuid.UUID]:
    """Event ids as given by a caller; NotFoundError for one that is not a UUID."""
    parsed: list[uuid.UUID] = []
    for i in ids:
        try:
            parsed.append(uuid.UUID(i))
        except ValueError:
            raise NotFoundError(f"no event with id {i!r} (event ids are UUIDs)") from None
    return parsed


def _replayed_spawn(answer: requests.Answer) -> list[tuple[str, bool]]:
    """A retried spawn's answer: the first call's children, all existing."""
    return [(i, True) for i in answer.run_ids]


def _match(
    waits: list[condition_store.EventWait],
    events: list[EventInput],
    payloads: list[Any],
    metadata: list[dict[str, Any]],
    stored: list[event_store.StoredEvent],
) -> tuple[
    list[tuple[condition_store.EventWait, int]], list[tuple[condition_store.EventWait, str]]
]:
    """Which waits the events satisfy (with the index of the event), and which expressions
    failed (with why).

    A workflow step's condition takes events that arrived after it began waiting, and a
    scoped event only when the scope is its workflow run's id. A durable wait's condition
    takes any event the ingest sees (registration and ingest are ordered by the key locks,
    so an event seen here came after the wait), only events of its scope when it has one,
    and an event satisfies at most one condition of a task: the first in (position, path)
    order, the order ``waits`` comes in.
    """
    matched: list[tuple[condition_store.EventWait, int]] = []
    errors: list[tuple[condition_store.EventWait, str]] = []
    used: set[tuple[int, int]] = set()  # (task, event index) taken by a durable condition
    for w in waits:
        durable = w["dag_id"] is None
        created: datetime = w["created_at"]
        for i, (e, payload, md, s) in enumerate(
            zip(events, payloads, metadata, stored, strict=True)
        ):
            if e.key != w["event_key"]:
                continue
            if durable:
                if (int(w["task_id"]), i) in used or (w["scope"] and e.scope != w["scope"]):
                    continue
            elif s["created_at"] < created or (e.scope and e.scope != w["dag_external_id"]):
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
            matched.append((w, i))
            if durable:
                used.add((int(w["task_id"]), i))
            break
    return matched, errors


def _created_at(w: condition_store.EventWait) -> datetime:
    created = w["run_created_at"]
    if created is None:  # registered with its entry, always set for a durable wait
        raise ValueError(f"durable wait {w['cond']!r} of task {w['task_id']} has no run time")
    return created


__all__ = [
    "ChildInput",
    "EventInput",
    "Pushed",
    "PushedEvent",
    "SpawnLog",
    "WorkflowIngest",
    "WorkflowTriggerInput",
]
