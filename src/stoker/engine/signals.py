"""The one owner of "runs were queued" and "runs finished".

Whatever changes runs — ingest writing new runs, the dispatcher ending attempts, DAG
progression queuing the next steps, cancel and replay, timeouts, concurrency admission —
says so through an :class:`Outbox` bound to the transaction that made the change::

    async with signals.transaction(db) as (tx, out):
        ...                                   # write runs
        out.queued(tenant_id, gated=gated)    # some runs of the tenant became ready
        out.finished(tenant_id, external_ids) # some runs reached a final status

The outbox then does the three things every such change needs, in order:

1. **inside the transaction**, the ``on_finishing`` hooks with the finished runs (what
   must change in the same transaction as a run's end: a durable parent's log entry
   waiting for that child), then one ``NOTIFY`` per channel and tenant (``stoker_queue``,
   ``stoker_finished``), so other replicas hear of the change exactly when it is visible;
2. **after commit**, the local subscribers: the scheduler is woken for queued runs, tenants
   with runs waiting for concurrency slots are marked *gated* (the scheduler runs admission
   for them), the run watcher reads back finished runs its callers wait for, every
   ``on_finished``/``on_queued`` subscriber (metrics, live feeds) is called, and the
   outbox's :meth:`Outbox.after_commit` actions run;
3. nothing at all when the transaction rolls back.

Code that already holds a transaction (DAG progression, ``Attempts.complete`` and
``Attempts.cancel``, the workflow-run batch writer) receives the caller's outbox and adds
to it: one transaction, one outbox, one flush.

A change of *capacity* rather than of runs — slots freed, a worker registered or changed
its labels, a rate limit changed — goes through :meth:`Signals.capacity`: a local wake-up
of the ``on_capacity`` subscribers (the scheduler), with no NOTIFY and no transaction.

Subscribers register while the engine is composed, in their constructors (the scheduler:
``on_queued`` and ``on_capacity``; the run watcher: ``on_finished`` and
``on_tenant_finished``); the scheduler reads and clears the gated set here.

Signals from other replicas arrive through :class:`~stoker.engine.notify.Listener` and are
handed to :meth:`Signals.remote_queued` / :meth:`Signals.remote_finished`, which call the
same local subscribers. NOTIFY is a hint: the scheduler's poll and the watcher's re-reads
cover a lost one.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager

from stoker.db import Executor
from stoker.engine import notify

log = logging.getLogger("stoker.engine.signals")

QueuedHook = Callable[[set[int]], None]
"""Called after commit with the tenants that got ready runs."""
FinishedHook = Callable[[list[uuid.UUID]], None]
"""Called after commit with the external ids of runs that reached a final status."""
CapacityHook = Callable[[int], None]
"""Called with a tenant whose capacity to run work changed here (slots, limits, labels)."""
FinishingHook = Callable[[Executor, "Outbox", list[uuid.UUID]], Awaitable[None]]
"""Awaited inside the transaction that finished runs (their external ids), before it
commits: what must change in the same transaction as a run's end (a durable parent's log
entry waiting for its child). It may add to the outbox, and :meth:`Outbox.after_commit`."""


class Signals:
    """Fans "queued" and "finished" out to NOTIFY, the local subscribers and the gated set.

    Subscribers register once while the engine is composed (``on_queued``, ``on_finished``,
    ``on_tenant_finished``); the set of gated tenants lives here and only here.
    """

    def __init__(self, engine_id: str) -> None:
        self.engine_id = engine_id
        self._queued: list[QueuedHook] = []
        self._finished: list[FinishedHook] = []
        self._tenant_finished: list[Callable[[int], None]] = []
        self._capacity: list[CapacityHook] = []
        self._finishing: list[FinishingHook] = []
        self._gated: set[int] = set()

    # -- wiring -------------------------------------------------------------------------

    def on_queued(self, hook: QueuedHook) -> None:
        """Calls ``hook(tenants)`` whenever runs become ready (here or on another replica)."""
        self._queued.append(hook)

    def on_finished(self, hook: FinishedHook) -> None:
        """Calls ``hook(external_ids)`` whenever runs finish in this replica."""
        self._finished.append(hook)

    def on_tenant_finished(self, hook: Callable[[int], None]) -> None:
        """Calls ``hook(tenant_id)`` when another replica finished some of a tenant's runs."""
        self._tenant_finished.append(hook)

    def on_finishing(self, hook: FinishingHook) -> None:
        """Awaits ``hook(tx, outbox, external_ids)`` inside every transaction that finishes
        runs, before its NOTIFY and commit (see :data:`FinishingHook`)."""
        self._finishing.append(hook)

    def on_capacity(self, hook: CapacityHook) -> None:
        """Calls ``hook(tenant_id)`` whenever :meth:`capacity` is signalled."""
        self._capacity.append(hook)

    # -- emitting -----------------------------------------------------------------------

    def capacity(self, tenant_id: int) -> None:
        """A tenant's capacity changed in this replica: slots were freed, a worker
        (re)registered or changed its labels, a rate limit changed. Local only, no NOTIFY:
        the slots are this replica's, and another replica's scheduler re-reads rate
        limits on its next round."""
        for hook in self._capacity:
            hook(tenant_id)

    def outbox(self) -> Outbox:
        """A fresh outbox; call :meth:`Outbox.notify` in the transaction and
        :meth:`Outbox.committed` after it (or use :meth:`transaction`)."""
        return Outbox(self)

    @asynccontextmanager
    async def transaction(
        self, db: Executor, *, pipeline: bool = False
    ) -> AsyncIterator[tuple[Executor, Outbox]]:
        """A transaction with its outbox: notifies before commit, fans out after it.
        ``pipeline``: a pipelined transaction (:class:`~stoker.db.Executor`; the NOTIFY
        then travels with COMMIT)."""
        out = self.outbox()
        async with db.transaction(pipeline=pipeline) as tx:
            yield tx, out
            await out.notify(tx)
        out.committed()

    # -- receiving from other replicas --------------------------------------------------

    def remote_queued(self, tenant_id: int) -> None:
        """``stoker_queue`` from another replica."""
        self._fan_queued({tenant_id})

    def remote_finished(self, tenant_id: int) -> None:
        """``stoker_finished`` from another replica."""
        for hook in self._tenant_finished:
            hook(tenant_id)

    # -- the gated set (read by the scheduler's admission) --------------------------------

    def gate(self, tenant_ids: Iterable[int]) -> None:
        """Tenants with runs waiting for concurrency slots: admission runs for them."""
        self._gated.update(tenant_ids)

    def gated(self) -> set[int]:
        """A snapshot of the gated tenants."""
        return set(self._gated)

    def ungate(self, tenant_id: int) -> None:
        """Admission found nothing more to admit for the tenant."""
        self._gated.discard(tenant_id)

    # -- fan-out ------------------------------------------------------------------------

    def _fan_queued(self, tenants: set[int]) -> None:
        for hook in self._queued:
            hook(tenants)

    def _fan_finished(self, ids: list[uuid.UUID]) -> None:
        for hook in self._finished:
            hook(ids)


class Outbox:
    """What one transaction queued and finished; see the module docstring."""

    __slots__ = (
        "_after",
        "_finished_ids",
        "_finished_tenants",
        "_gated",
        "_queued",
        "_signals",
    )

    def __init__(self, signals: Signals) -> None:
        self._signals = signals
        self._queued: set[int] = set()
        self._gated: set[int] = set()
        self._finished_tenants: set[int] = set()
        self._finished_ids: list[uuid.UUID] = []
        self._after: list[Callable[[], None]] = []

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Calls ``fn()`` after the transaction commits (never if it rolls back)."""
        self._after.append(fn)

    def queued(self, tenant_id: int, *, gated: bool = False) -> None:
        """Runs of ``tenant_id`` became ready; ``gated`` when some wait for concurrency slots."""
        self._queued.add(tenant_id)
        if gated:
            self._gated.add(tenant_id)

    def finished(self, tenant_id: int, external_ids: Iterable[uuid.UUID]) -> None:
        """Runs of ``tenant_id`` reached a final status."""
        ids = list(external_ids)
        if ids:
            self._finished_tenants.add(tenant_id)
            self._finished_ids.extend(ids)

    def merge(self, other: Outbox) -> None:
        """Takes over what ``other`` collected (one transaction, one flush)."""
        self._queued |= other._queued
        self._gated |= other._gated
        self._finished_tenants |= other._finished_tenants
        self._finished_ids.extend(other._finished_ids)
        self._after.extend(other._after)

    def __bool__(self) -> bool:
        return bool(self._queued or self._finished_tenants)

    async def notify(self, tx: Executor) -> None:
        """The ``on_finishing`` hooks, then NOTIFY the other replicas, inside the
        transaction that made the change."""
        if self._finished_ids:
            for hook in self._signals._finishing:
                await hook(tx, self, list(self._finished_ids))
        channels = {
            notify.QUEUE: self._queued,
            notify.FINISHED: self._finished_tenants,
        }
        await notify.send_many(
            tx, {c: t for c, t in channels.items() if t}, self._signals.engine_id
        )

    def committed(self) -> None:
        """After commit: the gated set, the local wake-ups and the result watcher."""
        signals = self._signals
        if self._gated:
            signals.gate(self._gated)
        if self._queued:
            signals._fan_queued(self._queued)
        if self._finished_ids:
            signals._fan_finished(self._finished_ids)
        for fn in self._after:
            try:
                fn()
            except Exception:
                log.exception("an after-commit action failed")
