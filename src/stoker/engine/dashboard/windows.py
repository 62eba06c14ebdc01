"""Time windows named in URLs (``?window=1h``) and the buckets charts cut them into."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

WINDOWS: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
DEFAULT_WINDOW = "1h"


@dataclass(frozen=True, slots=True)
class Window:
    """A time range [since, until) cut into ``buckets`` equal steps."""

    since: datetime
    until: datetime
    buckets: int

    @property
    def step(self) -> timedelta:
        return (self.until - self.since) / self.buckets

    def label(self, i: int) -> str:
        at = self.since + self.step * i
        if self.until - self.since > timedelta(days=1):
            return at.strftime("%m-%d %H:%M")
        return at.strftime("%H:%M:%S" if self.step < timedelta(minutes=1) else "%H:%M")


def parse_window(value: str | None) -> tuple[timedelta, str | None]:
    """The span a ``window`` parameter names, and a message when it names none."""
    if not value:
        return WINDOWS[DEFAULT_WINDOW], None
    if value in WINDOWS:
        return WINDOWS[value], None
    return WINDOWS[DEFAULT_WINDOW], (
        f"window {value!r} is not one of {', '.join(WINDOWS)}; showing the last {DEFAULT_WINDOW}"
    )
