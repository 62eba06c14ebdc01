"""Cron parsing and fire times (stoker._core.cron), daylight-saving rules included.

The fire times are checked against a slow reference written from the rules alone: walk
every local minute, read each with both folds through ``zoneinfo``, and apply the rule for
ordinary, repeated and skipped times.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stoker._core.cron import Cron, CronError, parse
from stoker.errors import DeclarationError


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def local(cron: Cron, after: str, n: int) -> list[str]:
    """The next ``n`` fire times after ``after``, as local ISO strings."""
    return [t.astimezone(cron.zone).isoformat() for t in islice(cron.fires(at(after)), n)]


# -- parsing ----------------------------------------------------------------------------


def test_fields_names_steps_and_macros() -> None:
    c = parse("*/15 9-17 * JAN,jul mon-FRI")
    assert c.seconds == {0}
    assert c.minutes == {0, 15, 30, 45}
    assert c.hours == set(range(9, 18))
    assert c.months == {1, 7}
    assert c.weekdays == {1, 2, 3, 4, 5}
    assert c.timezone == "UTC"
    assert parse("5/20 * * * * 7").seconds == {5, 25, 45}
    assert parse("0 0 * * 7").weekdays == {0}  # 7 is Sunday
    assert parse("0 0 ? * 1-5").any_day
    assert replace(parse("@daily"), expression="0 0 * * *") == parse("0 0 * * *")
    assert parse("@hourly").minutes == {0} and parse("@hourly").any_hour


def test_time_zone_from_prefix_or_argument() -> None:
    assert parse("TZ=Europe/Berlin 0 9 * * MON-FRI").timezone == "Europe/Berlin"
    assert parse("CRON_TZ=Asia/Tokyo 0 9 * * *").timezone == "Asia/Tokyo"
    assert parse("0 9 * * *", timezone="America/New_York").timezone == "America/New_York"
    assert parse("TZ=UTC 0 9 * * *", timezone="UTC").zone is UTC


@pytest.mark.parametrize(
    ("expression", "timezone", "says"),
    [
        ("* * * *", None, "has 4 fields; expected 5"),
        ("* * * * * * *", None, "has 7 fields"),
        ("", None, "has 0 fields"),
        ("60 * * * *", None, "minute 60 is outside 0-59"),
        ("0 24 * * *", None, "hour 24 is outside 0-23"),
        ("0 0 0 * *", None, "day of month 0 is outside 1-31"),
        ("0 0 * 13 *", None, "month 13 is outside 1-12"),
        ("0 0 * FOO *", None, "month value 'FOO' is not a number"),
        ("*/0 * * * *", None, "minute step '0' is not a positive number"),
        ("5-1 * * * *", None, "minute range '5-1' runs backwards"),
        ("1,,2 * * * *", None, "empty item in minute"),
        ("0 0 30 2 *", None, "never fires"),
        ("TZ=Mars/Olympus 0 0 * * *", None, "unknown time zone 'Mars/Olympus'"),
        ("0 0 * * *", "Nowhere", "unknown time zone 'Nowhere'"),
        ("TZ=Europe/Berlin 0 0 * * *", "Asia/Tokyo", "give one"),
    ],
)
def test_bad_expressions_say_what_is_wrong(
    expression: str, timezone: str | None, says: str
) -> None:
    with pytest.raises(CronError, match=says.replace("(", r"\(")) as info:
        parse(expression, timezone)
    assert isinstance(info.value, DeclarationError)
    assert repr(expression) in info.value.message


# -- fire times -------------------------------------------------------------------------


def test_fire_times_in_utc() -> None:
    c = parse("*/20 * * * * *")
    assert local(c, "2026-01-01T00:00:00+00:00", 3) == [
        "2026-01-01T00:00:20+00:00",
        "2026-01-01T00:00:40+00:00",
        "2026-01-01T00:01:00+00:00",
    ]
    # Both day fields restricted: either matches (the 1st, and every Monday).
    assert local(parse("0 0 1 * MON"), "2026-06-01T00:00:00+00:00", 3) == [
        "2026-06-08T00:00:00+00:00",
        "2026-06-15T00:00:00+00:00",
        "2026-06-22T00:00:00+00:00",
    ]
    # Feb 29 recurs; the next is found years ahead.
    assert local(parse("0 12 29 2 *"), "2026-03-01T00:00:00+00:00", 1) == [
        "2028-02-29T12:00:00+00:00"
    ]
    assert parse("0 0 1 1 *").next_after(at("2026-01-01T00:00:00+00:00")) == at(
        "2027-01-01T00:00:00+00:00"
    )


def test_a_skipped_local_time_fires_once_after_the_gap() -> None:
    # Berlin springs forward 2026-03-29 02:00 → 03:00: 02:30 does not exist that day.
    c = parse("TZ=Europe/Berlin 30 2 * * *")
    assert local(c, "2026-03-28T12:00:00+00:00", 2) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    # Several skipped ticks (and one at the gap's end) fire together, once.
    c = parse("TZ=America/New_York */20 2,3 * * *")
    assert local(c, "2026-03-08T06:00:00+00:00", 3) == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T03:20:00-04:00",
        "2026-03-08T03:40:00-04:00",
    ]


def test_a_repeated_local_time_fires_once() -> None:
    # Berlin falls back 2026-10-25 03:00 → 02:00: 02:30 happens twice, fires at the first.
    c = parse("TZ=Europe/Berlin 30 2 * * *")
    assert local(c, "2026-10-24T12:00:00+00:00", 2) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_an_hourly_wildcard_is_periodic_in_real_time() -> None:
    c = parse("TZ=Europe/Berlin 0,30 * * * *")
    fall = local(c, "2026-10-24T23:45:00+00:00", 5)
    assert fall == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]
    spring = local(c, "2026-03-29T00:15:00+00:00", 3)
    assert spring == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]


def test_half_hour_transitions() -> None:
    # Lord Howe moves by 30 minutes: 02:00 → 02:30 on 2026-10-04.
    c = parse("TZ=Australia/Lord_Howe 15 2 * * *")
    assert local(c, "2026-10-03T00:00:00+00:00", 2) == [
        "2026-10-04T02:30:00+11:00",
        "2026-10-05T02:15:00+11:00",
    ]


def test_fires_until_a_bound_and_naive_times_are_refused() -> None:
    c = parse("0 * * * *")
    start, end = at("2026-01-01T00:00:00+00:00"), at("2026-01-01T03:00:00+00:00")
    assert [t.hour for t in c.fires(start, end)] == [1, 2, 3]
    with pytest.raises(ValueError, match="aware"):
        c.next_after(datetime(2026, 1, 1))


# -- against the reference ----------------------------------------------------------------


ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Sao_Paulo"]


def reference_next(minutes: set[int], hours: set[int], zone: str, after: datetime) -> datetime:
    """The rules, applied minute by minute over local wall times around ``after``."""
    tz = ZoneInfo(zone)
    any_hour = hours == set(range(24))
    start = after.astimezone(tz).replace(tzinfo=None, second=0) - timedelta(hours=4)
    found: list[datetime] = []
    wall = start
    while wall < start + timedelta(days=3):
        if wall.minute in minutes and wall.hour in hours:
            a = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
            b = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
            exists = a.astimezone(tz).replace(tzinfo=None) == wall
            if exists and a == b:
                found.append(a)
            elif exists:  # repeated
                found += [a, b] if any_hour else [a]
            elif not any_hour:  # skipped: the first minute whose local time is later
                t = min(a, b)
                while t.astimezone(tz).replace(tzinfo=None) <= wall:
                    t += timedelta(minutes=1)
                found.append(t)
        wall += timedelta(minutes=1)
    return min(t for t in found if t > after)


def transitions(zone: str) -> list[datetime]:
    """The instants in 2026 at which ``zone`` changes its offset (to within 30 minutes)."""
    tz, t, found = ZoneInfo(zone), at("2026-01-01T00:00:00+00:00"), []
    while t.year == 2026:
        if t.astimezone(tz).utcoffset() != (t + timedelta(minutes=30)).astimezone(tz).utcoffset():
            found.append(t + timedelta(minutes=30))
        t += timedelta(minutes=30)
    return found


TRANSITIONS = {zone: transitions(zone) for zone in ZONES}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    minutes=st.sets(st.integers(0, 59), min_size=1, max_size=4),
    hours=st.one_of(st.just(set(range(24))), st.sets(st.integers(0, 23), min_size=1, max_size=4)),
    zone=st.sampled_from(ZONES),
    which=st.integers(0, 1),
    offset_minutes=st.one_of(st.integers(-240, 240), st.integers(-36 * 60, 36 * 60)),
)
def test_next_fire_time_matches_the_reference(
    minutes: set[int], hours: set[int], zone: str, which: int, offset_minutes: int
) -> None:
    expression = f"{','.join(map(str, sorted(minutes)))} {','.join(map(str, sorted(hours)))} * * *"
    cron = parse(expression, zone)
    around = TRANSITIONS[zone][which] if TRANSITIONS[zone] else at("2026-06-01T00:00:00+00:00")
    after = around + timedelta(minutes=offset_minutes, seconds=7)
    assert cron.next_after(after) == reference_next(minutes, hours, zone, after)
