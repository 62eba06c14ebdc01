"""Child runs of durable tasks: settling the log entries that wait for them.

A durable task's child is recorded as a ``child`` entry in the same transaction that
writes the child run (:meth:`DurableLogs.handle <stoker.engine.durable.log.DurableLogs>`
through ingest). When the child reaches a final status — whatever path finished it: an
attempt's end, a cancel, a workflow run finishing — the transaction that finished it
settles the entry (:meth:`ChildEnds.on_finishing`, called by the transaction's
:class:`~stoker.engine.signals.Outbox` before it commits), with the one settle statement
``settle_durable_entries``: ``ok`` with the child's output, or ``error`` with its error
document and final status, stored once so that every replay raises the same error; an
evicted parent is restored by that statement, and :func:`~stoker.engine.durable.settled.resume`
signals it, as for every settlement. After the commit the workers running the parents are
hinted (:class:`~stoker.engine.durable.wake.Wakes`).

The same settlement runs, under the log's lock, when a log is opened or re-read and shows
a pending child whose run is already final (:func:`settle_final_children`): a backstop
for a settlement that failed, so a parent never waits for a child that ended.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from stoker.db import Executor
from stoker.db.store import durable as store
from stoker.engine.durable.settled import Settled, resume
from stoker.engine.durable.wake import Wakes
from stoker.engine.signals import Outbox, Signals

log = logging.getLogger("stoker.engine.durable")

ByWorker = dict[int, list[tuple[int, int]]]


def _outcome_doc(o: store.ChildOutcome) -> tuple[str, str | None, str | None]:
    """(entry status, result JSON, error JSON) for a finished child run."""
    if o["status"] == "COMPLETED":
        return "ok", json.dumps(o["output"]), None
    error = o["error"] if isinstance(o["error"], dict) else {}
    doc = {
        "type": str(error.get("type") or o["status"]),
        "message": str(error.get("message") or ""),
        "traceback": str(error.get("traceback") or ""),
        "status": o["status"],
        "run_id": str(o["external_id"]),
    }
    return "error", None, json.dumps(doc)


async def settle_children(
    tx: Executor,
    pending: Iterable[tuple[int, datetime, int, int, uuid.UUID]],
    out: Outbox | None = None,
) -> tuple[ByWorker, int]:
    """Settles the pending child entries ``(task_id, created_at, branch, position, child
    run)`` whose child run is final, inside ``tx``; the workers to hint, by worker, and
    how many entries it settled.

    Locks the parents' logs (in task id order) first, as every writer of a log does."""
    items = sorted(pending)
    if not items:
        return {}, 0
    ids = sorted({i[4] for i in items})
    outcomes = {
        o["external_id"]: o
        for o in await store.durable_child_outcomes(tx, store.DurableChildOutcomes(ids))
    }
    items = [i for i in items if i[4] in outcomes]
    if not items:
        return {}, 0
    tasks = sorted({(i[0], i[1]) for i in items})
    await store.lock_durable_logs(
        tx, store.LockDurableLogs([t[0] for t in tasks], [t[1] for t in tasks])
    )
    docs = [_outcome_doc(outcomes[i[4]]) for i in items]
    settled = await store.settle_durable_entries(
        tx,
        store.SettleDurableEntries(
            task_ids=[i[0] for i in items],
            created_ats=[i[1] for i in items],
            branches=[i[2] for i in items],
            positions=[i[3] for i in items],
            statuses=[d[0] for d in docs],
            results=[d[1] for d in docs],
            errors=[d[2] for d in docs],
            fired=["child" for _ in items],
            event_ids=[None for _ in items],
        ),
    )
    if out is not None:
        # Restored (evicted) parents are queued: their tenants are signalled; running ones
        # get their execution deadline back once nothing they wait for is pending.
        await resume(
            tx,
            out,
            (
                Settled(s["task_id"], s["tenant_id"], bool(s["restored"]), s["timed"])
                for s in settled
            ),
        )
    by_worker: ByWorker = {}
    for s in settled:
        if s["worker_id"] is not None and s["attempt"] is not None:
            pair = (s["task_id"], s["attempt"])
            if pair not in by_worker.get(s["worker_id"], []):
                by_worker.setdefault(s["worker_id"], []).append(pair)
    return by_worker, len(settled)


async def settle_final_children(tx: Executor, entries: Iterable[store.Entry], key: Any) -> bool:
    """The backstop of an opened or re-read log (its lock held): settles its pending child
    entries whose runs are final. True when it settled any (the caller reads again)."""
    pending = [
        (key[0], key[1], e["branch"], e["position"], e["child_external_id"])
        for e in entries
        if e["kind"] == "child" and e["status"] == "pending" and e["child_external_id"]
    ]
    if not pending:
        return False
    # The caller holds this log's lock; lock_durable_logs takes it again harmlessly.
    _, n = await settle_children(tx, pending)
    return n > 0


class ChildEnds:
    """Settles the entries of durable parents whose children a transaction finished."""

    def __init__(self, wakes: Wakes, signals: Signals) -> None:
        self._wakes = wakes
        self._signals = signals
        self._sending: set[asyncio.Task[None]] = set()

    async def on_finishing(self, tx: Executor, out: Outbox, finished: list[uuid.UUID]) -> None:
        """Called inside a transaction that finished the runs ``finished``: settles the
        entries waiting for them, in a savepoint (a failure here leaves the entries
        pending, for the next open or re-read of their logs, and never fails the
        transaction that finished the runs); hints the parents' workers after commit."""
        rows = await store.pending_child_entries(
            tx, store.PendingChildEntries(sorted(set(finished)))
        )
        if not rows:
            return
        pending = [
            (r["task_id"], r["created_at"], r["branch"], r["position"], r["child_external_id"])
            for r in rows
        ]
        try:
            async with tx.transaction() as sp:
                part = self._signals.outbox()
                by_worker, _ = await settle_children(sp, pending, part)
            out.merge(part)
        except Exception:
            log.exception("settling the log entries of %d finished children failed", len(rows))
            return
        if by_worker:
            out.after_commit(lambda: self._send(by_worker))

    def _send(self, by_worker: ByWorker) -> None:
        task = asyncio.get_running_loop().create_task(self._wakes.send(by_worker))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
