"""The missed-tick rule (stoker._core.cron.plan): which of a cron's due ticks fire after a
failover or a downtime, checked by hand on examples and, with hypothesis, against a
reference that lists every tick up to now and applies the rule's words to each — across
daylight-saving transitions too (the ticks come from ``fires``, checked against zoneinfo
arithmetic in test_cron.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stoker._core.cron import parse, plan

GRACE = timedelta(seconds=10)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_a_tick_within_the_grace_fires_late() -> None:
    cron = parse("* * * * * *")
    p = plan(cron, at("2026-03-01T10:00:00Z"), at("2026-03-01T10:00:04Z"), grace=GRACE)
    assert [t.second for t in p.fire] == [0, 1, 2, 3, 4]
    assert not p.missed and p.following == at("2026-03-01T10:00:05Z")


def test_catch_up_none_skips_missed_ticks() -> None:
    cron = parse("*/5 * * * *")
    p = plan(cron, at("2026-03-01T08:00:00Z"), at("2026-03-01T10:02:00Z"), grace=GRACE)
    assert p.fire == [] and p.missed
    assert p.following == at("2026-03-01T10:05:00Z")


def test_catch_up_fires_the_newest_missed_ticks_in_the_window() -> None:
    cron = parse("*/5 * * * *")
    tick, now = at("2026-03-01T08:00:00Z"), at("2026-03-01T10:02:00Z")
    p = plan(cron, tick, now, grace=GRACE, window=timedelta(minutes=30), max_missed=3)
    assert p.fire == [
        at("2026-03-01T09:50:00Z"),
        at("2026-03-01T09:55:00Z"),
        at("2026-03-01T10:00:00Z"),
    ]
    assert p.missed  # the older ones in the window, and those before it
    wide = plan(cron, tick, now, grace=GRACE, window=timedelta(minutes=11), max_missed=9)
    assert wide.fire == [at("2026-03-01T09:55:00Z"), at("2026-03-01T10:00:00Z")]
    one = plan(cron, tick, now, grace=GRACE, window=timedelta(hours=1), max_missed=9, single=True)
    assert one.fire == [at("2026-03-01T10:00:00Z")]


def test_a_cron_that_never_fires_again() -> None:
    cron = parse("0 0 1 1 * ")
    p = plan(cron, at("2026-01-01T00:00:00Z"), at("2026-01-01T00:00:01Z"), grace=GRACE)
    assert p.fire == [at("2026-01-01T00:00:00Z")]
    assert p.following == at("2027-01-01T00:00:00Z")


def reference(
    expression: str,
    zone: str,
    tick: datetime,
    now: datetime,
    window: timedelta,
    max_missed: int,
    single: bool,
) -> tuple[list[datetime], datetime | None]:
    """Every tick from ``tick`` to ``now``, each judged on its own."""
    cron = parse(expression, zone)
    due = [tick, *cron.fires(tick, now)]
    on_time = [t for t in due if now - t <= GRACE]
    late = [t for t in due if GRACE < now - t <= window] if max_missed else []
    fire = late[-max_missed:] + on_time if late else on_time
    if single:
        fire = fire[-1:]
    return fire, cron.next_after(now)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    expression=st.sampled_from(
        ["* * * * * *", "*/7 * * * * *", "*/5 * * * *", "30 1,2,3 * * *", "0 * * * *", "15 2 * * *"]
    ),
    zone=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
    start=st.datetimes(min_value=datetime(2026, 3, 1), max_value=datetime(2026, 11, 30)),
    down=st.floats(0, 1),
    window_s=st.sampled_from([0, 5, 30, 600, 3600]),
    max_missed=st.integers(0, 4),
    single=st.booleans(),
)
def test_plan_matches_the_reference(
    expression: str,
    zone: str,
    start: datetime,
    down: float,
    window_s: int,
    max_missed: int,
    single: bool,
) -> None:
    if expression.count(" ") == 5:  # per-second ticks near a transition are slow to list
        zone = "UTC"
    cron = parse(expression, zone)
    tick = cron.next_after(start.replace(tzinfo=UTC))
    assert tick is not None
    # Down up to 3 hours (15 minutes for the per-second expressions: the reference walks
    # every tick).
    longest = 900 if expression.count(" ") == 5 else 3 * 3600
    now = tick + timedelta(seconds=int(down * longest), microseconds=start.microsecond)
    window = timedelta(seconds=window_s)
    catching = max_missed if window_s else 0
    got = plan(cron, tick, now, grace=GRACE, window=window, max_missed=catching, single=single)
    fire, following = reference(expression, zone, tick, now, window, catching, single)
    assert got.fire == fire
    assert got.following == following
