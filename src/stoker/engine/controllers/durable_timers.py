"""Durable timers: fires the due sleeps of durable tasks (leader only).

Each round the leader claims the pending log entries whose ``wake_at`` passed
(``claim_due_durable_timers``: their logs locked, ``SKIP LOCKED`` so a worker's append to
the same log never waits for a round), settles them ``ok`` in the same transaction — a
round is one transaction for up to ``_BATCH`` timers, whatever their tasks — and after the
commit delivers the settled entries themselves to the workers running those tasks
(:meth:`~stoker.engine.durable.wake.Wakes.deliver`, the same message an event's
settlement sends), which resume at once: no re-read, no round trip per sleeper. A task with
no running attempt (its worker died) is only settled: its next attempt replays the sleep as
done. A due wait with conditions (``wait_for``) has its elapsed sleep conditions fired
instead, and is settled only when its conditions then hold
(:meth:`~stoker.engine.durable.waits.DurableWaits.on_timers`). An evicted task is restored
by the settlement itself (``settle_durable_entries`` queues it again in the same
statement); its tenant's scheduler is signalled once the round commits. A running task that
is no longer blocked gets its execution deadline back (``durable_timeouts``).

Between rounds it sleeps until the earliest pending deadline (at most ``interval_s``), and
is woken when this replica records a deadline earlier than the one it sleeps until
(:meth:`DurableTimers.wake`; later ones cost nothing, so a thousand tasks falling asleep
do not make a thousand rounds); a deadline recorded on another replica is seen by the
next round.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime

from stoker._core.durable import EntryKind, EntryStatus
from stoker._proto import engine_pb2 as pb
from stoker.db import Executor, NoParams
from stoker.db.store import durable as store
from stoker.engine.controllers.leadership import Leadership
from stoker.engine.durable.settled import Settled, resume
from stoker.engine.durable.waits import DurableWaits, settled_entries
from stoker.engine.durable.wake import Wakes
from stoker.engine.service import LoopService
from stoker.engine.signals import Signals

log = logging.getLogger("stoker.engine.controllers")

_BATCH = 500


class DurableTimers(LoopService):
    """Fires due durable sleeps and wakes their workers, on the leader."""

    name = "durable-timers"

    def __init__(
        self,
        db: Executor,
        wakes: Wakes,
        waits: DurableWaits,
        leadership: Leadership,
        signals: Signals,
        *,
        interval_s: float,
    ) -> None:
        super().__init__()
        self._db = db
        self._run_signals = signals
        self._wakes = wakes
        self._waits = waits
        self._leadership = leadership
        self._interval = interval_s
        self._wake = self.signal()
        self.fired = 0
        """Timers fired by this replica (for tests and metrics)."""
        self.restored = 0
        """Evicted tasks this replica's timers queued again."""
        self.rounds = 0
        """Rounds run (for tests and metrics)."""
        # Epoch seconds of the next planned round; infinity while a round runs (then any
        # new deadline may be earlier than the one the round will plan for).
        self._next_at = math.inf

    def wake(self, at: datetime | None = None) -> None:
        """A deadline was recorded (``at``; None: unknown): look again when it is due, if
        that is before the next planned round."""
        if at is None or at.timestamp() < self._next_at:
            self._wake.set()

    async def run(self) -> None:
        while not self.stopping.is_set():
            delay = self._interval
            if self._leadership.is_leader:
                delay = await self.round()
            self._next_at = time.time() + delay
            await self._wake.wait(delay)
            self._next_at = math.inf

    async def round(self) -> float:
        """Fires what is due; returns seconds until the next deadline (at most the interval)."""
        by_worker: dict[int, list[tuple[int, int]]] = {}
        entries: dict[int, list[pb.DurableEntry]] = {}
        self.rounds += 1
        async with self._run_signals.transaction(self._db) as (tx, out):
            due = await store.claim_due_durable_timers(tx, store.ClaimDueDurableTimers(_BATCH))
            sleeps = [d for d in due if not d["conditions"]]
            running: dict[int, tuple[int, int]] = {}  # task -> (worker, attempt) running it
            resumed: list[Settled] = []
            if sleeps:
                settled = await store.settle_durable_entries(
                    tx,
                    store.SettleDurableEntries(
                        task_ids=[d["task_id"] for d in sleeps],
                        created_ats=[d["created_at"] for d in sleeps],
                        branches=[d["branch"] for d in sleeps],
                        positions=[d["position"] for d in sleeps],
                        statuses=["ok" for _ in sleeps],
                        results=[None for _ in sleeps],
                        errors=[None for _ in sleeps],
                        fired=["timer" for _ in sleeps],
                        event_ids=[None for _ in sleeps],
                    ),
                )
                for s in settled:
                    entries.setdefault(s["task_id"], []).append(
                        pb.DurableEntry(
                            position=s["position"],
                            kind=str(EntryKind.WAIT),
                            status=str(EntryStatus.OK),
                            satisfied_seq=s["satisfied_seq"],
                        )
                    )
                resumed.extend(
                    Settled(s["task_id"], s["tenant_id"], bool(s["restored"]), s["timed"])
                    for s in settled
                )
                for s in settled:
                    if s["worker_id"] is not None and s["attempt"] is not None:
                        running[s["task_id"]] = (s["worker_id"], s["attempt"])
                self.fired += len(settled)
            # Waits with conditions: their elapsed sleeps are conditions, which may or may
            # not complete the wait (the one decision, shared with events).
            waited = await self._waits.on_timers(tx, [d for d in due if d["conditions"]])
            for task_id, settled_waits in settled_entries(waited).items():
                entries.setdefault(task_id, []).extend(settled_waits)
            resumed.extend(Settled(w.task_id, w.tenant_id, w.restored, w.timed) for w in waited)
            for w in waited:
                if w.worker_id is not None and w.attempt is not None:
                    running[w.task_id] = (w.worker_id, w.attempt)
            self.fired += len(waited)
            self.restored += await resume(tx, out, resumed)
        for task_id, (worker_id, attempt) in running.items():
            by_worker.setdefault(worker_id, []).append((task_id, attempt))
        if by_worker:
            # The settled entries themselves: the bodies resume without re-reading.
            await self._wakes.deliver(by_worker, entries)
        if len(due) >= _BATCH:
            return 0.0
        nxt = await store.next_durable_wake_at(self._db, NoParams())
        if nxt is None or nxt["wake_at"] is None:
            return self._interval
        left = (nxt["wake_at"] - datetime.now(UTC)).total_seconds()
        return float(max(0.005, min(self._interval, left)))
