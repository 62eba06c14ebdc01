"""The DAG sweeper: fires due sleeps and re-progresses stalled workflow runs (leader only).

Every ``interval_s`` (and sooner when the next sleep is due earlier) the leader:

* fires the sleeps that have elapsed (:class:`~stoker.engine.flows.conditions.Conditions`)
  and progresses their runs, up to ``_SWEEP_BATCH`` runs per round (a full batch sweeps
  again at once);
* re-progresses runs with nothing queued or running and nothing to wait for (``stalled_dags``):
  the runs whose steps ended by a path without the DAG hook (schedule timeouts, concurrency
  cancellations) or whose progression was lost
  (:class:`~stoker.engine.flows.progression.Progression` is idempotent).

Runs are swept in batches; one run whose progression fails is split off
(:func:`stoker.engine.faults.isolate`) so that it cannot hold up every run swept with it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime

from stoker.db import Executor
from stoker.db.store import dags as dag_store
from stoker.engine import faults
from stoker.engine.controllers.leadership import Leadership
from stoker.engine.flows.conditions import Conditions
from stoker.engine.flows.progression import Progression
from stoker.engine.service import LoopService

log = logging.getLogger("stoker.engine.dags")

_SWEEP_BATCH = 500


class Sweeper(LoopService):
    """Fires due sleeps and re-progresses stalled runs, on the leader."""

    name = "sweeper"

    def __init__(
        self,
        db: Executor,
        conditions: Conditions,
        progression: Progression,
        leadership: Leadership,
        *,
        interval_s: float,
    ) -> None:
        super().__init__()
        self._db = db
        self._conditions = conditions
        self._progression = progression
        self._leadership = leadership
        self._interval = interval_s
        self._wake = self.signal()
        self.sweeps = 0

    def wake(self) -> None:
        """A new sleep was registered: the sweeper re-reads when the next one is due."""
        self._wake.set()

    async def run(self) -> None:
        while not self.stopping.is_set():
            delay = self._interval
            if self._leadership.is_leader:
                delay = await self.sweep()
            await self._wake.wait(delay)

    async def sweep(self) -> float:
        """Fires due sleeps and re-progresses stalled runs; returns seconds to the next due
        sleep (at most the interval)."""
        self.sweeps += 1
        fired = await self._conditions.due_sleeps(_SWEEP_BATCH)
        if fired:
            await self._isolated(sorted(set(fired)), self._conditions.fire)
        stalled = await dag_store.stalled_dags(self._db, dag_store.StalledDags(_SWEEP_BATCH))
        if stalled:
            await self._isolated([int(r["id"]) for r in stalled], self._progression.progress_now)
        if len(fired) >= _SWEEP_BATCH:
            return 0.0
        fire_at = await self._conditions.next_sleep()
        if fire_at is None:
            return self._interval
        left = (fire_at - datetime.now(UTC)).total_seconds()
        return float(max(0.01, min(self._interval, left)))

    async def _isolated(
        self, dag_ids: list[int], step: Callable[[Iterable[int]], Awaitable[None]]
    ) -> None:
        result = await faults.isolate(dag_ids, step, what="progressing workflow runs")
        for dag_id, exc in result.failed:
            log.error("workflow run %d cannot progress: %s", dag_id, exc)
        if result.outage is not None:
            raise result.outage
