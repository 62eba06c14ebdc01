"""Durable waits: the conditions of ``ctx.wait_for_event`` and ``ctx.wait_for`` in the
condition registry (``task_wait``) that waiting workflow steps use, and the settling of the
waits whose conditions hold (docs/durable.md).

A wait's log entry records its conditions (the entry's ``request``: items ANDed, an item an
``or_()`` group or one sleep or event condition). Its sleep and event conditions become
``task_wait`` rows beside the entry's (branch, position):

* **registering** (:meth:`DurableWaits.register`, in the append's transaction) writes the
  rows, arms the entry's ``wake_at`` at its earliest sleep, and, for an event condition
  with a lookback, takes the *earliest* event of the window that the task has not used and
  whose expression holds;
* **events** (:meth:`DurableWaits.on_events`, in the event ingest's transaction, after the
  shared matching of :mod:`stoker.engine.ingest.workflows`) satisfy the conditions they
  matched, at most one condition per task and event (the lowest position);
* **sleeps** (:meth:`DurableWaits.on_timers`, in the durable timers' claim) satisfy the
  elapsed sleep conditions of due waits and re-arm ``wake_at`` at the next one.

After each of them :meth:`DurableWaits.decide` settles the waits that now hold through the
one settle statement (``settle_durable_entries``), with the condition that fired, its event
and the result ``{"fired": path, "payload": ...}``; the same statement drops the conditions
that never held and says which worker runs each task; the caller delivers to the workers
after its commit (:class:`~stoker.engine.durable.wake.Wakes`).

Event ingest and registration both take the (tenant, key) transaction locks of the keys
involved first (``lock_event_keys``, in key order), so whichever commits second sees the
other's rows: an event racing a wait's registration is taken exactly once, by the live
match or by the lookback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stoker._core.cel import compile_expression
from stoker._core.durable import (
    MAX_LOOKBACK_MS,
    EntryKind,
    EntryStatus,
    WaitLeaf,
    wait_holds,
    wait_leaves,
)
from stoker._proto import engine_pb2 as pb
from stoker.db import Executor
from stoker.db.store import Later
from stoker.db.store import conditions as condition_store
from stoker.db.store import durable as store
from stoker.db.store import events as event_store
from stoker.engine.scheduler import TIMEOUT_GRACE_MS

log = logging.getLogger("stoker.engine.durable")

GENERIC_PLAN_WAITS = 16
"""An event push that reaches at most this many waits settles them under generic plans."""

_LOOKBACK_LIMIT = 200
"""Events of a lookback window examined per condition (earliest first)."""

Key = tuple[int, datetime, int, int]
"""A wait's entry: (task_id, the run's created_at, branch, position)."""


@dataclass(frozen=True, slots=True)
class Fired:
    """The condition that completed a wait, and its event (none for a sleep)."""

    path: str
    event_id: int | None = None


@dataclass(frozen=True, slots=True)
class SettledWait:
    """A wait settled by :meth:`DurableWaits.decide`."""

    task_id: int
    position: int
    satisfied_seq: int
    result: dict[str, Any]
    tenant_id: int
    restored: bool
    """The task had been evicted and the settlement queued it again."""
    worker_id: int | None = None
    """The worker running the task's attempt (None: none runs it), to deliver it to."""
    attempt: int | None = None
    timed: bool = True
    """The task has an execution timeout (re-armed once nothing it waits for is pending)."""


@dataclass(frozen=True, slots=True)
class EventMatch:
    """An event condition of a durable wait that an event matched (before the locks)."""

    task_id: int
    created_at: datetime
    """The run's creation time (its log's key with the task id)."""
    cond: str
    event_id: int


def parse_wait(raw: bytes | str) -> tuple[dict[str, Any], list[WaitLeaf]]:
    """A wait call's request and its conditions; ValueError saying what is wrong."""
    try:
        request = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"the wait's request is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise ValueError("the wait's request is not an object")
    leaves = wait_leaves(request)
    for leaf in leaves:
        if leaf.kind == "sleep" and leaf.ms < 0:
            raise ValueError(f"condition {leaf.path}: a sleep needs a duration >= 0")
        if leaf.kind == "event":
            if not leaf.key or len(leaf.key) > 500:
                raise ValueError(f"condition {leaf.path}: an event key must be 1-500 characters")
            if not 0 <= leaf.lookback_ms <= MAX_LOOKBACK_MS:
                raise ValueError(f"condition {leaf.path}: the lookback must be 0 to 24 h")
            if leaf.expression:
                try:
                    compile_expression(leaf.expression)
                except (ValueError, RuntimeError) as exc:
                    raise ValueError(
                        f"condition {leaf.path}: invalid CEL expression {leaf.expression!r}: {exc}"
                    ) from None
    return request, leaves


def event_keys(leaves: Iterable[WaitLeaf]) -> list[str]:
    """The sorted event keys of conditions (the order their locks are taken in)."""
    return sorted({leaf.key for leaf in leaves if leaf.kind == "event"})


async def lock_event_keys(tx: Executor, tenant_id: int, keys: Iterable[str]) -> None:
    """Takes the (tenant, key) transaction locks that order event ingest and registration."""
    ordered = sorted(set(keys))
    if ordered:
        await event_store.lock_event_keys(tx, event_store.LockEventKeys(tenant_id, ordered))


def expression_holds(
    expression: str | None, payload: Any, metadata: Any, run_input: Any, run_metadata: Any
) -> bool:
    """Whether an event condition's expression (none: always) holds for an event; raises
    what the evaluation raised."""
    if not expression:
        return True
    value = compile_expression(expression).execute(
        {
            "input": payload,
            "additional_metadata": metadata if metadata is not None else {},
            "run_input": run_input,
            "run_metadata": run_metadata if run_metadata is not None else {},
        }
    )
    return value is True


def _wait_key(m: EventMatch) -> Key:
    """The wait (task, run created at, branch, position) of a durable condition, from its
    ``cond`` (``d<branch>.<position>:<path>``)."""
    head = m.cond.split(":", 1)[0]
    branch, position = head[1:].split(".", 1)
    return (m.task_id, m.created_at, int(branch), int(position))


def _keys_params(keys: Sequence[Key]) -> condition_store.DurableWaitConditions:
    return condition_store.DurableWaitConditions(
        [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys]
    )


class DurableWaits:
    """Registers durable waits' conditions and settles the waits that hold."""

    async def register(
        self,
        tx: Executor,
        tenant_id: int,
        run: tuple[int, datetime],
        waits: Sequence[tuple[int, int, list[WaitLeaf]]],
    ) -> tuple[dict[int, SettledWait], dict[int, datetime | None]]:
        """Registers the conditions of waits just appended to the log of ``run`` (task id,
        created_at): ``(branch, position, conditions)`` each. Under the task's log lock and
        the locks of the waits' event keys. Returns the waits settled at once (a lookback
        found their events) and the ``wake_at`` of those that have sleep conditions."""
        task_id, created_at = run
        if not waits:
            return {}, {}
        rows = condition_store.InsertDurableWaits([], [], [], [], [], [], [], [], [], [], [], [])
        for branch, position, leaves in waits:
            for leaf in leaves:
                rows.task_ids.append(task_id)
                rows.run_created_ats.append(created_at)
                rows.tenant_ids.append(tenant_id)
                rows.branches.append(branch)
                rows.positions.append(position)
                rows.paths.append(leaf.path)
                rows.kinds.append(leaf.kind)
                rows.sleeps_ms.append(leaf.ms)
                rows.event_keys.append(leaf.key)
                rows.expressions.append(leaf.expression)
                rows.scopes.append(leaf.scope)
                rows.lookbacks_ms.append(leaf.lookback_ms)
        await condition_store.insert_durable_waits(tx, rows)
        keys: list[Key] = [(task_id, created_at, b, p) for b, p, _ in waits]
        lookback = {
            (b, p, leaf.path) for b, p, leaves in waits for leaf in leaves if leaf.lookback_ms
        }
        conds = await condition_store.durable_wait_conditions(tx, _keys_params(keys))
        chosen: list[EventMatch] = []
        taken: set[int] = set()
        run_data: list[store.RunInput] = []  # read once, when an expression needs it
        for c in conds:
            if (c["branch"], c["position"], c["path"]) not in lookback or c["satisfied_at"]:
                continue
            if c["since"] is None or c["event_key"] is None:
                continue
            found = await self._lookback(tx, tenant_id, run, c, taken, run_data)
            if found is not None:
                taken.add(found)
                cond = f"d{c['branch']}.{c['position']}:{c['path']}"
                chosen.append(EventMatch(task_id, created_at, cond, found))
        fired: dict[Key, Fired] = {}
        if chosen:
            for s in await condition_store.satisfy_durable_waits(
                tx,
                condition_store.SatisfyDurableWaits(
                    [m.task_id for m in chosen],
                    [m.cond for m in chosen],
                    [m.event_id for m in chosen],
                ),
            ):
                key = (s["task_id"], s["run_created_at"], s["branch"], s["position"])
                fired.setdefault(key, Fired(s["path"], s["event_id"]))
        settled = {s.position: s for s in await self.decide(tx, keys, fired)}
        timed = [
            k for k, (_, _, leaves) in zip(keys, waits, strict=True)
            if k[3] not in settled and any(leaf.kind == "sleep" for leaf in leaves)
        ]  # fmt: skip
        wake_ats: dict[int, datetime | None] = {}
        if timed:
            for w in await store.set_durable_wake_ats(
                tx,
                store.SetDurableWakeAts(
                    [k[0] for k in timed], [k[1] for k in timed], [k[2] for k in timed],
                    [k[3] for k in timed],
                ),
            ):  # fmt: skip
                wake_ats[w["position"]] = w["wake_at"]
        return settled, wake_ats

    async def _lookback(
        self,
        tx: Executor,
        tenant_id: int,
        run: tuple[int, datetime],
        cond: condition_store.DurableCondition,
        taken: set[int],
        run_data: list[store.RunInput],
    ) -> int | None:
        """The earliest event of a condition's lookback window that the task has not used
        and whose expression holds (an expression that fails on an event skips it)."""
        assert cond["since"] is not None and cond["event_key"] is not None
        task_id = run[0]
        past = await event_store.lookback_events(
            tx,
            event_store.LookbackEvents(
                tenant_id, cond["event_key"], cond["since"], cond["scope"], task_id,
                _LOOKBACK_LIMIT,
            ),
        )  # fmt: skip
        for e in past:
            if e["id"] in taken:
                continue
            if cond["expression"] and not run_data:
                found = await store.durable_run_input(tx, store.DurableRunInput(*run))
                run_data.append(found or {"input": None, "additional_metadata": {}})
            seen = run_data[0] if run_data else {"input": None, "additional_metadata": {}}
            try:
                if expression_holds(
                    cond["expression"], e["payload"], e["additional_metadata"], seen["input"],
                    seen["additional_metadata"],
                ):  # fmt: skip
                    return e["id"]
            except Exception as exc:
                log.info(
                    "durable wait of task %d: the expression %r failed on event %d: %s",
                    task_id, cond["expression"], e["id"], exc,
                )  # fmt: skip
        return None

    async def on_events(
        self, tx: Executor, matches: Sequence[EventMatch], event_ids: Sequence[int]
    ) -> EventSettlement:
        """Satisfies the durable conditions that pushed events (``event_ids``: all the
        push's) matched and settles the waits that now hold, in the ingest's transaction
        (which holds the events' key locks). Nothing is awaited: in a pipelined transaction
        the statements travel with COMMIT, and what they did is read after it
        (:class:`EventSettlement`). In order: the logs' locks (task order), the conditions
        satisfied (only while their entries are pending), the settlement of the reached
        waits whose conditions hold (``settle_reached_durable_waits``: the decision
        :meth:`decide` makes, in SQL), and the execution deadlines of the tasks reached
        (``durable_timeouts``: a no-op for a task still blocked or restored)."""
        if not matches:
            return EventSettlement(None, None)
        created = {m.task_id: m.created_at for m in matches}
        tasks = sorted(created)
        await store.lock_durable_logs.defer(
            tx, store.LockDurableLogs(tasks, [created[t] for t in tasks])
        )
        satisfied = await condition_store.satisfy_durable_waits.defer(
            tx,
            condition_store.SatisfyDurableWaits(
                [m.task_id for m in matches], [m.cond for m in matches],
                [m.event_id for m in matches],
            ),
        )  # fmt: skip
        reached = sorted({_wait_key(m) for m in matches})
        # A few waits (one event's, typically) settle under plans made once per connection:
        # planning this statement and the settle function's for each push cost more than
        # running them (docs/performance.md). Many waits keep plans made for their arrays.
        generic = len(reached) <= GENERIC_PLAN_WAITS
        if generic:
            await store.set_plan_cache_mode.send(tx, store.SetPlanCacheMode("force_generic_plan"))
        settled = await store.settle_reached_durable_waits.defer(
            tx,
            store.SettleReachedDurableWaits(
                [k[0] for k in reached], [k[1] for k in reached], [k[2] for k in reached],
                [k[3] for k in reached], sorted(set(event_ids)),
            ),
        )  # fmt: skip
        if generic:
            await store.set_plan_cache_mode.send(tx, store.SetPlanCacheMode("force_custom_plan"))
        await store.durable_timeouts.send(tx, store.DurableTimeouts(tasks, TIMEOUT_GRACE_MS))
        return EventSettlement(satisfied, settled)

    async def on_timers(self, tx: Executor, due: Sequence[store.DueTimer]) -> list[SettledWait]:
        """Fires the elapsed sleep conditions of due waits (their logs locked by the claim),
        settles those that now hold and re-arms the others at their next sleep. Returns the
        waits settled."""
        if not due:
            return []
        fired_rows = await condition_store.fire_durable_sleeps(
            tx,
            condition_store.FireDurableSleeps(
                [d["task_id"] for d in due], [d["branch"] for d in due],
                [d["position"] for d in due],
            ),
        )  # fmt: skip
        fired: dict[Key, Fired] = {}
        first: dict[Key, datetime] = {}
        for f in fired_rows:
            key = (f["task_id"], f["run_created_at"], f["branch"], f["position"])
            if key not in first or f["fire_at"] < first[key]:
                first[key] = f["fire_at"]
                fired[key] = Fired(f["path"])  # the earliest sleep is the one that fired
        keys: list[Key] = [(d["task_id"], d["created_at"], d["branch"], d["position"]) for d in due]
        settled = await self.decide(tx, keys, fired)
        done = {(s.task_id, s.position) for s in settled}
        rest = [k for k in keys if (k[0], k[3]) not in done]
        if rest:
            await store.set_durable_wake_ats(
                tx,
                store.SetDurableWakeAts(
                    [k[0] for k in rest], [k[1] for k in rest], [k[2] for k in rest],
                    [k[3] for k in rest],
                ),
            )  # fmt: skip
        return settled

    async def decide(
        self, tx: Executor, keys: Sequence[Key], fired: dict[Key, Fired]
    ) -> list[SettledWait]:
        """Settles the pending waits among ``keys`` whose conditions hold, with the condition
        that completed each (``fired``; else its first satisfied one), and drops their
        conditions that never held. Returns the waits settled."""
        if not keys:
            return []
        rows = await condition_store.durable_wait_conditions(tx, _keys_params(keys))
        return await self._settle(tx, rows, fired)

    async def _settle(
        self, tx: Executor, rows: list[condition_store.DurableCondition], fired: dict[Key, Fired]
    ) -> list[SettledWait]:
        """:meth:`decide`, given the conditions of the waits (``durable_wait_conditions``)."""
        groups: dict[Key, list[condition_store.DurableCondition]] = {}
        for r in rows:
            key = (r["task_id"], r["run_created_at"], r["branch"], r["position"])
            groups.setdefault(key, []).append(r)
        ready: list[tuple[Key, Fired, dict[str, Any]]] = []
        for key, conds in groups.items():
            first = conds[0]
            if first["status"] != "pending" or not isinstance(first["request"], dict):
                continue
            done = [c["path"] for c in conds if c["satisfied_at"] is not None]
            if not wait_holds(first["request"], done):
                continue
            f = fired.get(key)
            if f is None or f.path not in done:
                by_path = {c["path"]: c for c in conds}
                path = min(done, key=lambda p: by_path[p]["satisfied_at"] or datetime.max)
                f = Fired(path, by_path[path]["event_id"])
            payload = next((c["payload"] for c in conds if c["path"] == f.path), None)
            ready.append((key, f, {"fired": f.path, "payload": payload}))
        if not ready:
            return []
        settled = await store.settle_durable_entries(
            tx,
            store.SettleDurableEntries(
                task_ids=[k[0] for k, _, _ in ready],
                created_ats=[k[1] for k, _, _ in ready],
                branches=[k[2] for k, _, _ in ready],
                positions=[k[3] for k, _, _ in ready],
                statuses=["ok" for _ in ready],
                results=[json.dumps(r) for _, _, r in ready],
                errors=[None for _ in ready],
                fired=[f.path for _, f, _ in ready],
                event_ids=[f.event_id for _, f, _ in ready],
            ),
        )
        # The statement also dropped their conditions that never held.
        results = {(k[0], k[2], k[3]): r for k, _, r in ready}
        return [
            SettledWait(
                s["task_id"], s["position"], s["satisfied_seq"],
                results[(s["task_id"], s["branch"], s["position"])], s["tenant_id"],
                bool(s["restored"]), s["worker_id"], s["attempt"], s["timed"],
            )
            for s in settled
        ]  # fmt: skip


class EventSettlement:
    """What :meth:`DurableWaits.on_events` did, once its transaction has committed."""

    def __init__(
        self,
        satisfied: Later[condition_store.SatisfiedCondition] | None,
        settled: Later[store.SettledWaitRow] | None,
    ) -> None:
        self._satisfied = satisfied
        self._settled = settled

    @property
    def satisfied(self) -> int:
        """How many conditions the events satisfied."""
        return len(self._satisfied.rows) if self._satisfied is not None else 0

    def settled(self) -> list[SettledWait]:
        """The waits settled."""
        if self._settled is None:
            return []
        return [
            SettledWait(
                s["task_id"], s["position"], s["satisfied_seq"], s["result"], s["tenant_id"],
                bool(s["restored"]), s["worker_id"], s["attempt"], s["timed"],
            )
            for s in self._settled.rows
        ]  # fmt: skip

    def woken(self) -> dict[int, list[tuple[int, int]]]:
        """Whom to tell: the (task, attempt) of each settled wait's running attempt, by
        worker."""
        by_worker: dict[int, list[tuple[int, int]]] = {}
        for w in self.settled():
            if w.worker_id is not None and w.attempt is not None:
                by_worker.setdefault(w.worker_id, []).append((w.task_id, w.attempt))
        return by_worker


def settled_entries(settled: Iterable[SettledWait]) -> dict[int, list[pb.DurableEntry]]:
    """Settled waits as the worker's log sees them, by task (for :meth:`Wakes.deliver`)."""
    out: dict[int, list[pb.DurableEntry]] = {}
    for s in settled:
        out.setdefault(s.task_id, []).append(
            pb.DurableEntry(
                position=s.position,
                kind=str(EntryKind.WAIT),
                status=str(EntryStatus.OK),
                result=json.dumps(s.result, separators=(",", ":")).encode(),
                satisfied_seq=s.satisfied_seq,
            )
        )
    return out
