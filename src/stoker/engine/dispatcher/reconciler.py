"""Reconciliation: attempts in flight here that ended elsewhere are stopped on their workers.

A cancellation sent to another replica through ``stoker_cancel`` may be lost (a
notification is a hint). The :class:`Reconciler` covers that: a worker never keeps running
an attempt that ended (cancelled, timed out, requeued by the leader) for more than a few
seconds.
"""

from __future__ import annotations

import logging
import time

from stoker.db import Executor, int_array
from stoker.db.store import tasks as task_store
from stoker.engine.dispatcher import Dispatcher
from stoker.engine.service import LoopService

log = logging.getLogger("stoker.engine.dispatcher")


class Reconciler(LoopService):
    """Cancels attempts in flight on this replica's workers that ended elsewhere.

    Every ``interval_s``, if some attempt has been held here longer than ``min_age_s``
    (younger ones may not have committed their assignment yet), one query returns those
    whose ``task_runtime`` row is gone, and their workers are told to stop them. An idle
    replica, or one whose attempts are all young, issues no query.
    """

    name = "reconciler"

    def __init__(
        self, db: Executor, dispatcher: Dispatcher, *, interval_s: float, min_age_s: float = 2.0
    ) -> None:
        super().__init__()
        self._db = db
        self._dispatcher = dispatcher
        self._interval = interval_s
        self._min_age = min_age_s
        self.reconciled = 0

    async def run(self) -> None:
        while not await self.sleep(self._interval):
            await self.reconcile()

    async def reconcile(self) -> None:
        cutoff = time.monotonic() - self._min_age
        owner: dict[tuple[int, int], int] = {}
        for conn in self._dispatcher.open_conns():
            for task_id, held in conn.running.items():
                if held.since <= cutoff:
                    owner[(task_id, held.attempt)] = conn.worker_id
        if not owner:
            return
        pairs = sorted(owner)
        rows = await task_store.ended_attempts(
            self._db,
            task_store.EndedAttempts(
                int_array(t for t, _ in pairs), int_array(a for _, a in pairs)
            ),
        )
        ended: dict[int, list[tuple[int, int, str]]] = {}
        for r in rows:
            key = (int(r["task_id"]), int(r["attempt"]))
            ended.setdefault(owner[key], []).append((*key, "the attempt ended (cancelled)"))
        for worker_id, items in ended.items():
            self._dispatcher.cancel_here(worker_id, items)
            self.reconciled += len(items)
        if ended:
            log.info("stopped %d attempts that ended elsewhere", sum(map(len, ended.values())))
