"""Timeouts: attempts that waited or ran too long (leader only).

Every ``interval_s`` the leader reads what is due (``upkeep_due``: one cheap read) and:

* cancels queued attempts past their schedule timeout (the run is CANCELLED with a
  ``ScheduleTimeoutError``; a DAG step so cancelled is progressed by the sweeper);
* fails attempts past their execution timeout (a retryable failure that uses up a retry,
  through :meth:`~stoker.engine.attempts.Attempts.end`) and tells their workers to stop
  them.
"""

from __future__ import annotations

import json
import logging

from stoker.db import Executor
from stoker.db.store import leases as lease_store
from stoker.db.store import tasks as task_store
from stoker.engine import notify
from stoker.engine.attempts import AttemptEnd, Attempts
from stoker.engine.controllers.leadership import Leadership
from stoker.engine.dispatcher import Dispatcher
from stoker.engine.service import LoopService

log = logging.getLogger("stoker.engine.controllers")

_BATCH = 1000


_SCHEDULE_TIMEOUT_ERROR = json.dumps(
    {
        "type": "ScheduleTimeoutError",
        "message": "no worker took the task before its schedule timeout",
        "traceback": "",
    }
)


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
        engine_id: str,
        interval_s: float,
        worker_dead_after_s: float,
    ) -> None:
        super().__init__()
        self._db = db
        self._dispatcher = dispatcher
        self._attempts = attempts
        self._leadership = leadership
        self._engine_id = engine_id
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
