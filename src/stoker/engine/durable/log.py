"""Answers the durable requests of workers' attempts (docs/durable.md).

A durable attempt opens its log when it starts (``OPEN``: a new invocation, which fences
off every older one, and the visible log to replay), records the calls it makes for the
first time (``APPEND``: a completed step with its result, a sleep whose deadline is
computed here from the database clock and written once, a wait whose conditions are
registered in the same transaction — :mod:`stoker.engine.durable.waits` — and may be
settled at once by a lookback), re-reads its log when told something was settled
(``SYNC``), and asks to be evicted while it is blocked (``EVICT``: accepted under the log's
lock only when no wake-up can be lost; the attempt then ends without counting as a retry
and a later settlement restores the task). Every request is checked against
``task_runtime``: only the worker running that attempt, of that tenant, is answered; the
dispatcher checked the same in memory before.

The execution timeout of a durable attempt counts only time spent running: after each
request the attempt's deadline in ``task_runtime`` is cleared while its log has a pending
entry and set again once none is left (``durable_timeouts``; the timer loop does the same
after it settles). The worker enforces the same rule itself, more precisely (its deadline
pauses only while the body is blocked); the engine's deadline is the backstop.

Children are appended through ingest, the one run-writing path
(:meth:`~stoker.engine.ingest.workflows.WorkflowIngest.spawn_logged`): in the savepoint
that writes the child runs, the log is locked, the invocation checked, and the ``child``
entries recorded pointing at them, so a child exists exactly when its entry does, and a
replay finds it instead of spawning it again. The child's index under its parent is its
position on its branch (:func:`~stoker._core.durable.child_index`), so even a spawn whose
reply was lost finds the same child when re-sent, and a child re-executed after a reset
(another branch) is a new run. A child
that existed already (found by its ``child_key``) and is final settles its entry at once.
A completed step is appended with its result or its final error.

A log is sent in pages (:data:`PAGE_ENTRIES` entries or about :data:`PAGE_BYTES`):
``OPEN`` and ``SYNC`` answer the first with ``more`` set when the log goes on, and the
worker reads the rest with ``SYNC`` ``after_position``, so a log of any length fits the
stream's message limit.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from stoker._core.durable import EntryKind, EntryStatus, WaitLeaf, child_index
from stoker._core.wire import json_problem
from stoker._proto import engine_pb2 as pb
from stoker.db import Executor
from stoker.db.store import durable as store
from stoker.engine.durable.children import settle_children, settle_final_children
from stoker.engine.durable.waits import DurableWaits, event_keys, lock_event_keys, parse_wait
from stoker.engine.ingest.workflows import ChildInput, WorkflowIngest
from stoker.engine.signals import Outbox
from stoker.errors import StokerError

log = logging.getLogger("stoker.engine.durable")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(at: datetime | None) -> int:
    """Epoch milliseconds of a database time (0 for none), the wire's form of a time."""
    return 0 if at is None else (at - _EPOCH) // timedelta(milliseconds=1)


def _json(value: Any) -> bytes:
    return b"" if value is None else json.dumps(value, separators=(",", ":")).encode()


def wire_entry(e: store.Entry, inserted: bool = False) -> pb.DurableEntry:
    """A recorded call as the worker sees it."""
    return pb.DurableEntry(
        position=e["position"],
        kind=e["kind"],
        name=e["name"],
        fingerprint=e["fingerprint"],
        status=e["status"],
        result=_json(e["result"]),
        error=_json(e["error"]),
        wake_at_ms=epoch_ms(e["wake_at"]),
        satisfied_seq=e["satisfied_seq"] or 0,
        inserted=inserted,
        child_run_id=str(e["child_external_id"] or ""),
    )


class DurableLogs:
    """The engine's side of durable attempts' logs.

    ``on_timer(at)`` is called after a commit that wrote a deadline (the earliest one it
    wrote), so the timer loop, if it runs here, looks again when it is due."""

    def __init__(
        self,
        db: Executor,
        waits: DurableWaits,
        *,
        on_timer: Callable[[datetime], None] = lambda _: None,
        timeout_grace_ms: int = 1000,
        children: WorkflowIngest | None = None,
    ) -> None:
        self._db = db
        self._waits = waits
        self._on_timer = on_timer
        self._grace_ms = timeout_grace_ms
        self._children = children

    async def handle(
        self, worker_id: int, tenant_id: int, req: pb.DurableRequest
    ) -> pb.DurableReply:
        """The reply to one request of the worker ``worker_id`` (of ``tenant_id``)."""
        reply = pb.DurableReply(task_id=req.task_id, attempt=req.attempt, request_id=req.request_id)
        if req.op == pb.APPEND and (problem := _call_problem(req.calls)) is not None:
            reply.error = problem
            return reply
        if req.op == pb.APPEND and any(c.kind == EntryKind.CHILD for c in req.calls):
            return await self._spawn(worker_id, tenant_id, req, reply)
        timers: list[datetime] = []
        # Not pipelined: an APPEND of thousands of entries in pipeline mode has been seen to
        # stall on a Unix socket (both ends writing, neither reading) until the timeout.
        async with self._db.transaction() as tx:
            run = await store.durable_attempt(
                tx, store.DurableAttempt(req.task_id, req.attempt, worker_id, tenant_id)
            )
            if run is None:
                reply.error = "the attempt is not running on this worker"
                return reply
            key = (run["task_id"], run["created_at"])
            reply.now_ms = epoch_ms(run["db_now"])
            if req.op == pb.OPEN:
                await store.create_durable_logs(
                    tx, store.CreateDurableLogs([key[0]], [key[1]], [run["tenant_id"]])
                )
                await store.lock_durable_log(tx, store.LockDurableLog(*key))
                bumped = await store.bump_durable_invocations(
                    tx, store.BumpDurableInvocations([key[0]], [key[1]])
                )
                reply.invocation = bumped[0]["invocation"]
                if req.run_timeout_ms > 0:
                    await store.set_durable_deadline(
                        tx, store.SetDurableDeadline(*key, req.run_timeout_ms)
                    )
            elif req.op == pb.SYNC:
                # Only reads: no row lock, so the transaction commits without a WAL flush
                # (this re-read is on the path from an event to the task resuming).
                locked = await store.read_durable_log(tx, store.LockDurableLog(*key))
                if locked is None:
                    reply.error = "the task's log was never opened"
                    return reply
                reply.invocation = locked["invocation"]
            elif req.op == pb.APPEND:
                try:
                    waits = _waits(req)
                except ValueError as exc:
                    reply.error = f"invalid wait: {exc}"
                    return reply
                # The event keys' locks come first (the order event ingest takes them in),
                # then the log's: whichever of this and an event commits second sees the
                # other.
                await lock_event_keys(
                    tx, run["tenant_id"], event_keys(leaf for ls in waits.values() for leaf in ls)
                )
                locked = await store.lock_durable_log(tx, store.LockDurableLog(*key))
                if locked is None or locked["invocation"] != req.invocation:
                    reply.error = "a newer invocation of this task runs elsewhere"
                    return reply
                reply.invocation = req.invocation
                # Due sleeps first: the worker may have gone past them already.
                await store.settle_due_durable_timers_of(tx, store.SettleDueDurableTimersOf(*key))
                rows = await store.append_durable_entries(tx, _append(key, req, waits))
                fresh = [
                    (r["branch"], r["position"], waits[r["position"]])
                    for r in rows
                    if r["inserted"] and r["position"] in waits
                ]
                settled, wake_ats = await self._waits.register(tx, run["tenant_id"], key, fresh)
                for r in rows:
                    entry = wire_entry(r, r["inserted"])
                    if r["inserted"] and r["position"] in settled:
                        done = settled[r["position"]]
                        entry.status = str(EntryStatus.OK)
                        entry.result = _json(done.result)
                        entry.satisfied_seq = done.satisfied_seq
                    if r["inserted"] and r["position"] in wake_ats:
                        entry.wake_at_ms = epoch_ms(wake_ats[r["position"]])
                    reply.entries.append(entry)
                timers = [
                    r["wake_at"]
                    for r in rows
                    if r["inserted"] and r["wake_at"] is not None and r["position"] not in waits
                ] + [w for w in wake_ats.values() if w is not None]
            elif req.op == pb.EVICT:
                locked = await store.lock_durable_log(tx, store.LockDurableLog(*key))
                evicted = await store.evict_durable_task(
                    tx,
                    store.EvictDurableTask(
                        *key, req.invocation, req.last_seen_seq, req.attempt, worker_id
                    ),
                )
                if evicted is None:
                    reply.error = _refusal(locked, req)
                    return reply
                reply.invocation = req.invocation
                reply.evicted = True
                return reply
            else:
                reply.error = f"unknown durable operation {req.op}"
                return reply
            if req.op != pb.APPEND:
                if req.after_position <= 0:
                    pending = await store.durable_log_pending(tx, store.DurableLogPending(*key))
                    await settle_final_children(tx, pending, key)
                entries, reply.more = await _page(tx, key, max(0, req.after_position))
                reply.entries.extend(entries)
            # A new invocation replaying into a recorded pending wait blocks without a
            # request: its deadline is cleared already at OPEN (the worker enforces its own
            # from the start and pauses it while blocked; this one is the backstop). A
            # task without an execution timeout has no deadline: no statement.
            if run["timed"]:
                await store.durable_timeouts.send(
                    tx, store.DurableTimeouts([key[0]], self._grace_ms)
                )
        if timers:
            self._on_timer(min(timers))
        return reply

    async def _spawn(
        self, worker_id: int, tenant_id: int, req: pb.DurableRequest, reply: pb.DurableReply
    ) -> pb.DurableReply:
        """APPEND of child calls: the children and their entries, in one savepoint of
        ingest's flush."""
        calls = list(req.calls)
        if self._children is None:
            reply.error = "this engine does not spawn children of durable tasks"
            return reply
        if any(c.kind != EntryKind.CHILD for c in calls):
            reply.error = "an append of child runs holds child runs only"
            return reply
        run = await store.durable_attempt(
            self._db, store.DurableAttempt(req.task_id, req.attempt, worker_id, tenant_id)
        )
        if run is None:
            reply.error = "the attempt is not running on this worker"
            return reply
        reply.now_ms = epoch_ms(run["db_now"])
        try:
            ids = [uuid.UUID(c.child.run_id) if c.child.run_id else uuid.uuid4() for c in calls]
        except ValueError:
            reply.error = "a child's run_id is not a UUID"
            return reply
        for c in calls:
            try:
                child_index(1, c.position)
            except ValueError as exc:
                reply.error = str(exc)
                return reply
        items = [
            ChildInput(
                c.child.task_name,
                c.child.workflow_name,
                c.child.input,
                c.child.additional_metadata,
                c.child.priority,
                c.position,
                c.child.child_key,
            )
            for c in calls
        ]
        record = _ChildRecord(
            (run["task_id"], run["created_at"]), req, self._grace_ms, timed=run["timed"]
        )
        try:
            answer = await self._children.spawn_logged(
                run["tenant_id"], run["task_id"], items, ids, record
            )
        except StokerError as exc:
            reply.error = f"spawning children: {exc}"
            return reply
        if isinstance(answer, str):
            reply.error = answer
            return reply
        reply.invocation = req.invocation
        reply.entries.extend(answer)
        return reply


PAGE_ENTRIES = 1000
"""At most this many entries in one page of a log sent to a worker (OPEN, SYNC)."""

PAGE_BYTES = 1 << 20
"""And about this many bytes: a page ends after the entry that reaches it (one entry, up to
the payload limit, always fits the stream's message limit)."""


async def _page(
    tx: Executor, key: tuple[int, datetime], after: int
) -> tuple[list[pb.DurableEntry], bool]:
    """The page of the visible log after position ``after``, and whether more follows."""
    rows = await store.durable_log_page(
        tx, store.DurableLogPage(key[0], key[1], after, PAGE_ENTRIES + 1)
    )
    page: list[pb.DurableEntry] = []
    size = 0
    for row in rows[:PAGE_ENTRIES]:
        entry = wire_entry(row)
        page.append(entry)
        size += entry.ByteSize()
        if size >= PAGE_BYTES:
            break
    return page, len(page) < len(rows)


def _call_problem(calls: Sequence[pb.DurableCall]) -> str | None:
    """Why calls a worker sent cannot be recorded (None: they can): the log only holds
    known kinds and statuses and JSON documents."""
    kinds = {str(k) for k in EntryKind}
    for c in calls:
        if c.kind not in kinds:
            return f"position {c.position}: unknown kind {c.kind!r}"
        if c.status not in ("", EntryStatus.PENDING, EntryStatus.OK, EntryStatus.ERROR):
            return f"position {c.position}: unknown status {c.status!r}"
        for what, raw in (("result", c.result), ("error", c.error), ("request", c.request)):
            if raw and (problem := json_problem(raw)) is not None:
                return f"position {c.position}: the {what} is refused: {problem}"
    return None


class _ChildRecord:
    """Records a durable task's children in its log, in their spawn's savepoint."""

    def __init__(
        self,
        key: tuple[int, datetime],
        req: pb.DurableRequest,
        grace_ms: int,
        *,
        timed: bool = True,
    ) -> None:
        self.key = key
        self.req = req
        self.grace_ms = grace_ms
        self.timed = timed
        self.branch = 1  # the log's active branch, read by the guard

    async def guard(self, tx: Executor) -> str | None:
        locked = await store.lock_durable_log(tx, store.LockDurableLog(*self.key))
        if locked is None or locked["invocation"] != self.req.invocation:
            return "a newer invocation of this task runs elsewhere"
        self.branch = locked["active_branch"]
        return None

    def child_index(self, position: int) -> int:
        # After a reset the branch is another, and so is the child: a position the
        # abandoned branch spawned a child at never finds that run again.
        return child_index(self.branch, position)

    async def record(
        self, tx: Executor, out: Outbox, children: list[tuple[str, bool]]
    ) -> list[pb.DurableEntry]:
        ids = [uuid.UUID(run_id) for run_id, _ in children]
        rows = await store.append_durable_entries(tx, _append(self.key, self.req, {}, ids))
        entries = [wire_entry(r, r["inserted"]) for r in rows]
        existed = [
            (self.key[0], self.key[1], r["branch"], r["position"], r["child_external_id"])
            for r, (_, was) in zip(rows, children, strict=True)
            if r["inserted"] and was and r["child_external_id"] is not None
        ]
        # Found by its child_key, a child may have ended already, and nothing else would
        # settle its new entry: settled here, from its outcome.
        if existed and (await settle_children(tx, existed, out))[1]:
            positions = {r["position"] for r in rows}
            lo, hi = min(positions), max(positions)
            visible = await store.durable_log_page(
                tx, store.DurableLogPage(self.key[0], self.key[1], lo - 1, hi - lo + 1)
            )
            by_position = {e["position"]: e for e in visible if e["position"] in positions}
            entries = [wire_entry(by_position.get(r["position"], r), r["inserted"]) for r in rows]
        # The attempt's deadline pauses while a child is pending, as for any wait.
        if self.timed:
            await store.durable_timeouts(tx, store.DurableTimeouts([self.key[0]], self.grace_ms))
        return entries


def _refusal(locked: store.DurableLog | None, req: pb.DurableRequest) -> str:
    """Why an eviction was refused, for the worker's log."""
    if locked is None:
        return "eviction refused: the task's log was never opened"
    if locked["invocation"] != req.invocation:
        return "eviction refused: a newer invocation of this task runs elsewhere"
    if locked["satisfied_counter"] > req.last_seen_seq:
        return "eviction refused: a resolution is on its way"
    return "eviction refused: the task waits for nothing"


def _waits(req: pb.DurableRequest) -> dict[int, list[WaitLeaf]]:
    """The conditions of the waits among the calls (wait_for, wait_for_event), by position;
    ValueError when one is malformed."""
    waits: dict[int, list[WaitLeaf]] = {}
    for c in req.calls:
        if c.kind == str(EntryKind.WAIT) and c.request:
            request = json.loads(c.request)
            if isinstance(request, dict) and "conditions" in request:
                try:
                    waits[c.position] = parse_wait(c.request)[1]
                except ValueError as exc:
                    raise ValueError(f"position {c.position}: {exc}") from None
    return waits


def _append(
    key: tuple[int, datetime],
    req: pb.DurableRequest,
    waits: dict[int, list[WaitLeaf]],
    child_ids: list[uuid.UUID] | None = None,
) -> store.AppendDurableEntries:
    """The append of the calls; a wait with conditions gets no deadline here (its sleeps
    are conditions, armed by the registration)."""
    calls = list(req.calls)
    return store.AppendDurableEntries(
        task_id=key[0],
        created_at=key[1],
        invocation=req.invocation,
        positions=[c.position for c in calls],
        kinds=[c.kind for c in calls],
        names=[c.name for c in calls],
        fingerprints=[c.fingerprint for c in calls],
        requests=[c.request.decode() if c.request else None for c in calls],
        delays_ms=[
            c.delay_ms
            if c.kind == "wait" and not c.wake_at_ms and c.position not in waits
            else None
            for c in calls
        ],
        wake_ats=[
            _EPOCH + timedelta(milliseconds=c.wake_at_ms)
            if c.wake_at_ms and c.position not in waits
            else None
            for c in calls
        ],
        child_external_ids=list(child_ids) if child_ids is not None else [None for _ in calls],
        statuses=[c.status or str(EntryStatus.PENDING) for c in calls],
        results=[c.result.decode() if c.result else None for c in calls],
        errors=[c.error.decode() if c.error else None for c in calls],
    )
