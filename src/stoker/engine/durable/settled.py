"""What follows a settlement of durable log entries, in the transaction that settled them.

Every path that settles entries — a timer (``controllers/durable_timers.py``), an event
(``ingest`` through :class:`~stoker.engine.durable.waits.DurableWaits`), a child's end — goes
through the one statement ``settle_durable_entries``, which also restores a task that was
evicted (queues it again). Then :func:`resume` does the rest, the same for all of them:
the restored tasks' tenants are signalled (their schedulers look at once, after the
commit), and the tasks still running get their execution deadline back if nothing they
wait for is pending any more (``durable_timeouts``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from stoker.db import Executor
from stoker.db.store import durable as store
from stoker.engine.scheduler import TIMEOUT_GRACE_MS
from stoker.engine.signals import Outbox


@dataclass(frozen=True, slots=True)
class Settled:
    """One settled entry's task, as :func:`resume` needs it."""

    task_id: int
    tenant_id: int
    restored: bool
    timed: bool = True
    """The task has an execution timeout (else there is no deadline to re-arm)."""


async def resume(tx: Executor, out: Outbox, settled: Iterable[Settled]) -> int:
    """Signals the tenants of restored tasks and re-arms the execution deadline of running
    ones that have one; returns how many tasks were restored."""
    restored: dict[int, int] = {}
    running: set[int] = set()
    for s in settled:
        if s.restored:
            restored[s.task_id] = s.tenant_id
        elif s.timed:
            running.add(s.task_id)
    for tenant_id in set(restored.values()):
        out.queued(tenant_id)
    running -= restored.keys()
    if running:
        await store.durable_timeouts.send(
            tx, store.DurableTimeouts(sorted(running), TIMEOUT_GRACE_MS)
        )
    return len(restored)
