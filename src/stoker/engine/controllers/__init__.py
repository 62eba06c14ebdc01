"""Controllers: the engine's upkeep, run by the one replica that holds the leader lease.

Every ``controller_interval_s`` the leader:

* cancels queued attempts past their schedule timeout;
* fails attempts past their execution timeout (a retryable failure that uses up a retry)
  and tells their workers to stop them;
* declares dead the workers whose last heartbeat is older than ``worker_dead_after_s`` and
  requeues their attempts as new attempts (not counted against retries, bounded by
  ``max_requeues``). Time the upkeep could not reach the database does not count against
  a worker: the first round that succeeds after the engine started, or after a round failed
  (a Postgres outage or restart, during which no heartbeat could be recorded), counts every
  live worker as heard from then, if this replica leads. So workers that lost their stream
  to an engine restart, or whose heartbeats failed during an outage, get one full
  ``worker_dead_after_s`` to come back.

Leadership is a row in ``lease`` renewed every interval and expiring after ``lease_ttl_s``:
if the leader dies, another replica takes over once the lease expires.
"""

from __future__ import annotations

import json
import logging
import time

from stoker.db import Executor, NoParams
from stoker.db.store import leases as lease_store
from stoker.db.store import tasks as task_store
from stoker.db.store import workers as worker_store
from stoker.engine import notify
from stoker.engine.attempts import AttemptEnd, Attempts
from stoker.engine.dispatcher import Dispatcher
from stoker.engine.service import LoopService

log = logging.getLogger("stoker.engine.controllers")

LEADER_LEASE = "leader"
_BATCH = 1000


_SCHEDULE_TIMEOUT_ERROR = json.dumps(
    {
        "type": "ScheduleTimeoutError",
        "message": "no worker took the task before its schedule timeout",
        "traceback": "",
    }
)


class Controllers(LoopService):
    """Timeouts, worker liveness and leadership."""

    name = "controllers"

    def __init__(
        self,
        db: Executor,
        dispatcher: Dispatcher,
        attempts: Attempts,
        *,
        engine_id: str,
        interval_s: float,
        worker_dead_after_s: float,
        lease_ttl_s: float,
    ) -> None:
        super().__init__()
        self._db = db
        self._dispatcher = dispatcher
        self._attempts = attempts
        self._engine_id = engine_id
        self._interval = interval_s
        self._dead_after_s = worker_dead_after_s
        self._lease_ttl_ms = int(lease_ttl_s * 1000)
        self._lease_renewed_at = -1e9
        # Set at every (re)start of the loop, cleared by the first round that succeeds.
        self._forgive = True
        self.is_leader = False

    async def run(self) -> None:
        # A restart follows a failed round: heartbeats may have gone unrecorded meanwhile.
        self._forgive = True
        try:
            while not self.stopping.is_set():
                # The lease is renewed three times per TTL; upkeep runs every interval.
                if time.monotonic() - self._lease_renewed_at >= self._lease_ttl_ms / 3000:
                    await self._hold_lease()
                if self.is_leader:
                    if self._forgive:
                        await worker_store.forgive_missed_heartbeats(self._db, NoParams())
                    await self.tick()
                self._forgive = False
                if await self.sleep(self._interval):
                    break
        finally:
            if self.is_leader:
                self.is_leader = False
                self._lease_renewed_at = -1e9  # a restarted loop asks for the lease at once
                await lease_store.release_lease(
                    self._db, lease_store.ReleaseLease(LEADER_LEASE, self._engine_id)
                )

    async def _hold_lease(self) -> bool:
        row = await lease_store.acquire_lease(
            self._db, lease_store.AcquireLease(LEADER_LEASE, self._engine_id, self._lease_ttl_ms)
        )
        leader = row is not None
        self._lease_renewed_at = time.monotonic() if leader else -1e9
        if leader != self.is_leader:
            log.info("engine %s %s leadership", self._engine_id, "took" if leader else "lost")
        self.is_leader = leader
        return leader

    async def tick(self) -> None:
        """One round of upkeep: one read says what is due, then only that is done."""
        due = await lease_store.upkeep_due(
            self._db, lease_store.UpkeepDue(int(self._dead_after_s * 1000))
        )
        assert due is not None
        if due["schedule_timeouts"]:
            await self._expire_schedule_timeouts()
        if due["execution_timeouts"]:
            await self._expire_execution_timeouts()
        if due["dead_workers"]:
            await self._reap_dead_workers()

    async def _expire_schedule_timeouts(self) -> None:
        rows = await task_store.expire_schedule_timeouts(
            self._db, task_store.ExpireScheduleTimeouts(_BATCH, _SCHEDULE_TIMEOUT_ERROR)
        )
        if rows:
            log.info("%d queued tasks passed their schedule timeout", len(rows))
            self._attempts.watcher.finished(r["external_id"] for r in rows)
            tenants = {int(r["tenant_id"]) for r in rows}
            await notify.send(self._db, notify.FINISHED, tenants, self._engine_id)

    async def _expire_execution_timeouts(self) -> None:
        rows = await task_store.expired_runtimes(self._db, task_store.ExpiredRuntimes(_BATCH))
        if not rows:
            return
        ended = await self._attempts.end(
            [AttemptEnd.timed_out(r["task_id"], r["attempt"]) for r in rows]
        )
        by_worker: dict[int, list[tuple[int, int, str]]] = {}
        for r in ended:
            by_worker.setdefault(r["worker_id"], []).append(
                (r["id"], r["attempt"], "execution timeout")
            )
        for worker_id, items in by_worker.items():
            await self._dispatcher.cancel(worker_id, items)

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
