"""Sliding-window rate limits: the arithmetic, free of I/O.

A limit of ``limit`` units per ``window`` holds in *every* interval of length ``window``:
for any instant ``s``, the units started in ``[s, s + window)`` never exceed ``limit``.
A limit keeps a short log of recent starts; a batch of starts is admitted when the units
the log still counts, plus the new ones, fit. The log is bounded by grouping starts into
``BUCKETS`` buckets per window, and a group is counted as if all of it started at its
latest start, so the log never under-counts. The proof, and how a run that does not fit
is deferred, are in ``docs/scheduler.md`` ("Rate limits").

Times are integer microseconds since the epoch (what Postgres ``timestamptz`` holds), so
the arithmetic is exact.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

# A limit's log holds at most BUCKETS + 1 groups; a start is counted at most
# window / BUCKETS longer than its own window, which is all the throughput this costs.
BUCKETS = 100

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(at: datetime) -> int:
    """``at`` as integer microseconds since the epoch (exact)."""
    delta = at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    """The instant ``us`` microseconds after the epoch."""
    return _EPOCH + timedelta(microseconds=us)


@dataclass(slots=True)
class SlidingWindow:
    """One limit's state while a round holds its row lock.

    ``log`` is ``[at, units]`` groups, oldest first, ``at`` strictly increasing: ``units``
    started at or before ``at`` (and after the previous group's bucket). A group counts
    until ``at + window_us``, exclusive. ``clock`` is the latest instant this limit was
    consumed at; instants passed in never go below it (:meth:`advance` asserts it), which
    is what makes dropping expired groups safe.
    """

    limit: int
    window_us: int
    log: deque[list[int]] = field(default_factory=deque)
    clock: int = 0
    _used: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._used = sum(units for _, units in self.log)

    @classmethod
    def load(
        cls, limit: int, window_ms: int, recent: str | list[list[int]], clock: int
    ) -> SlidingWindow:
        """A window from its stored row (``recent`` as JSON text or already decoded)."""
        log = json.loads(recent) if isinstance(recent, str) else recent
        return cls(limit, window_ms * 1000, deque([int(a), int(u)] for a, u in log), clock)

    def dump(self) -> str:
        """The log as stored (``rate_limit.recent``)."""
        return json.dumps(list(self.log), separators=(",", ":"))

    @property
    def bucket_us(self) -> int:
        """The width of the buckets starts are grouped by (window / BUCKETS, at least 1)."""
        return max(1, -(-self.window_us // BUCKETS))

    def advance(self, now: int) -> None:
        """Moves the window to ``now``: drops the groups that no longer count."""
        assert now >= self.clock, "a rate limit's clock never goes back"
        self.clock = now
        while self.log and self.log[0][0] + self.window_us <= now:
            self._used -= self.log.popleft()[1]

    def used(self) -> int:
        """Units that count at :attr:`clock` (the units started in the last window)."""
        return self._used

    def fits(self, units: int) -> bool:
        """Whether ``units`` more may start at :attr:`clock`."""
        return self._used + units <= self.limit

    def take(self, units: int) -> None:
        """Records ``units`` started at :attr:`clock`."""
        now = self.clock
        last = self.log[-1] if self.log else None
        if last is not None and last[0] // self.bucket_us == now // self.bucket_us:
            last[0] = now  # same bucket: the group now counts from its latest start
            last[1] += units
        else:
            self.log.append([now, units])
        self._used += units

    def free_at(self, units: int) -> int | None:
        """The earliest instant, not before :attr:`clock`, at which ``units`` more fit if
        nothing else starts; None when ``units`` exceeds the limit (they never fit)."""
        if units > self.limit:
            return None
        excess = self._used + units - self.limit
        if excess <= 0:
            return self.clock
        for at, group in self.log:
            excess -= group
            if excess <= 0:
                return at + self.window_us
        raise AssertionError("unreachable: every group expires")  # pragma: no cover

    def copy(self) -> SlidingWindow:
        """An independent copy (for planning)."""
        return SlidingWindow(
            self.limit, self.window_us, deque(list(g) for g in self.log), self.clock
        )


@dataclass(slots=True)
class Plan:
    """The starts a limit could make after a round, to date the runs it turned away.

    Runs that did not fit are lined up behind each other in claim order: each is given
    the earliest instant at which it would fit if the runs ahead of it started as early
    as they could. Deferring a run until then means it is claimed again only when it has
    a chance, so a long backlog over a limit costs one round per freed group, not a round
    per poll.
    """

    window: SlidingWindow

    def reserve(self, units: int) -> int | None:
        """When ``units`` could start, behind everything reserved before (None: never)."""
        at = self.window.free_at(units)
        if at is None:
            return None
        self.window.advance(at)
        self.window.take(units)
        return at
