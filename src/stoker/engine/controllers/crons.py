"""The crons controller: starts one run per cron tick (leader only).

Each round the leader locks the crons whose ``next_fire_at`` is due (``FOR UPDATE SKIP
LOCKED``, so a second leader overlapping briefly skips them), creates each tick's run
through ingest's write path, then advances ``next_fire_at`` with
:meth:`stoker._core.cron.Cron.next_after`, all before the transaction that holds the lock
commits. The run is created with the request key ``cron:<cron id>:<tick>``
(:mod:`stoker.engine.ingest.requests`): should two leaders still both fire one tick (one
read the row just before the other's commit), the second gets the first's run back
instead of a new one. Runs carry ``stoker_cron`` (the cron's name) and
``stoker_cron_tick`` (the tick, ISO 8601 UTC) in their additional metadata.

Catch-up policy ``none``: a tick more than ``MISFIRE_GRACE`` late (the engine was down,
or no replica was leader) is not fired; the cron moves to its next future tick. A tick
missed by a leader failover shorter than the grace still fires, late.

The loop sleeps until the earliest ``next_fire_at``, at most ``interval_s``, so a cron
registered meanwhile (through any replica) is seen within that time.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

from stoker._core import cron
from stoker.db import Executor
from stoker.db.store import NoParams
from stoker.db.store import crons as cron_store
from stoker.engine.controllers.leadership import Leadership
from stoker.engine.ingest import Ingest
from stoker.engine.ingest.requests import RequestKey
from stoker.engine.ingest.tasks import TriggerInput
from stoker.engine.service import LoopService
from stoker.errors import StokerError

log = logging.getLogger("stoker.engine.crons")

MISFIRE_GRACE = timedelta(seconds=10)
"""How late a tick may still fire (a failover, a slow round); older ticks are skipped."""

_BATCH = 500


class Crons(LoopService):
    """Fires due cron ticks, on the leader."""

    name = "crons"

    def __init__(
        self, db: Executor, ingest: Ingest, leadership: Leadership, *, interval_s: float
    ) -> None:
        super().__init__()
        self._db = db
        self._ingest = ingest
        self._leadership = leadership
        self._interval = interval_s
        self._wake = self.signal()
        self.fired = 0

    async def run(self) -> None:
        while not self.stopping.is_set():
            delay = self._interval
            if self._leadership.is_leader:
                delay = await self.tick()
            await self._wake.wait(delay)

    async def tick(self) -> float:
        """Fires the due ticks; returns seconds to the next one (at most the interval)."""
        async with self._db.transaction() as tx:
            due = await cron_store.due_crons(tx, cron_store.DueCrons(_BATCH))
            now = datetime.now(UTC)
            # The runs first, together (one ingest flush); only then are the ticks advanced,
            # in this transaction: a crash in between leaves the ticks due, and the next
            # leader's request keys find the runs already made.
            await asyncio.gather(
                *(self._start_run(r) for r in due if now - r["next_fire_at"] <= MISFIRE_GRACE)
            )
            for row in due:
                await cron_store.advance_cron(
                    tx, cron_store.AdvanceCron(row["id"], row["next_fire_at"], _following(row, now))
                )
        if len(due) >= _BATCH:
            return 0.0
        earliest = await cron_store.next_cron_fire(self._db, NoParams())
        fire_at = earliest["fire_at"] if earliest else None
        if fire_at is None:
            return self._interval
        left = (fire_at - datetime.now(UTC)).total_seconds()
        return float(max(0.0, min(self._interval, left)))

    async def _start_run(self, row: cron_store.DueCron) -> None:
        tick: datetime = row["next_fire_at"]
        tick_iso = tick.astimezone(UTC).isoformat()
        item = TriggerInput(
            row["task_name"],
            json.dumps(row["input"]).encode(),
            json.dumps({"stoker_cron": row["name"], "stoker_cron_tick": tick_iso}).encode(),
        )
        key = f"cron:{row['id']}:{tick_iso}"
        request = RequestKey.of(key, "cron", key.encode() + b"\0" + item.input)
        try:
            await self._ingest.trigger(row["tenant_id"], [item], request)
        except StokerError as exc:  # this cron's run is refused: the others still fire
            log.error("cron %r: the run of tick %s is refused: %s", row["name"], tick_iso, exc)
            return
        self.fired += 1


def _following(row: cron_store.DueCron, now: datetime) -> datetime | None:
    """The cron's tick after this one; past the grace, the next future one (catch-up
    ``none``: missed ticks are skipped). None: the cron cannot be read (stored before a
    parser change) and stops, with an error in the log."""
    tick = row["next_fire_at"]
    if now - tick > MISFIRE_GRACE:
        log.warning("cron %r: tick %s missed (catch-up: none)", row["name"], tick)
    try:
        parsed = cron.parse(row["expression"], row["timezone"])
    except cron.CronError as exc:
        log.error("cron %r cannot be read, it stops: %s", row["name"], exc)
        return None
    following = parsed.next_after(tick)
    if following is not None and now - following > MISFIRE_GRACE:
        following = parsed.next_after(now)
    return following
