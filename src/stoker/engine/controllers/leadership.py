"""Leadership: which replica runs the leader loops.

Leadership is a row in ``lease`` renewed three times per ``lease_ttl_s`` (checked every
``interval_s``) and expiring after ``lease_ttl_s``: if the leader dies, another replica
takes over once the lease expires. A replica that stops releases the lease at once.

One :class:`Leadership` per engine; every leader loop receives it and looks at
:attr:`Leadership.is_leader` before each round.
"""

from __future__ import annotations

import logging
import time

from stoker.db import Executor
from stoker.db.store import leases as lease_store
from stoker.engine.service import LoopService

log = logging.getLogger("stoker.engine.controllers")

LEADER_LEASE = "leader"


class Leadership(LoopService):
    """Holds the leader lease while it can; says whether this replica leads."""

    name = "leadership"

    def __init__(
        self, db: Executor, *, engine_id: str, interval_s: float, lease_ttl_s: float
    ) -> None:
        super().__init__()
        self._db = db
        self._engine_id = engine_id
        self._interval = interval_s
        self._lease_ttl_ms = int(lease_ttl_s * 1000)
        self._lease_renewed_at = -1e9
        self.is_leader = False
        """True while this replica holds the leader lease."""
        self.epoch = 0
        """Counts the loop's (re)starts, each once its first lease round succeeded. A
        restart follows a failed round (a Postgres outage or restart), during which
        heartbeats may have gone unrecorded (see :mod:`stoker.engine.controllers.liveness`)."""

    async def run(self) -> None:
        first = True
        try:
            while not self.stopping.is_set():
                if time.monotonic() - self._lease_renewed_at >= self._lease_ttl_ms / 3000:
                    await self._hold_lease()
                if first:
                    self.epoch += 1
                    first = False
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
