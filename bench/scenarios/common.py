"""Measurement building blocks shared by the scenarios: draining a queue, waiting."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from bench.config import Context
from bench.measure import Row, completed, read_rows
from bench.systems import System

STALL_TIMEOUT_S = 30.0
"""Give up when no task has finished for this long."""
PENDING_TIMEOUT_S = 30.0


class Stalled(RuntimeError):
    """The workers stopped making progress before every task finished."""


async def wait_done(
    system: System, directory: Path, target: int, budget_s: float | None = None
) -> int:
    """Waits for ``target`` completions; raises :class:`Stalled` when progress stops.

    Progress is read from the recorder's count files every 50 ms; the workers' liveness
    is checked on the way, so a crashed worker fails fast with its log tail. With
    ``budget_s``, returns after that many seconds with however many are done.
    """
    done = completed(directory)
    last_progress = time.monotonic()
    give_up = None if budget_s is None else last_progress + budget_s
    while done < target and (give_up is None or time.monotonic() < give_up):
        await asyncio.sleep(0.05)
        system.check_workers()
        now_done = completed(directory)
        if now_done != done:
            done, last_progress = now_done, time.monotonic()
        elif time.monotonic() - last_progress > STALL_TIMEOUT_S:
            raise Stalled(f"{system.name}: {done}/{target} tasks done, no progress for 30 s")
    return done


async def wait_acknowledged(system: System) -> int | None:
    """Wall-clock ns when the system's own bookkeeping shows nothing unfinished.

    Only called once the bodies have all run; None when the system keeps no such state.
    """
    while True:
        pending = await system.pending()
        if pending is None:
            return None
        if pending == 0:
            return time.time_ns()
        await asyncio.sleep(0.05)


@dataclass
class Drain:
    """What one drain measured."""

    tasks: int
    enqueue_s: float
    rows: list[Row]
    measured: int
    """How many completions the rate is computed over (the first ``measured`` ones)."""
    acknowledged_ns: int | None = None

    @property
    def first_start_ns(self) -> int:
        return min(r.start_ns for r in self.rows)

    @property
    def unique(self) -> int:
        return len({r.seq for r in self.rows})

    @property
    def duplicates(self) -> int:
        return len(self.rows) - self.unique

    def window_s(self) -> float:
        ends = sorted(r.end_ns for r in self.rows)
        return (ends[self.measured - 1] - self.first_start_ns) / 1e9

    def rate(self) -> float:
        """Tasks/s from the first start to the ``measured``-th completion."""
        return self.measured / self.window_s() if self.rows else 0.0

    def acknowledged_rate(self) -> float | None:
        """Tasks/s until the system itself recorded every task as finished."""
        if self.acknowledged_ns is None or self.measured != self.tasks:
            return None
        return self.tasks / ((self.acknowledged_ns - self.first_start_ns) / 1e9)


async def drain(
    system: System,
    ctx: Context,
    tasks: int,
    *,
    measure_first: int | None = None,
    budget_s: float | None = None,
    what: str = "drain",
) -> Drain:
    """Enqueues ``tasks`` no-ops in bulk, then starts the workers and times them.

    With ``measure_first``, the workers are stopped once that many have finished (the
    rest stay queued: the caller resets the system). With ``budget_s`` too, they are
    stopped after that many seconds at the latest, and the rate is over what finished.
    """
    seqs = range(tasks)
    started = time.perf_counter()
    await system.enqueue_bulk(seqs)
    enqueue_s = time.perf_counter() - started
    directory = ctx.scratch(system.name, what)
    system.start_workers(directory)
    target = measure_first or tasks
    try:
        await wait_done(system, directory, target, budget_s if measure_first else None)
        acknowledged = (
            None
            if measure_first
            else await asyncio.wait_for(wait_acknowledged(system), PENDING_TIMEOUT_S)
        )
    finally:
        await system.stop_workers()
    rows = read_rows(directory)
    return Drain(tasks, enqueue_s, rows, min(target, len(rows)), acknowledged)
