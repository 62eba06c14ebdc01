"""Evicting blocked durable tasks from this worker (docs/durable.md, "Slots, eviction and
restore").

A durable attempt is *blocked* when its body awaits pending waits and nothing else durable
is in flight (:attr:`stoker._sdk.durable.DurableLog.blocked`). The :class:`Evictor` looks
at the blocked attempts whenever one becomes blocked, and every ``TICK_S`` for the TTLs,
and asks the engine to evict, following each task's :class:`~stoker._sdk.durable.Eviction`:

* an attempt blocked for at least its ``ttl``;
* at once, one whose waits are all sleeps ending more than ``ttl`` from now;
* under capacity pressure (blocked attempts >= durable slots) with ``on_capacity``, the
  longest-blocked first, until fewer than the durable slots are blocked;
* when the worker stops, every blocked attempt, whatever its policy, so that it resumes
  on another worker when what it waits for happens instead of being handed back.

The engine may refuse (a resolution is on its way, or the task waits for nothing any
more): the attempt simply keeps running, and is asked about again only once it has seen a
newer settlement or ``RETRY_S`` later. An accepted eviction ends the attempt here at once
(:meth:`Runtime.evicted <stoker._sdk.worker.runtime.Runtime.evicted>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from stoker._proto import engine_pb2 as pb
from stoker._sdk.durable import DurableContext, DurableLog, DurableTask

if TYPE_CHECKING:
    from stoker._sdk.worker.runtime import Attempt, Runtime

log = logging.getLogger("stoker.worker")

TICK_S = 0.5
"""How often blocked attempts are looked at without a change (for the TTLs)."""

RETRY_S = 1.0
"""How long an attempt whose eviction was refused is left alone, unless it saw more."""


class Evictor:
    """Decides which blocked durable attempts of a worker to evict, and asks the engine."""

    def __init__(self, runtime: Runtime, durable_slots: int) -> None:
        self.runtime = runtime
        self.durable_slots = durable_slots
        self.stopping = False
        """The worker stops: evict every blocked attempt."""
        self.changed = asyncio.Event()
        self.asked = 0
        self.accepted = 0

    def poke(self) -> None:
        """Something changed (an attempt became blocked, the worker stops): look again."""
        self.changed.set()

    async def run(self) -> None:
        """Looks at the blocked attempts on every change and every TICK_S, forever."""
        while True:
            self.changed.clear()
            try:
                self.round()
            except Exception:  # a bug here must not stop the worker
                log.exception(
                    "worker %s: choosing durable tasks to evict failed", self.runtime.name
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), TICK_S)

    def round(self) -> int:
        """Asks for the evictions due now; returns how many were asked."""
        now = time.monotonic()
        blocked: list[tuple[Attempt, DurableLog]] = []
        for attempt in list(self.runtime.running.values()):
            ctx = attempt.ctx
            if isinstance(ctx, DurableContext) and ctx.journal.blocked and not ctx.journal.evicting:
                blocked.append((attempt, ctx.journal))
        if not blocked:
            return 0
        chosen: list[tuple[Attempt, DurableLog]] = []
        rest: list[tuple[Attempt, DurableLog]] = []
        for attempt, dlog in blocked:
            if not self._may_ask(dlog, now):
                continue
            policy = attempt.task.eviction if isinstance(attempt.task, DurableTask) else None
            if self.stopping:
                chosen.append((attempt, dlog))
            elif policy is None:
                continue
            elif now - dlog.blocked_since >= policy.ttl_s or dlog.only_timers_beyond(policy.ttl_s):
                chosen.append((attempt, dlog))
            elif policy.on_capacity:
                rest.append((attempt, dlog))
        # Capacity: while as many attempts are blocked as there are durable slots, the
        # longest-blocked go first, until one slot is left for work that can run.
        excess = len(blocked) - len(chosen) - self.durable_slots + 1
        if excess > 0 and rest:
            rest.sort(key=lambda pair: pair[1].blocked_since)
            chosen += rest[:excess]
        for attempt, dlog in chosen:
            self._ask(attempt, dlog)
        return len(chosen)

    @staticmethod
    def _may_ask(dlog: DurableLog, now: float) -> bool:
        if dlog.refused_at_seq is None:
            return True
        return dlog.seen_seq != dlog.refused_at_seq or now - dlog.refused_at >= RETRY_S

    def _ask(self, attempt: Attempt, dlog: DurableLog) -> None:
        self.asked += 1
        reply = dlog.evict()  # sent now, with what the log has seen at this instant

        def done(f: asyncio.Future[pb.DurableReply]) -> None:
            if not f.cancelled() and f.exception() is None and f.result().evicted:
                self.accepted += 1
                log.debug(
                    "worker %s: evicted %s (run %s)",
                    self.runtime.name,
                    attempt.task.name,
                    attempt.assignment.run_id,
                )

        reply.add_done_callback(done)
