"""Scheduler: turns queued attempts into assignments on workers with free slots.

A round, per tenant that has connected workers with free slots:

1. From the dispatcher's in-memory view, compute each queue's capacity (a queue is a task
   name): the free slots of the workers that run that task, capped at ``scheduler_batch``.
2. ``claim_queue_items`` locks up to that many ready items per queue in one statement
   (priority first, FIFO within a priority; ``FOR UPDATE SKIP LOCKED``, so replicas never
   take the same item).
3. Decide in memory: each item goes to the worker running its task that has the most free
   slots (which spreads load), reserving the slot at once.
4. ``assign_queue_items`` deletes the assigned items, marks their tasks ASSIGNED and writes
   their ``task_runtime`` rows, in the same transaction as the claim; items that found no
   slot are released by the commit.
5. After the commit, push each worker its assignments as one message.

Rounds are triggered by signals (new runs from ingest, slots freed by completions, retries
requeued) and otherwise by a poll every ``scheduler_poll_s`` seconds that also picks up
delayed retries, scheduled runs and runs inserted by another engine replica. A round that
filled a whole batch is followed at once by another. An idle engine therefore costs one
cheap query per tenant with idle workers per poll interval.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from stoker._proto import engine_pb2 as pb
from stoker.db import Executor, Row
from stoker.engine.attempts import AttemptEnd, Attempts
from stoker.engine.dispatcher import Dispatcher, WorkerConn
from stoker.engine.service import LoopService, Signal

log = logging.getLogger("stoker.engine.scheduler")

# Engine-side execution timeouts fire this long after the worker's own, so the worker's
# report (with its traceback) normally wins.
TIMEOUT_GRACE_MS = 1000


@dataclass(frozen=True, slots=True)
class ClaimParams:
    tenant_id: int
    queues: list[str]
    limits: list[int]


@dataclass(frozen=True, slots=True)
class AssignParams:
    item_ids: list[int]
    task_ids: list[int]
    attempts: list[int]
    worker_ids: list[int]
    timeout_grace_ms: int


class Scheduler(LoopService):
    """Assigns queued attempts to workers in batches."""

    name = "scheduler"

    def __init__(
        self,
        db: Executor,
        dispatcher: Dispatcher,
        attempts: Attempts,
        *,
        batch: int,
        poll_s: float,
    ) -> None:
        super().__init__()
        self._db = db
        self._dispatcher = dispatcher
        self._attempts = attempts
        self._batch = batch
        self._poll_s = poll_s
        self._signal = Signal()
        self.rounds = 0

    def wake(self, *_: object) -> None:
        """Asks for a scheduling round soon (safe to call often)."""
        self._signal.set()

    async def run(self) -> None:
        again = True
        while not self.stopping.is_set():
            if not again:
                await self._signal.wait(self._poll_s)
            again = False
            for tenant_id, conns in self._dispatcher.conns_with_free_slots().items():
                again |= await self.schedule_tenant(tenant_id, conns)
            self.rounds += 1

    async def schedule_tenant(self, tenant_id: int, conns: list[WorkerConn]) -> bool:
        """One round for one tenant; True when a queue filled its whole batch."""
        capacity: dict[str, int] = {}
        for conn in conns:
            for name in conn.task_names:
                capacity[name] = min(self._batch, capacity.get(name, 0) + conn.free_slots)
        if not capacity:
            return False
        queues = sorted(capacity)
        plan: dict[WorkerConn, list[Row]] = {}
        async with self._db.transaction() as tx:
            items = await tx.fetch(
                "claim_queue_items",
                ClaimParams(tenant_id, queues, [capacity[q] for q in queues]),
            )
            if not items:
                return False
            chosen: list[tuple[Row, WorkerConn]] = []
            for item in items:
                target = _pick(conns, item["queue"])
                if target is None:
                    continue
                target.running[item["task_id"]] = item["attempt"]
                chosen.append((item, target))
            if not chosen:
                return False
            try:
                rows = await tx.fetch(
                    "assign_queue_items",
                    AssignParams(
                        [i["id"] for i, _ in chosen],
                        [i["task_id"] for i, _ in chosen],
                        [i["attempt"] for i, _ in chosen],
                        [c.worker_id for _, c in chosen],
                        TIMEOUT_GRACE_MS,
                    ),
                )
            except BaseException:
                for item, conn in chosen:
                    conn.running.pop(item["task_id"], None)
                raise
        by_worker = {c.worker_id: c for _, c in chosen}
        for row in rows:
            plan.setdefault(by_worker[row["worker_id"]], []).append(row)
        lost: list[AttemptEnd] = []
        for conn, assigned in plan.items():
            msgs = [
                pb.Assignment(
                    task_id=r["task_id"],
                    attempt=r["attempt"],
                    run_id=str(r["external_id"]),
                    task_name=r["task_name"],
                    input=r["input"].encode(),
                    additional_metadata=r["additional_metadata"].encode(),
                    retry_count=r["retry_count"],
                    execution_timeout_ms=r["execution_timeout_ms"],
                )
                for r in assigned
            ]
            if not self._dispatcher.deliver(conn, msgs):
                lost += [
                    AttemptEnd.lost(
                        r["task_id"],
                        r["attempt"],
                        "ASSIGNMENT_LOST",
                        "the worker disconnected before the assignment reached it",
                    )
                    for r in assigned
                ]
        if lost:
            await self._attempts.end(lost)
        claimed = Counter(i["queue"] for i in items)
        return any(claimed[q] >= capacity[q] for q in queues)


def _pick(conns: list[WorkerConn], queue: str) -> WorkerConn | None:
    best: WorkerConn | None = None
    for conn in conns:
        if queue in conn.task_names and not conn.closed and conn.free_slots > 0:
            if best is None or conn.free_slots > best.free_slots:
                best = conn
    return best
