"""Answers the durable requests of workers' attempts (docs/durable.md).

A durable attempt opens its log when it starts (``OPEN``: a new invocation, which fences
off every older one, and the visible log to replay), records the calls it makes for the
first time (``APPEND``: a completed step with its result, a sleep whose deadline is
computed here from the database clock and written once, a wait whose conditions are
registered in the same transaction — :mod:`stoker.engine.durable.waits` — and may be
settled at once by a lookback), and re-reads its log when told something was settled
(``SYNC``). Every request is checked against ``task_runtime``: only
the worker running that attempt, of that tenant, is answered; the dispatcher checked the
same in memory before.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from stoker._core.durable import EntryKind, EntryStatus, WaitLeaf
from stoker._proto import engine_pb2 as pb
from stoker.db import Executor
from stoker.db.store import durable as store
from stoker.engine.durable.waits import DurableWaits, event_keys, lock_event_keys, parse_wait

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
    )


class DurableLogs:
    """The engine's side of durable attempts' logs.

    ``on_timer()`` is called after a commit that wrote a deadline, so the timer loop, if it
    runs here, re-reads when the next one is due."""

    def __init__(
        self,
        db: Executor,
        waits: DurableWaits,
        *,
        on_timer: Callable[[], None] = lambda: None,
    ) -> None:
        self._db = db
        self._waits = waits
        self._on_timer = on_timer

    async def handle(
        self, worker_id: int, tenant_id: int, req: pb.DurableRequest
    ) -> pb.DurableReply:
        """The reply to one request of the worker ``worker_id`` (of ``tenant_id``)."""
        reply = pb.DurableReply(task_id=req.task_id, attempt=req.attempt, request_id=req.request_id)
        timers = False
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
                timers = any(
                    r["inserted"] and r["wake_at"] is not None and r["position"] not in waits
                    for r in rows
                ) or any(w is not None for w in wake_ats.values())
            else:
                reply.error = f"unknown durable operation {req.op}"
                return reply
            if req.op != pb.APPEND:
                visible = await store.visible_durable_log(tx, store.VisibleDurableLog(*key))
                reply.entries.extend(wire_entry(e) for e in visible)
        if timers:
            self._on_timer()
        return reply


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
    key: tuple[int, datetime], req: pb.DurableRequest, waits: dict[int, list[WaitLeaf]]
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
        child_external_ids=[None for _ in calls],
        statuses=[c.status or str(EntryStatus.PENDING) for c in calls],
        results=[c.result.decode() if c.result else None for c in calls],
        errors=[None for _ in calls],
    )
