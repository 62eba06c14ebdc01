"""The Rate limits page's data: each limit, the units its window holds now, when room
frees up, and how many queued attempts it defers.

A limit holds in every interval of its window (a sliding window,
:mod:`stoker.engine.scheduler.rate_limits`): the units started in the last ``window``
count. Room frees up when the oldest start still counted leaves the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from stoker.db import Executor
from stoker.db.store import dashboard_pages as store
from stoker.engine.dashboard.pages_words import duration, until
from stoker.engine.scheduler.rate_limits import from_us

MAX_LIMITS = 500


@dataclass(frozen=True, slots=True)
class LimitView:
    """A rate limit as the page shows it."""

    key: str
    limit: int
    window: str
    window_ms: int
    dynamic: bool
    used: int
    frees: str
    """When the oldest counted start leaves the window ("" when nothing counts)."""
    waiting: int

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.used / self.limit)) if self.limit > 0 else 100


async def rate_limits(db: Executor, tenant_id: int) -> list[LimitView]:
    """The tenant's rate limits, by key."""
    out = []
    for r in await store.dash_rate_limits(db, store.DashLimited(tenant_id, MAX_LIMITS)):
        oldest = r["oldest_start_us"]
        frees = ""
        if oldest is not None:
            frees = until(from_us(oldest) + timedelta(milliseconds=r["window_ms"]), r["db_now"])
        out.append(
            LimitView(
                key=r["key"],
                limit=r["limit_value"],
                window=duration(timedelta(milliseconds=r["window_ms"])),
                window_ms=r["window_ms"],
                dynamic=r["dynamic"],
                used=r["used"],
                frees=frees,
                waiting=r["waiting"],
            )
        )
    return out
