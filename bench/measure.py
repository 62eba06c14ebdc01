"""Reading what the workers recorded, and watching processes' CPU and memory.

Everything here runs in the harness process. Progress comes from the recorder's count
files (see :mod:`bench.recorder`); CPU and RSS come from psutil.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Row:
    """One finished task as a worker recorded it (wall-clock nanoseconds)."""

    seq: int
    start_ns: int
    end_ns: int


def completed(directory: Path) -> int:
    """How many task completions the workers have published so far."""
    total = 0
    for path in directory.glob("cnt-*"):
        with contextlib.suppress(OSError, ValueError):
            total += int(path.read_text(encoding="ascii") or 0)
    return total


def read_rows(directory: Path) -> list[Row]:
    """Every recorded row; a task run twice (at-least-once delivery) appears twice."""
    rows: list[Row] = []
    for path in directory.glob("rec-*.csv"):
        for line in path.read_text(encoding="ascii").splitlines():
            seq, start, end = line.split(",")
            rows.append(Row(int(seq), int(start), int(end)))
    return rows


async def wait_for_count(
    directory: Path,
    target: int,
    timeout: float,
    *,
    on_tick: Callable[[int], None] | None = None,
    interval: float = 0.05,
) -> int:
    """Waits until ``target`` completions are published or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    done = completed(directory)
    while done < target and time.monotonic() < deadline:
        await asyncio.sleep(interval)
        done = completed(directory)
        if on_tick is not None:
            on_tick(done)
    return done


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize_ms(values_ns: list[int]) -> dict[str, float | None]:
    """p50/p95/p99/max of nanosecond durations, in milliseconds."""
    ms = [v / 1e6 for v in values_ns]
    return {
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "max": max(ms) if ms else None,
    }


def _tree(pids: Iterable[int]) -> list[psutil.Process]:
    procs: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            procs.append(proc)
            procs.extend(proc.children(recursive=True))
    return procs


def cpu_by_pid(pids: Iterable[int]) -> dict[int, float]:
    """User+system CPU seconds of these processes and their live descendants, by pid."""
    out: dict[int, float] = {}
    for proc in _tree(pids):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            out[proc.pid] = times.user + times.system
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two :func:`cpu_by_pid` snapshots.

    Processes that started in between count from zero; processes that exited in between
    are lost (psutil cannot see them any more), so short-lived ones are undercounted.
    """
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident memory of these processes and their live descendants, summed."""
    total = 0
    for proc in _tree(pids):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


class PeakRss:
    """Samples the summed RSS of process groups in the background and keeps the peak."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]], interval: float = 0.25):
        self._groups = groups
        self._interval = interval
        self.peaks: dict[str, int] = dict.fromkeys(groups, 0)
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        for name, pids in self._groups.items():
            self.peaks[name] = max(self.peaks[name], rss_bytes(pids()))

    async def _loop(self) -> None:
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> dict[str, int]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sample()
        return self.peaks


def throughput_series(
    rows: list[Row], bin_s: float | None = None
) -> tuple[list[float], list[float]]:
    """Completions per second over time, binned from the first start (for charts).

    The default bin gives about 40 points over the run, between 50 ms and 1 s wide.
    """
    if not rows:
        return [], []
    t0 = min(r.start_ns for r in rows)
    if bin_s is None:
        span = (max(r.end_ns for r in rows) - t0) / 1e9
        bin_s = min(1.0, max(0.05, span / 40))
    bins: dict[int, int] = {}
    for r in rows:
        index = int((r.end_ns - t0) / 1e9 / bin_s)
        bins[index] = bins.get(index, 0) + 1
    last = max(bins)
    xs = [i * bin_s for i in range(last + 1)]
    ys = [bins.get(i, 0) / bin_s for i in range(last + 1)]
    return xs, ys
