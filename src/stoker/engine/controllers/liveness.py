"""Liveness: workers that stopped sending heartbeats (leader only).

Every ``interval_s`` the leader declares dead the workers whose last heartbeat is older
than ``worker_dead_after_s``, closes their streams if connected here, and requeues their
attempts as new attempts (not counted against retries, bounded by ``max_requeues``,
through :meth:`~stoker.engine.attempts.Attempts.end`).

Time the upkeep could not reach the database does not count against a worker: the first
round after this loop started or restarted (a restart follows a failed round), and the
first after the lease loop restarted (:attr:`Leadership.epoch
<stoker.engine.controllers.leadership.Leadership.epoch>`), count every live worker as heard
from then (``forgive_missed_heartbeats``), if this replica leads. So workers that lost
their stream to an engine restart, or whose heartbeats failed during a Postgres outage or
restart (no heartbeat could be recorded meanwhile), get one full ``worker_dead_after_s``
to come back.

Attempts held by a worker that is gone (stopped by a clean close, or dead) and silent for
``worker_dead_after_s`` are swept up too, every half of that: a clean close hands back what
its worker held, and the scheduler hands back an assignment it committed for a worker that
closed meanwhile, but either write can fail (a deadlock, an outage, the engine dying in
between), and nothing else would ever end such an attempt, since its worker sends no
heartbeat to miss. So no run stays ASSIGNED to a worker that left for much longer than a
dead-worker timeout.
"""

from __future__ import annotations

import logging
import time

from stoker.db import Executor, NoParams
from stoker.db.store import leases as lease_store
from stoker.db.store import tasks as task_store
from stoker.db.store import workers as worker_store
from stoker.engine.attempts import AttemptEnd, Attempts
from stoker.engine.controllers.leadership import Leadership
from stoker.engine.dispatcher import Dispatcher
from stoker.engine.service import LoopService

log = logging.getLogger("stoker.engine.controllers")

ORPHAN_BATCH = 1000
"""Attempts of gone workers requeued per transaction."""


class Liveness(LoopService):
    """Declares silent workers dead and requeues what they held, on the leader."""

    name = "liveness"

    def __init__(
        self,
        db: Executor,
        dispatcher: Dispatcher,
        attempts: Attempts,
        leadership: Leadership,
        *,
        interval_s: float,
        worker_dead_after_s: float,
    ) -> None:
        super().__init__()
        self._db = db
        self._dispatcher = dispatcher
        self._attempts = attempts
        self._leadership = leadership
        self._interval = interval_s
        self._dead_after_s = worker_dead_after_s
        # Set at every (re)start of this loop or of the lease loop, cleared by the next round.
        self._forgive = True
        self._epoch = 0
        self._sweep_at = 0.0  # when to look for attempts of workers that are gone
        self.orphans_requeued = 0

    async def run(self) -> None:
        # A restart follows a failed round: heartbeats may have gone unrecorded meanwhile.
        self._forgive = True
        while not self.stopping.is_set():
            if self._leadership.epoch != self._epoch:
                # The lease loop (re)started: its first round, which took the lease, counts
                # as this loop's first round after a failure.
                self._epoch = self._leadership.epoch
                self._forgive = True
            if self._leadership.is_leader:
                if self._forgive:
                    await worker_store.forgive_missed_heartbeats(self._db, NoParams())
                await self.tick()
            self._forgive = False
            if await self.sleep(self._interval):
                break

    async def tick(self) -> None:
        """One round: one read says whether some worker is overdue, then only that is done."""
        due = await lease_store.upkeep_due(
            self._db, lease_store.UpkeepDue(int(self._dead_after_s * 1000))
        )
        assert due is not None
        if due["dead_workers"]:
            await self._reap_dead_workers()
        now = time.monotonic()
        if now >= self._sweep_at:
            self._sweep_at = now + self._dead_after_s / 2
            await self.requeue_orphans()

    async def requeue_orphans(self) -> int:
        """Requeues the attempts still held by workers that are no longer ACTIVE (see the
        module docstring); returns how many were requeued."""
        total = 0
        while True:
            rows = await task_store.orphaned_runtimes(
                self._db,
                task_store.OrphanedRuntimes(int(self._dead_after_s * 1000), ORPHAN_BATCH),
            )
            if not rows:
                break
            ended = await self._attempts.end(
                [
                    AttemptEnd.lost(
                        r["task_id"],
                        r["attempt"],
                        "WORKER_LOST",
                        "the worker left without handing the attempt back",
                        reporter=r["worker_id"],
                    )
                    for r in rows
                ]
            )
            total += len(ended)
            if len(rows) < ORPHAN_BATCH or not ended:
                break
        if total:
            self.orphans_requeued += total
            log.warning("requeued %d attempts held by workers that are gone", total)
        return total

    async def _reap_dead_workers(self) -> None:
        dead = await worker_store.mark_dead_workers(
            self._db, worker_store.MarkDeadWorkers(int(self._dead_after_s * 1000))
        )
        if not dead:
            return
        ids = [int(r["id"]) for r in dead]
        log.warning(
            "declared %d workers dead: %s", len(ids), ", ".join(str(r["external_id"]) for r in dead)
        )
        self._dispatcher.drop_workers(ids)
        held = await task_store.runtimes_of_workers(self._db, task_store.RuntimesOfWorkers(ids))
        await self._attempts.end(
            [
                AttemptEnd.lost(
                    r["task_id"],
                    r["attempt"],
                    "WORKER_LOST",
                    "the worker stopped sending heartbeats",
                )
                for r in held
            ]
        )
