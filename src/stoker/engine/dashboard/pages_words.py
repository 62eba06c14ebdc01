"""Times and cron expressions in words, for the dashboard's pages.

Ages and waits read "12 s ago", "in 3 min"; a cron expression reads "every 5 minutes",
"at 09:00 on Monday to Friday (Europe/Berlin)". The words are derived from the parsed
expression (:class:`stoker._core.cron.Cron`), not from its text, so macros, names and
lists all read alike; a shape with no short reading falls back to the expression itself.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import datetime, timedelta

from stoker._core.cron import Cron

_UNITS = ((86_400, "d"), (3_600, "h"), (60, "min"), (1, "s"))
_DAY_NAMES = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def duration(delta: timedelta) -> str:
    """A duration in its two largest units: ``"45 s"``, ``"3 min 20 s"``, ``"2 d 4 h"``."""
    total = int(abs(delta.total_seconds()))
    if total == 0:
        return "0 s"
    parts: list[str] = []
    for size, unit in _UNITS:
        if total >= size:
            parts.append(f"{total // size} {unit}")
            total %= size
        elif parts:
            break
        if len(parts) == 2:
            break
    return " ".join(parts)


def ago(at: datetime, now: datetime) -> str:
    """How long before ``now`` ``at`` was: ``"12 s ago"`` (``"just now"`` under a second;
    a time ahead of ``now``, from a clock a little ahead, reads ``"just now"`` too)."""
    delta = now - at
    if delta < timedelta(seconds=1):
        return "just now"
    return f"{duration(delta)} ago"


def until(at: datetime, now: datetime) -> str:
    """How long after ``now`` ``at`` is: ``"in 3 min"``, or ``"now"`` when it is due."""
    delta = at - now
    if delta < timedelta(seconds=1):
        return "now"
    return f"in {duration(delta)}"


def _step(values: list[int], start: int, stop: int) -> int | None:
    """The n of ``values`` when they are ``start, start+n, ...`` up to ``stop`` (n > 1)."""
    if len(values) < 2 or values[0] != start:
        return None
    n = values[1] - values[0]
    if n < 2 or values != list(range(start, stop, n)):
        return None
    return n


def _ranges(values: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in sorted(values):
        if out and v == out[-1][1] + 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


def _names(values: Iterable[int], names: list[str]) -> str:
    parts = [
        names[a]
        if a == b
        else f"{names[a]} to {names[b]}"
        if b > a + 1
        else f"{names[a]}, {names[b]}"
        for a, b in _ranges(values)
    ]
    return ", ".join(parts)


def _times(c: Cron) -> str | None:
    minutes, hours, seconds = sorted(c.minutes), sorted(c.hours), sorted(c.seconds)
    if seconds != [0]:
        if len(seconds) == 60 and len(minutes) == 60 and len(hours) == 24:
            return "every second"
        n = _step(seconds, 0, 60)
        if n and len(minutes) == 60 and len(hours) == 24:
            return f"every {n} seconds"
        return None
    all_hours = len(hours) == 24
    if len(minutes) == 60 and all_hours:
        return "every minute"
    n = _step(minutes, 0, 60)
    if n and all_hours:
        return f"every {n} minutes"
    if len(minutes) == 1 and all_hours:
        return "every hour" if minutes[0] == 0 else f"every hour at minute {minutes[0]}"
    h = _step(hours, 0, 24)
    if len(minutes) == 1 and h:
        at = "" if minutes[0] == 0 else f" at minute {minutes[0]}"
        return f"every {h} hours{at}"
    if len(minutes) * len(hours) <= 6:
        times = [f"{hh:02d}:{mm:02d}" for hh in hours for mm in minutes]
        return "at " + (", ".join(times[:-1]) + " and " + times[-1] if len(times) > 1 else times[0])
    return None


def _days(c: Cron) -> str | None:
    """The days part ("on Monday to Friday", "on day 1 of the month", "" for every day),
    None when it has no short reading."""
    parts = []
    if not c.any_weekday:
        parts.append("on " + _names(c.weekdays, _DAY_NAMES))
    if not c.any_day:
        days = sorted(c.days)
        if len(days) > 5:
            return None
        which = ", ".join(str(d) for d in days)
        parts.append(f"on day{'s' if len(days) > 1 else ''} {which} of the month")
    return " or ".join(parts)


def cron_in_words(c: Cron) -> str:
    """A parsed cron expression in words, with its zone when it is not UTC; the expression
    itself when it has no short reading."""
    times, days = _times(c), _days(c)
    zone = "" if c.timezone == "UTC" else f" ({c.timezone})"
    if times is None or days is None:
        return f"cron {c.expression}{zone}"
    if not days and times.startswith("at "):
        days = "every day"
    months = ""
    if len(c.months) != 12:
        months = " in " + _names([m - 1 for m in c.months], list(calendar.month_name)[1:])
    return f"{times}{' ' + days if days else ''}{months}{zone}"
