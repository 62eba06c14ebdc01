"""Answers the durable requests of workers' attempts (docs/durable.md).

A durable attempt opens its log when it starts (``OPEN``: a new invocation, which fences
off every older one, and the visible log to replay), records the calls it makes for the
first time (``APPEND``: a completed step with its result, a sleep whose deadline is
computed here from the database clock and written once), and re-reads its log when told
something was settled (``SYNC``). Every request is checked against ``task_runtime``: only
the worker running that attempt, of that tenant, is answered; the dispatcher checked the
same in memory before.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from stoker._core.durable import EntryStatus
from stoker._proto import engine_pb2 as pb
from stoker.db import Executor
from stoker.db.store import durable as store

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

    def __init__(self, db: Executor, *, on_timer: Callable[[], None] = lambda: None) -> None:
        self._db = db
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
                locked = await store.lock_durable_log(tx, store.LockDurableLog(*key))
                if locked is None:
                    reply.error = "the task's log was never opened"
                    return reply
                reply.invocation = locked["invocation"]
            elif req.op == pb.APPEND:
                locked = await store.lock_durable_log(tx, store.LockDurableLog(*key))
                if locked is None or locked["invocation"] != req.invocation:
                    reply.error = "a newer invocation of this task runs elsewhere"
                    return reply
                reply.invocation = req.invocation
                # Due sleeps first: the worker may have gone past them already.
                await store.settle_due_durable_timers_of(tx, store.SettleDueDurableTimersOf(*key))
                rows = await store.append_durable_entries(tx, _append(key, req))
                reply.entries.extend(wire_entry(r, r["inserted"]) for r in rows)
                timers = any(r["inserted"] and r["wake_at"] is not None for r in rows)
            else:
                reply.error = f"unknown durable operation {req.op}"
                return reply
            if req.op != pb.APPEND:
                visible = await store.visible_durable_log(tx, store.VisibleDurableLog(*key))
                reply.entries.extend(wire_entry(e) for e in visible)
        if timers:
            self._on_timer()
        return reply


def _append(key: tuple[int, datetime], req: pb.DurableRequest) -> store.AppendDurableEntries:
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
        delays_ms=[c.delay_ms if c.kind == "wait" and not c.wake_at_ms else None for c in calls],
        wake_ats=[
            _EPOCH + timedelta(milliseconds=c.wake_at_ms) if c.wake_at_ms else None for c in calls
        ],
        child_external_ids=[None for _ in calls],
        statuses=[c.status or str(EntryStatus.PENDING) for c in calls],
        results=[c.result.decode() if c.result else None for c in calls],
        errors=[None for _ in calls],
    )
