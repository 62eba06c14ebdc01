"""Cron expressions and their fire times, in any time zone.

One parser and one clock rule shared by the SDK (which refuses a bad expression when a task
is declared) and the engine (which fires the ticks).

**Expressions.** Five fields ``minute hour day-of-month month day-of-week``, or six with a
leading ``second``. Each field is ``*``, a value, a range ``a-b``, a step ``*/n``, ``a-b/n``
or ``a/n``, or a comma list of those; months and weekdays also take English names
(``JAN``..``DEC``, ``SUN``..``SAT``), and weekday 7 is Sunday like 0. ``?`` means ``*`` in the
two day fields. The macros ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``,
``@daily`` (``@midnight``) and ``@hourly`` stand for their usual expressions. As in every
cron since Vixie's, when both day fields are restricted a day matches if *either* does
(``0 0 1 * MON``: the first of the month and every Monday).

**Time zones.** An expression is read in UTC unless it starts with ``TZ=<zone>`` or
``CRON_TZ=<zone>`` (an IANA name such as ``Europe/Berlin``) or a ``timezone`` is given
alongside; giving both, differently, is an error.

**Daylight saving.** A tick is a local wall-clock time that matches the expression. Where
the clocks jump forward, a tick in the skipped hour fires once, at the first instant after
the gap (several skipped ticks fire together, once); where they fall back, a tick in the
repeated hour fires once, at its first occurrence. An expression whose hour field allows
every hour (``*``) is periodic in real time and is treated as cron treats such jobs: its
ticks in the repeated hour fire in both occurrences, and those in the skipped hour do not
exist. Ticks are whole seconds; fire times are returned as aware UTC datetimes.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stoker.errors import DeclarationError

_MONTHS = {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}
_DAYS = {d.upper(): (i + 1) % 7 for i, d in enumerate(calendar.day_abbr)}  # SUN=0
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_ZONE_PREFIX = re.compile(r"^(?:CRON_)?TZ=(\S+)\s+(.*)$", re.DOTALL)
_SEARCH_YEARS = 30
"""How far a search for the next tick goes: far enough for ``0 0 29 2 MON`` (Feb 29 on a
Monday recurs at least every 28 years); an expression with no tick that soon never fires."""
_MAX_SHIFT = timedelta(hours=3)
"""More than any zone's change of UTC offset at one transition."""

OVERLAPS = ("allow", "skip", "cancel_previous", "buffer_one")
"""What a tick does while the cron's previous run still runs: start anyway, skip the
tick, cancel the previous run, or hold the tick (one at most) until the previous ends."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day of month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTHS)
_DOW = _Field("day of week", 0, 7, _DAYS)


class CronError(DeclarationError):
    """A cron expression or time zone that cannot be used; the message says why."""


def _value(text: str, field: _Field, expression: str) -> int:
    if field.names and text.upper() in field.names:
        return field.names[text.upper()]
    if not text.isdigit():
        raise CronError(f"cron {expression!r}: {field.name} value {text!r} is not a number")
    value = int(text)
    if not field.low <= value <= field.high:
        raise CronError(
            f"cron {expression!r}: {field.name} {value} is outside {field.low}-{field.high}"
        )
    return value


def _parse_field(text: str, field: _Field, expression: str) -> tuple[frozenset[int], bool]:
    """The values ``text`` allows, and whether it is unrestricted (``*`` or ``?``)."""
    if text == "?" and field in (_DOM, _DOW):
        text = "*"
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"cron {expression!r}: empty item in {field.name} {text!r}")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(
                    f"cron {expression!r}: {field.name} step {step_text!r} is not a positive number"
                )
            step = int(step_text)
        if base == "*":
            low, high = field.low, field.high
        elif "-" in base:
            a, _, b = base.partition("-")
            low, high = _value(a, field, expression), _value(b, field, expression)
            if low > high:
                raise CronError(f"cron {expression!r}: {field.name} range {base!r} runs backwards")
        else:
            low = _value(base, field, expression)
            high = field.high if step_text else low
        values.update(range(low, high + 1, step))
    if field is _DOW and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values), text == "*"


def _zone(name: str, expression: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(
            f"cron {expression!r}: unknown time zone {name!r} (use an IANA name such as "
            "'Europe/Berlin' or 'UTC')"
        ) from None


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed cron expression with its time zone; see the module for the rules."""

    expression: str
    zone: tzinfo
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # the day-of-month field is unrestricted
    any_weekday: bool  # the day-of-week field is unrestricted
    any_hour: bool  # every hour matches: periodic in real time

    @property
    def timezone(self) -> str:
        return "UTC" if self.zone is UTC else str(self.zone)

    # -- matching local wall-clock times ------------------------------------------------

    def _day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def _next_wall(self, after: datetime) -> datetime | None:
        """The first naive wall-clock time after ``after`` (naive) that matches."""
        t = after.replace(microsecond=0) + timedelta(seconds=1)
        limit = after.year + _SEARCH_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                t = _next_month(t)
                continue
            if not self._day_matches(t):
                t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                continue
            if t.hour not in self.hours:
                later = [h for h in self.hours if h > t.hour]
                if not later:
                    t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                else:
                    t = t.replace(hour=min(later), minute=0, second=0)
                continue
            if t.minute not in self.minutes:
                later = [m for m in self.minutes if m > t.minute]
                if not later:
                    t = t.replace(minute=0, second=0) + timedelta(hours=1)
                else:
                    t = t.replace(minute=min(later), second=0)
                continue
            if t.second not in self.seconds:
                later = [s for s in self.seconds if s > t.second]
                if not later:
                    t = t.replace(second=0) + timedelta(minutes=1)
                else:
                    t = t.replace(second=min(later))
                continue
            return t
        return None

    # -- from wall-clock ticks to instants ----------------------------------------------

    def _instants(self, wall: datetime) -> list[datetime]:
        """The UTC instants at which the tick at local ``wall`` fires (module rules)."""
        if self.zone is UTC:
            return [wall.replace(tzinfo=UTC)]
        first = wall.replace(tzinfo=self.zone, fold=0)
        second = wall.replace(tzinfo=self.zone, fold=1)
        a, b = first.astimezone(UTC), second.astimezone(UTC)
        if a == b:  # an ordinary time
            return [a]
        if a < b:  # repeated: the clocks fell back
            return [a, b] if self.any_hour else [a]
        # Skipped: fold=0 reads it with the offset before the gap, which lands after it.
        if self.any_hour:
            return []
        return [_gap_end(self.zone, b, a)]

    def _near_transition(self, wall: datetime) -> bool:
        if self.zone is UTC:
            return False
        offsets = {
            (wall + d).replace(tzinfo=self.zone, fold=f).utcoffset()
            for d in (-_MAX_SHIFT, _MAX_SHIFT)
            for f in (0, 1)
        }
        return len(offsets) > 1

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire time strictly after ``after`` (aware), as an aware UTC datetime;
        None if the expression never fires again."""
        if after.tzinfo is None:
            raise ValueError("next_after needs an aware datetime")
        after = after.astimezone(UTC)
        local = after.astimezone(self.zone).replace(tzinfo=None)
        # Near a transition, start early enough to see ticks that it moves past ``after``;
        # elsewhere (and in UTC) local time runs with real time: start at ``after``.
        early = _MAX_SHIFT if self._near_transition(local) else timedelta(0)
        wall = self._next_wall(local - early - timedelta(seconds=1))
        best: datetime | None = None
        while wall is not None:
            for instant in self._instants(wall):
                if instant > after and (best is None or instant < best):
                    best = instant
            if best is not None:
                horizon = best.astimezone(self.zone).replace(tzinfo=None) + _MAX_SHIFT
                if wall > horizon or not self._near_transition(wall):
                    return best
            wall = self._next_wall(wall)
        return best

    def fires(self, after: datetime, until: datetime | None = None) -> Iterator[datetime]:
        """Fire times after ``after`` in order, up to and including ``until`` if given."""
        t = self.next_after(after)
        while t is not None and (until is None or t <= until):
            yield t
            t = self.next_after(t)


def _next_month(t: datetime) -> datetime:
    return datetime(t.year + (t.month == 12), t.month % 12 + 1, 1)


def _gap_end(zone: tzinfo, before: datetime, after: datetime) -> datetime:
    """The instant a gap in local time ends (the transition), for a skipped wall time.

    ``before`` and ``after`` are the instants the skipped wall time names with the offsets
    after and before the transition (``before`` < ``after``): the transition lies in
    ``(before, after]``, on a whole second, and is found by bisection on the offset.
    """
    old = before.astimezone(zone).utcoffset()
    lo, hi = before, after
    while hi - lo > timedelta(seconds=1):
        mid = (lo + (hi - lo) / 2).replace(microsecond=0)
        if mid.astimezone(zone).utcoffset() == old:
            lo = mid
        else:
            hi = mid
    return hi


def parse(expression: str, timezone: str | None = None) -> Cron:
    """Parses ``expression`` (module docstring); CronError names what is wrong."""
    text = " ".join(expression.split())
    zone_name = timezone
    match = _ZONE_PREFIX.match(text)
    if match:
        prefixed, text = match.group(1), match.group(2)
        if timezone is not None and prefixed != timezone:
            raise CronError(
                f"cron {expression!r} names time zone {prefixed!r} but timezone={timezone!r} "
                "was given too; give one"
            )
        zone_name = prefixed
    zone = _zone(zone_name, expression) if zone_name else UTC
    text = _MACROS.get(text.lower(), text)
    fields = text.split(" ") if text else []
    if len(fields) == 5:
        fields.insert(0, "0")
    if len(fields) != 6:
        raise CronError(
            f"cron {expression!r} has {len(fields)} fields; expected 5 (minute hour "
            "day-of-month month day-of-week) or 6 (with a leading second)"
        )
    (sec, _), (mins, _), (hours, _), (days, any_day), (months, _), (dows, any_dow) = (
        _parse_field(f, spec, expression)
        for f, spec in zip(fields, (_SECOND, _MINUTE, _HOUR, _DOM, _MONTH, _DOW), strict=True)
    )
    cron = Cron(
        expression=expression,
        zone=zone,
        seconds=sec,
        minutes=mins,
        hours=hours,
        days=days,
        months=months,
        weekdays=dows,
        any_day=any_day,
        any_weekday=any_dow,
        any_hour=len(hours) == 24,
    )
    if cron._next_wall(datetime(2000, 1, 1)) is None:
        raise CronError(f"cron {expression!r} never fires (no such date)")
    return cron


@dataclass(frozen=True, slots=True)
class Plan:
    """What a cron does with its due ticks (:func:`plan`): the ticks that fire now, oldest
    first, whether it let some go, and its next tick (None: it never fires again)."""

    fire: list[datetime]
    missed: bool
    following: datetime | None


def plan(
    parsed: Cron,
    tick: datetime,
    now: datetime,
    *,
    grace: timedelta,
    window: timedelta = timedelta(0),
    max_missed: int = 0,
    single: bool = False,
) -> Plan:
    """The missed-tick rule: which of a cron's ticks from ``tick`` (its stored next tick)
    up to ``now`` fire.

    A tick at most ``grace`` old fires (a leader failover or a slow round made it late). An
    older tick was missed (the engine was down): it fires only when it is at most
    ``window`` old (catch-up), and at most ``max_missed`` of them do, the newest. With
    ``single`` (an overlap policy other than ``allow``: the runs would overlap each other)
    only the newest of the firing ticks fires. The next tick is the first after ``now``.
    """
    horizon = max(grace, window)
    due: list[datetime] = []
    missed = False
    t: datetime | None = tick
    if now - tick > horizon:  # skip the ticks no rule can fire without walking them
        t = parsed.next_after(now - horizon - timedelta(microseconds=1))
        missed = True
    while t is not None and t <= now:
        due.append(t)
        t = parsed.next_after(t)
    on_time = [d for d in due if now - d <= grace]
    late = [d for d in due if now - d > grace]
    caught = late[max(0, len(late) - max_missed) :] if max_missed > 0 and window else []
    missed = missed or len(caught) < len(late)
    fire = caught + on_time
    if single and len(fire) > 1:
        missed, fire = True, fire[-1:]
    return Plan(fire, missed, t)
