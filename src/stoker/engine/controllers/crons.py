"""The crons controller: starts the runs of cron ticks (leader only).

Each round the leader locks the crons whose ``next_fire_at`` is due, or that hold a
buffered tick (``FOR UPDATE SKIP LOCKED``, so a second leader overlapping briefly skips
them), decides what each does (:func:`stoker._core.cron.plan` for the missed-tick rule,
then the overlap policy), starts the runs through ingest or the workflow ingest
(:class:`~stoker.engine.crons.CronRuns`, request key ``cron:<cron id>:<tick>``: should two
leaders still both fire one tick, the second gets the first's run back), records each
tick's outcome in ``cron_fire`` and advances ``next_fire_at``, all before the transaction
that holds the lock commits. Runs carry ``stoker_cron`` (the cron's name) and
``stoker_cron_tick`` (the tick, ISO 8601 UTC) in their additional metadata.

Missed ticks: a tick at most ``MISFIRE_GRACE`` late (a leader failover, a slow round) still
fires. An older one was missed by a downtime: with catch-up ``none`` (the default) it does
not fire; with a catch-up window and max, the newest missed ticks inside the window fire,
at most max of them.

Overlap, when the cron's previous run (``cron.last_run_id``: the newest run it started on
a tick or with trigger_now) has not ended: ``allow`` starts the tick's run anyway; ``skip``
records the tick as skipped; ``cancel_previous`` cancels the previous run and starts the new
one; ``buffer_one`` holds the tick (the newest one, one at most) and starts it as soon as
the previous run ends — the controller looks at such a cron every round while it holds a
tick. Several ticks firing in one round (caught up) meet the policy in turn, oldest first
(:func:`decide`).

A paused task's or workflow's ticks, and those of a task that is a step of a paused
workflow, are recorded as ``paused`` and start nothing.

Idle cost: between ticks the loop sleeps until the earliest ``next_fire_at`` (one query
per wake-up, whatever the number of crons); a cron created, changed or deleted through any
replica wakes it through ``stoker_crons``, and a re-check every ``recheck_s`` covers a lost
notification.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from stoker._core import cron
from stoker._core.status import FINAL
from stoker.db import Executor
from stoker.db.store import NoParams
from stoker.db.store import crons as cron_store
from stoker.db.store import runs as run_store
from stoker.engine.controllers.leadership import Leadership
from stoker.engine.crons import CronRuns
from stoker.engine.runs.ops import RunFilter, RunOps
from stoker.engine.service import LoopService
from stoker.errors import StokerError

log = logging.getLogger("stoker.engine.crons")

MISFIRE_GRACE = timedelta(seconds=10)
"""How late a tick may still fire (a failover, a slow round); older ticks were missed."""

RECHECK_S = 60.0
"""Longest sleep between two looks at the cron table (a lost notification)."""

_BATCH = 500


@dataclass(slots=True)
class _Decision:
    """What one cron does this round."""

    row: cron_store.DueCron
    start: list[datetime]
    records: list[tuple[datetime, str]]  # ticks that start nothing: (tick, outcome)
    following: datetime | None
    buffered: datetime | None
    cancel: uuid.UUID | None = None


class Crons(LoopService):
    """Fires due cron ticks, on the leader."""

    name = "crons"

    def __init__(
        self,
        db: Executor,
        runs: CronRuns,
        ops: RunOps,
        leadership: Leadership,
        paused_queues: Callable[[int], Awaitable[frozenset[str]]],
        *,
        interval_s: float,
        recheck_s: float = RECHECK_S,
    ) -> None:
        super().__init__()
        self._db = db
        self._paused_queues = paused_queues
        self._runs = runs
        self._ops = ops
        self._leadership = leadership
        self._interval = interval_s
        self._recheck = recheck_s
        self._wake = self.signal()
        self.fired = 0
        self.rounds = 0
        self.dropped = 0
        # Tasks and workflows paused with drop, by tenant (None: to be read again), and
        # the tenants that queued runs since the last look.
        self._drops: dict[int, list[str]] | None = None
        self._queued: set[int] = set()

    def wake(self, *_: object) -> None:
        """Look at the crons now (one was created, changed or deleted)."""
        self._wake.set()

    def changed(self, tenant_id: int) -> None:
        """A tenant's crons or pauses changed (here or on another replica)."""
        self._drops = None
        self._queued.add(tenant_id)
        self._wake.set()

    def queued(self, tenants: set[int]) -> None:
        """Runs were queued: those of a task or workflow paused with drop are cancelled."""
        if not self._leadership.is_leader:
            return
        if self._drops is None or not tenants.isdisjoint(self._drops):
            self._queued |= tenants
            self._wake.set()

    async def run(self) -> None:
        while not self.stopping.is_set():
            delay = self._interval
            if self._leadership.is_leader:
                if self._queued or self._drops is None:
                    await self._drop_queued()
                delay = await self.tick()
            await self._wake.wait(delay)

    async def _drop_queued(self) -> None:
        """Cancels the queued runs of what is paused with drop, for the tenants that
        queued runs (or changed their pauses) since the last look."""
        if self._drops is None:
            drops: dict[int, list[str]] = {}
            for r in await cron_store.dropping_pauses(self._db, NoParams()):
                drops.setdefault(r["tenant_id"], []).append(r["name"])
            self._drops = drops
        tenants, self._queued = self._queued, set()
        for tenant_id in sorted(tenants):
            names = self._drops.get(tenant_id)
            if not names:
                continue
            try:
                outcomes = await self._ops.cancel(
                    tenant_id, [], RunFilter(names=names, statuses=["QUEUED"]), "paused (drop)"
                )
            except StokerError as exc:
                log.error("cannot drop the queued runs of paused %s: %s", names, exc)
                continue
            self.dropped += sum(1 for o in outcomes if o.outcome == "cancelled")

    async def tick(self) -> float:
        """Handles the due ticks; returns seconds to sleep (to the next tick)."""
        self.rounds += 1
        async with self._db.transaction() as tx:
            due = await cron_store.due_crons(tx, cron_store.DueCrons(_BATCH))
            now = datetime.now(UTC)
            statuses = await self._statuses(tx, due)
            paused = await self._paused(due)
            decisions = [
                decide(r, now, statuses.get(r["last_run_id"]), r["id"] in paused) for r in due
            ]
            for d in decisions:
                if d.cancel is not None:
                    await self._cancel(d.row, d.cancel)
            # The runs first, together (one ingest flush); only then are the ticks advanced,
            # in this transaction: a crash in between leaves the ticks due, and the next
            # leader's request keys find the runs already made.
            started = await asyncio.gather(
                *(self._start(d.row, t) for d in decisions for t in d.start)
            )
            records = cron_store.RecordCronFires([], [], [], [])
            pairs = iter(started)
            for d in decisions:
                last: uuid.UUID | None = None
                for tick in d.start:
                    run_id = next(pairs)
                    if run_id is None:  # refused (logged): nothing to record
                        continue
                    last = run_id
                    records.cron_ids.append(d.row["id"])
                    records.ticks.append(tick)
                    records.run_ids.append(run_id)
                    records.outcomes.append("started")
                for tick, outcome in d.records:
                    records.cron_ids.append(d.row["id"])
                    records.ticks.append(tick)
                    records.run_ids.append(None)
                    records.outcomes.append(outcome)
                await cron_store.advance_cron(
                    tx,
                    cron_store.AdvanceCron(
                        d.row["id"], d.row["next_fire_at"], d.following, d.buffered, last
                    ),
                )
            if records.cron_ids:
                await cron_store.record_cron_fires(tx, records)
                await cron_store.trim_cron_fires(
                    tx, cron_store.TrimCronFires(sorted(set(records.cron_ids)))
                )
        if len(due) >= _BATCH:
            return 0.0
        earliest = await cron_store.next_cron_fire(self._db, NoParams())
        if earliest is not None and earliest["buffered"]:
            return self._interval
        fire_at = earliest["fire_at"] if earliest else None
        if fire_at is None:
            return self._recheck
        left = (fire_at - datetime.now(UTC)).total_seconds()
        return float(max(0.0, min(self._recheck, left)))

    async def _statuses(
        self, tx: Executor, due: list[cron_store.DueCron]
    ) -> dict[uuid.UUID | None, str]:
        """The status of each cron's previous run, for the crons whose policy asks."""
        ids = [r["last_run_id"] for r in due if r["overlap"] != "allow" and r["last_run_id"]]
        by_tenant: dict[int, list[uuid.UUID]] = {}
        for r in due:
            if r["overlap"] != "allow" and r["last_run_id"] is not None:
                by_tenant.setdefault(r["tenant_id"], []).append(r["last_run_id"])
        found: dict[uuid.UUID | None, str] = {}
        if not ids:
            return found
        for tenant_id, run_ids in by_tenant.items():
            rows = await run_store.resolve_runs(tx, run_store.ResolveRuns(tenant_id, run_ids))
            found.update({r["external_id"]: r["status"] for r in rows})
        return found

    async def _paused(self, due: list[cron_store.DueCron]) -> set[int]:
        """The crons whose task or workflow is paused, or whose task is a step of a paused
        workflow (read from the definitions' cache of paused queues)."""
        found = {r["id"] for r in due if r["paused"]}
        tenants = {r["tenant_id"] for r in due if r["task_name"] and not r["paused"]}
        for tenant_id in tenants:
            names = await self._paused_queues(tenant_id)
            found.update(
                r["id"] for r in due if r["tenant_id"] == tenant_id and r["task_name"] in names
            )
        return found

    async def _cancel(self, row: cron_store.DueCron, run_id: uuid.UUID) -> None:
        try:
            await self._ops.cancel(
                row["tenant_id"], [str(run_id)], None, f"cron {row['name']}: cancel_previous"
            )
        except StokerError as exc:
            log.error("cron %r: cannot cancel its previous run %s: %s", row["name"], run_id, exc)

    async def _start(self, row: cron_store.DueCron, tick: datetime) -> uuid.UUID | None:
        try:
            run_id = await self._runs.start(row["tenant_id"], row, tick)
        except StokerError as exc:  # this cron's run is refused: the others still fire
            log.error("cron %r: the run of tick %s is refused: %s", row["name"], tick, exc)
            return None
        self.fired += 1
        return uuid.UUID(run_id)


def decide(row: cron_store.DueCron, now: datetime, previous: str | None, paused: bool) -> _Decision:
    """What a due cron does: the missed-tick rule, then its overlap policy, given the
    status of its previous run (None: none, or not known any more) and whether its task or
    workflow is paused.

    The ticks that fire this round (on time, or caught up after a downtime: those of the
    catch-up window, at most its max) meet the overlap policy one after the other, oldest
    first, as they would have on time: each one's run is "the previous run" of the next.
    With ``skip`` the first tick whose previous run has ended starts and the ticks after it
    are skipped; with ``buffer_one`` that one starts and the newest of the others is held
    until it ends; with ``cancel_previous`` only the newest starts (each would cancel the
    one before), after cancelling the previous run; with ``allow`` all start."""
    tick = row["next_fire_at"]
    buffered = row["buffered_tick"]
    running = previous is not None and previous not in FINAL
    d = _Decision(row, [], [], tick, buffered)
    new: list[datetime] = []
    if tick is not None and tick <= now:
        try:
            parsed = cron.parse(row["expression"], row["timezone"])
        except cron.CronError as exc:  # stored before a parser change: it stops
            log.error("cron %r cannot be read, it stops: %s", row["name"], exc)
            d.following = None
            return d
        p = cron.plan(
            parsed,
            tick,
            now,
            grace=MISFIRE_GRACE,
            window=timedelta(seconds=row["catch_up_window_s"]),
            max_missed=row["catch_up_max"],
        )
        if p.missed:
            log.warning("cron %r: ticks from %s on were missed, catch-up rules", row["name"], tick)
        d.following = p.following
        new = p.fire
    if paused:  # nothing starts; a held tick waits for the resume
        d.records = [(t, "paused") for t in new]
        return d
    policy = row["overlap"]
    if policy != "buffer_one":
        d.buffered = None  # held under buffer_one before the policy changed: dropped
    if policy == "allow":
        d.start = new
        return d
    if policy == "cancel_previous":
        if new:
            d.start = new[-1:]
            d.records = [(t, "skipped") for t in new[:-1]]
            if running:
                d.cancel = row["last_run_id"]
        return d
    held = buffered if policy == "buffer_one" else None
    d.buffered = None
    if held is not None and not running:  # the previous run ended: the held tick starts
        d.start.append(held)
        running, held = True, None
    for t in new:
        if not running:
            d.start.append(t)
            running = True
        elif policy == "skip":
            d.records.append((t, "skipped"))
        else:  # buffer_one: the newest tick is held, the one it replaces is skipped
            if held is not None:
                d.records.append((held, "skipped"))
            held = t
    d.buffered = held
    return d
