"""Scheduler: turns queued attempts into assignments on workers, applying every policy.

The design — what is held in memory and what in Postgres, how one round decides for a
batch, and what happens with two replicas — is in ``docs/scheduler.md``. In short, a round
per tenant is: admission of runs waiting for concurrency slots (:mod:`.admission`), then
one transaction that claims ready queue items (``FOR UPDATE SKIP LOCKED``), checks rate
limits (sliding windows, :mod:`.rate_limits`) under their row locks, places each item on a
worker in memory (slot pool and cost, required and weighted labels, sticky and desired
workers; :mod:`.placement`), defers what cannot run now, and writes the assignments in one
statement; after the commit each worker gets its assignments as one message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from stoker._core.wire import TaskConfig
from stoker._proto import engine_pb2 as pb
from stoker.db import Executor, NoParams, int_array
from stoker.db.store import queue as queue_store
from stoker.db.store import rate_limits as rate_limit_store
from stoker.engine import metrics, tracing
from stoker.engine.attempts import AttemptEnd, Attempts
from stoker.engine.definitions import Definitions
from stoker.engine.dispatcher import Dispatcher
from stoker.engine.dispatcher.conns import WorkerConn
from stoker.engine.scheduler.admission import admit
from stoker.engine.scheduler.placement import pick, stuck
from stoker.engine.scheduler.rate_limits import Plan, SlidingWindow, from_us, to_us
from stoker.engine.service import LoopService
from stoker.engine.signals import Signals

log = logging.getLogger("stoker.engine.scheduler")

# After this many assignments (each deletes a queue item) the scheduler vacuums the queue
# tables itself, at most once per VACUUM_INTERVAL_S; see docs/performance.md.
VACUUM_AFTER_DELETES = 20_000
VACUUM_INTERVAL_S = 2.0

# Engine-side execution timeouts fire this long after the worker's own, so the worker's
# report (with its traceback) normally wins.
TIMEOUT_GRACE_MS = 1000

_DEFAULT = TaskConfig()


@dataclass(slots=True)
class _Limits:
    """The rate limits one round holds locked, at the round's instant ``now_us``."""

    now_us: int
    windows: dict[str, SlidingWindow]
    plans: dict[str, Plan] = field(default_factory=dict)


@dataclass(slots=True)
class _Round:
    """What one round decided for one tenant."""

    chosen: list[tuple[queue_store.ClaimedItem, WorkerConn, TaskConfig]] = field(
        default_factory=list
    )
    deferred: dict[int, datetime] = field(default_factory=dict)
    consumed: set[str] = field(default_factory=set)


class Scheduler(LoopService):
    """Assigns queued attempts to workers in batches."""

    name = "scheduler"

    def __init__(
        self,
        db: Executor,
        signals: Signals,
        dispatcher: Dispatcher,
        attempts: Attempts,
        definitions: Definitions,
        *,
        batch: int,
        poll_s: float,
        defer_ms: int,
    ) -> None:
        super().__init__()
        self._db = db
        self._dispatcher = dispatcher
        self._attempts = attempts
        self._definitions = definitions
        self._run_signals = signals
        self._batch = batch
        self._poll_s = poll_s
        self._defer = timedelta(milliseconds=defer_ms)
        self._signal = self.signal()
        self.rounds = 0
        self._deletes = 0
        self._vacuumed_at = 0.0
        self._vacuum: asyncio.Task[None] | None = None
        # Runs became ready (here or on another replica), or capacity changed here.
        signals.on_queued(self.wake)
        signals.on_capacity(self.wake)

    def wake(self, *_: object) -> None:
        """Asks for a scheduling round soon (safe to call often)."""
        self._signal.set()

    async def run(self) -> None:
        try:
            await self._rounds()
        finally:
            if self._vacuum is not None:
                await asyncio.gather(self._vacuum, return_exceptions=True)

    async def _rounds(self) -> None:
        again = True
        while not self.stopping.is_set():
            polled = False
            if not again:
                polled = not await self._signal.wait(self._poll_s)
            again = False
            # Admission: tenants that got gated runs, plus, on a poll, every tenant with
            # workers and concurrency limits (gated runs may come from another replica).
            probe = set()
            if polled:
                for tenant_id in self._dispatcher.conns_with_free_slots():
                    defs = await self._definitions.tasks(tenant_id)
                    if any(cfg.concurrency for cfg in defs.values()):
                        probe.add(tenant_id)
            for tenant_id in sorted(self._run_signals.gated() | probe):
                args = (self._db, self._run_signals, self._dispatcher, self._attempts, tenant_id)
                if not await admit(*args):
                    self._run_signals.ungate(tenant_id)
                else:
                    self._run_signals.gate([tenant_id])
            if self._dispatcher.backlogged:
                await self._signal.wait(0.05)
                again = True
                continue
            for tenant_id, conns in self._dispatcher.conns_with_free_slots().items():
                with (
                    metrics.SCHEDULER_ROUND.time(),
                    tracing.span("stoker.scheduler.round", tenant_id=tenant_id),
                ):
                    again |= await self.schedule_tenant(tenant_id, conns)
            self.rounds += 1

    async def schedule_tenant(self, tenant_id: int, conns: list[WorkerConn]) -> bool:
        """One round for one tenant; True when some queue filled its whole batch."""
        defs = await self._definitions.tasks(tenant_id)
        capacity: Counter[str] = Counter()
        for conn in conns:
            for name in conn.task_names:
                cfg = defs.get(name, _DEFAULT)
                capacity[name] += conn.free(cfg.durable) // cfg.slot_cost
        queues = sorted(q for q, n in capacity.items() if n > 0)
        if queues:  # a paused task's runs stay queued (app.tasks.pause)
            paused = await self._definitions.paused_queues(tenant_id)
            queues = [q for q in queues if q not in paused]
        if not queues:
            return False
        limits = [min(self._batch, capacity[q]) for q in queues]
        async with self._db.transaction() as tx:
            items = await queue_store.claim_queue_items(
                tx, queue_store.ClaimQueueItems(tenant_id, queues, limits)
            )
            if not items:
                return False
            rate = await self._lock_limits(tx, tenant_id, items)
            decided = self._decide(items, conns, defs, rate)
            if decided.consumed and rate is not None:
                keys = sorted(decided.consumed)
                recents = [rate.windows[k].dump() for k in keys]
                clock = from_us(rate.now_us)
                await rate_limit_store.consume_rate_limits(
                    tx, rate_limit_store.ConsumeRateLimits(tenant_id, keys, recents, clock)
                )
            if decided.deferred:
                ids = list(decided.deferred)
                await queue_store.defer_queue_items(
                    tx, queue_store.DeferQueueItems(ids, [decided.deferred[i] for i in ids])
                )
                # Come back when the first deferred item is due, not at the next poll.
                due = min(decided.deferred.values()) - datetime.now().astimezone()
                loop = asyncio.get_running_loop()
                loop.call_later(max(0.0, due.total_seconds()) + 0.005, self.wake)
            rows: list[queue_store.Assignment] = []
            if decided.chosen:
                try:
                    rows = await queue_store.assign_queue_items(
                        tx,
                        queue_store.AssignQueueItems(
                            int_array(i["id"] for i, _, _ in decided.chosen),
                            int_array(i["task_id"] for i, _, _ in decided.chosen),
                            int_array(i["attempt"] for i, _, _ in decided.chosen),
                            int_array(c.worker_id for _, c, _ in decided.chosen),
                            TIMEOUT_GRACE_MS,
                            from_us(rate.now_us) if rate and decided.consumed else None,
                        ),
                    )
                except BaseException:
                    for item, conn, _ in decided.chosen:
                        conn.unhold(item["task_id"], item["attempt"])
                    raise
        with tracing.span("stoker.dispatch", tenant_id=tenant_id, assignments=len(rows)):
            await self._push(rows, decided)
        metrics.assigned(tenant_id, (r["task_name"] for r in rows))
        self._deletes += len(rows)
        self._maybe_vacuum()
        claimed = Counter(i["queue"] for i in items)
        return any(claimed[q] >= lim for q, lim in zip(queues, limits, strict=True))

    def _maybe_vacuum(self) -> None:
        """Starts a background vacuum of the queue tables after many deletes."""
        now = time.monotonic()
        if (
            self._deletes < VACUUM_AFTER_DELETES
            or now - self._vacuumed_at < VACUUM_INTERVAL_S
            or (self._vacuum is not None and not self._vacuum.done())
        ):
            return
        self._deletes, self._vacuumed_at = 0, now
        self._vacuum = asyncio.create_task(self._run_vacuum(), name="stoker-vacuum-queue")

    async def _run_vacuum(self) -> None:
        try:
            await queue_store.vacuum_queue(self._db, NoParams())
        except Exception:
            log.warning("vacuuming the queue tables failed", exc_info=True)

    async def _lock_limits(
        self, tx: Executor, tenant_id: int, items: list[queue_store.ClaimedItem]
    ) -> _Limits | None:
        """Locks the limits the items name and fixes the round's instant: the latest of
        the database clock and every locked limit's own clock, so that no limit is ever
        consumed at an instant before one it was already consumed at."""
        keys = sorted({r["key"] for i in items for r in _limits(i)})
        if not keys:
            return None
        rows = await rate_limit_store.lock_rate_limits(
            tx, rate_limit_store.LockRateLimits(tenant_id, keys)
        )
        if not rows:
            return _Limits(to_us(datetime.now(UTC)), {})
        now_us = max(max(to_us(r["now"]), to_us(r["clock"])) for r in rows)
        windows = {}
        for r in rows:
            window = SlidingWindow.load(
                r["limit_value"], r["window_ms"], r["recent"], to_us(r["clock"])
            )
            window.advance(now_us)
            windows[r["key"]] = window
        return _Limits(now_us, windows)

    def _decide(
        self,
        items: list[queue_store.ClaimedItem],
        conns: list[WorkerConn],
        defs: dict[str, TaskConfig],
        limits: _Limits | None,
    ) -> _Round:
        decided = _Round()
        now = datetime.now().astimezone()
        connected = self._dispatcher.conns_of(conns[0].tenant_id) if conns else []
        for item in items:
            cfg = defs.get(item["queue"], _DEFAULT)
            conn = pick(conns, item, cfg)
            if conn is None:
                if stuck(connected, item, cfg):
                    decided.deferred[item["id"]] = now + self._defer
                continue
            wants = _limits(item)
            if wants:
                assert limits is not None
                windows = limits.windows
                blocked = [
                    r
                    for r in wants
                    if (w := windows.get(r["key"])) is None or not w.fits(r["units"])
                ]
                if blocked:
                    decided.deferred[item["id"]] = _rate_limited_until(limits, blocked)
                    metrics.rate_limited(conn.tenant_id, (item["queue"],))
                    continue
                for r in wants:
                    windows[r["key"]].take(r["units"])
                    decided.consumed.add(r["key"])
            conn.hold(
                item["task_id"],
                item["attempt"],
                cfg.slot_cost,
                cfg.durable,
                task_name=item["queue"],
                ready_at=item["available_at"].timestamp(),
            )
            decided.chosen.append((item, conn, cfg))
        return decided

    async def _push(self, rows: list[queue_store.Assignment], decided: _Round) -> None:
        by_task = {i["task_id"]: (c, cfg) for i, c, cfg in decided.chosen}
        plan: dict[WorkerConn, list[pb.Assignment]] = {}
        for r in rows:
            conn, cfg = by_task[r["task_id"]]
            plan.setdefault(conn, []).append(
                pb.Assignment(
                    task_id=r["task_id"],
                    attempt=r["attempt"],
                    run_id=str(r["external_id"]),
                    task_name=r["task_name"],
                    input=r["input"].encode(),
                    additional_metadata=r["additional_metadata"].encode(),
                    retry_count=r["retry_count"],
                    execution_timeout_ms=r["execution_timeout_ms"],
                    slot_cost=cfg.slot_cost,
                    durable=cfg.durable,
                    max_attempts=r["max_retries"] + 1,
                    parent_run_id=str(r["parent_run_id"] or ""),
                    child_index=r["child_index"] or 0,
                    child_key=r["child_key"] or "",
                    workflow_run_id=str(r["workflow_run_id"] or ""),
                    filter_payload=(r["filter_payload"] or "").encode(),
                )
            )
        lost: list[AttemptEnd] = []
        for conn, msgs in plan.items():
            if not self._dispatcher.deliver(conn, msgs):
                lost += [
                    AttemptEnd.lost(
                        m.task_id,
                        m.attempt,
                        "ASSIGNMENT_LOST",
                        "the worker disconnected before the assignment reached it",
                    )
                    for m in msgs
                ]
        if lost:
            await self._attempts.end(lost)


def _rate_limited_until(limits: _Limits, blocked: list[dict[str, Any]]) -> datetime:
    """Until when a run over some of its rate limits steps aside: the instant each limit
    could take its units behind the runs of this round already turned away by it (see
    :class:`.rate_limits.Plan`), the latest of those. A limit it can never fit (units over
    the limit, or a limit gone) is tried again after a window, or at once when
    ``put_rate_limit`` changes it."""
    until = limits.now_us
    for r in blocked:
        window = limits.windows.get(r["key"])
        if window is None:
            until = max(until, limits.now_us + 1_000_000)
            continue
        plan = limits.plans.get(r["key"])
        if plan is None:
            plan = limits.plans[r["key"]] = Plan(window.copy())
        at = plan.reserve(r["units"])
        until = max(until, at if at is not None else limits.now_us + window.window_us)
    return from_us(until)


def _limits(item: queue_store.ClaimedItem) -> list[dict[str, Any]]:
    raw = item.get("rate_limits")
    return json.loads(raw) if raw else []
