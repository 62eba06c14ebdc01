"""Timeouts: attempts that waited or ran too long (leader only).

Every ``interval_s`` the leader reads what is due (``upkeep_due``: one cheap read) and:

* cancels queued attempts past their schedule timeout (the run is CANCELLED with a
  ``ScheduleTimeoutError``, through
  :meth:`~stoker.engine.attempts.Attempts.expire_schedule_timeouts`; a DAG step so
  cancelled is progressed by the sweeper);
* fails attempts past their execution timeout (a retryable failure that uses up a retry,
  through :meth:`~stoker.engine.attempts.Attempts.end`) and tells their workers to stop
  them;
* fails durable runs past their whole-run ``timeout`` (evicted, queued or running; not
  retried, through :meth:`~stoker.engine.attempts.Attempts.expire_durable_runs`) and
  tells the workers of those running to stop them. A durable attempt's execution
  deadline is cleared while it is blocked, so it counts only time spent running.
"""

from __future__ import annotations

import logging

from stoker.db import Executor
from stoker.db.store import leases as lease_store
from stoker.db.store import tasks as task_store
from stoker.engine.attempts import AttemptEnd, Attempts, stops
from stoker.engine.controllers.leadership import Leadership
from stoker.engine.dispatcher import Dispatcher
from stoker.engine.service import LoopService

log = logging.getLogger("stoker.engine.controllers")

_BATCH = 1000


class Timeouts(LoopService):
    """Expires schedule and execution timeouts, on the leader."""

    name = "timeouts"

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
        self._dead_after_s = worker_dead_after_s  # a parameter of the shared upkeep read

    async def run(self) -> None:
        while not self.stopping.is_set():
            if self._leadership.is_leader:
                await self.tick()
            if await self.sleep(self._interval):
                break

    async def tick(self) -> None:
        """One round: one read says what is due, then only that is done."""
        due = await lease_store.upkeep_due(
            self._db, lease_store.UpkeepDue(int(self._dead_after_s * 1000))
        )
        assert due is not None
        if due["schedule_timeouts"]:
            await self._expire_schedule_timeouts()
        if due["execution_timeouts"]:
            await self._expire_execution_timeouts()
        await self._expire_durable_runs()

    async def _expire_durable_runs(self) -> None:
        rows = await self._attempts.expire_durable_runs(_BATCH)
        if not rows:
            return
        log.info("%d durable runs passed their whole-run timeout", len(rows))
        for worker_id, items in stops(rows, "whole-run timeout").items():
            await self._dispatcher.cancel(worker_id, items)

    async def _expire_schedule_timeouts(self) -> None:
        expired = await self._attempts.expire_schedule_timeouts(_BATCH)
        if expired:
            log.info("%d queued tasks passed their schedule timeout", expired)

    async def _expire_execution_timeouts(self) -> None:
        rows = await task_store.expired_runtimes(self._db, task_store.ExpiredRuntimes(_BATCH))
        if not rows:
            return
        ended = await self._attempts.end(
            [AttemptEnd.timed_out(r["task_id"], r["attempt"]) for r in rows]
        )
        for worker_id, items in stops(ended, "execution timeout").items():
            await self._dispatcher.cancel(worker_id, items)
