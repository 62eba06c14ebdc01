"""The sliding-window arithmetic of rate limits, checked against its definition.

The scheduler's use of it (real engines, workers and replicas) is in test_scheduling.py;
here random histories of batched starts are replayed through :class:`SlidingWindow` and
every window of the limit's duration is counted by brute force.
"""

from __future__ import annotations

import json
from collections import deque
from datetime import UTC, datetime

import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from stoker.db.migrate import all_migrations
from stoker.engine.scheduler.rate_limits import BUCKETS, Plan, SlidingWindow, from_us, to_us
from tests.harness import SCHEMA, create_database, drop_database, migrate, with_database

SLIDING_MIGRATION = 10  # 0010_sliding_rate_limits.sql

WINDOW_US = st.sampled_from([1_000, 1_000_000, 7_777_777, 60_000_000])
# One round: how long after the previous one it runs (0: the same instant, as when two
# replicas read the same clock), then the units of each run it tries to start, in order.
ROUNDS = st.lists(
    st.tuples(
        st.integers(0, 3_000_000),
        st.lists(st.integers(1, 6), min_size=1, max_size=12),
    ),
    min_size=1,
    max_size=40,
)


def reload(limit: int, window_us: int, stored: str, clock: int) -> SlidingWindow:
    """A window from its stored log (as the scheduler loads one, in microseconds)."""
    return SlidingWindow(limit, window_us, deque(json.loads(stored)), clock)


def replay(
    limit: int, window_us: int, rounds: list[tuple[int, list[int]]]
) -> list[tuple[int, int]]:
    """Runs the rounds as the scheduler does (each on a fresh load of the stored log);
    returns the (instant, units) of every start."""
    stored, clock, now = "[]", 0, 1_700_000_000_000_000
    started: list[tuple[int, int]] = []
    for gap, runs in rounds:
        now += gap
        window = reload(limit, window_us, stored, clock)
        window.advance(now)
        for units in runs:
            if window.fits(units):
                window.take(units)
                started.append((now, units))
        stored, clock = window.dump(), now
    return started


def busiest_window(started: list[tuple[int, int]], window_us: int) -> int:
    """The most units started in any [s, s + window): the worst window starts at a start."""
    return max(
        (sum(u for t, u in started if s <= t < s + window_us) for s, _ in started), default=0
    )


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 12), window_us=WINDOW_US, rounds=ROUNDS)
def test_no_window_of_the_duration_holds_more_than_the_limit(
    limit: int, window_us: int, rounds: list[tuple[int, list[int]]]
) -> None:
    started = replay(limit, window_us, rounds)
    assert busiest_window(started, window_us) <= limit


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 12), window_us=WINDOW_US, rounds=ROUNDS)
def test_a_run_is_turned_away_only_when_the_window_nearly_holds_the_limit(
    limit: int, window_us: int, rounds: list[tuple[int, list[int]]]
) -> None:
    """What the log counts lies between the exact count of the last window and the exact
    count of a window longer by one bucket: grouping never under-counts, and costs at most
    a bucket's worth of delay."""
    stored, clock, now = "[]", 0, 1_700_000_000_000_000
    started: list[tuple[int, int]] = []
    bucket = max(1, -(-window_us // BUCKETS))
    for gap, runs in rounds:
        now += gap
        window = reload(limit, window_us, stored, clock)
        window.advance(now)
        exact = sum(u for t, u in started if t > now - window_us)
        longer = sum(u for t, u in started if t > now - window_us - bucket)
        assert exact <= window.used() <= longer
        assert len(window.log) <= BUCKETS + 1
        for units in runs:
            if window.fits(units):
                window.take(units)
                started.append((now, units))
        stored, clock = window.dump(), now


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(1, 12),
    window_us=WINDOW_US,
    rounds=ROUNDS,
    waiting=st.lists(st.integers(1, 14), min_size=1, max_size=20),
)
def test_a_deferred_run_fits_at_its_instant_and_not_before(
    limit: int, window_us: int, rounds: list[tuple[int, list[int]]], waiting: list[int]
) -> None:
    """A run turned away is dated the first instant it fits behind the runs turned away
    before it, and each of them fits at its own instant in turn (never, over the limit)."""
    started = replay(limit, window_us, rounds)
    now = (started[-1][0] if started else 1_700_000_000_000_000) + 1
    window = SlidingWindow(limit, window_us)
    for t, u in started:
        window.advance(t)
        window.take(u)
    window.advance(now)
    plan = Plan(window.copy())
    for units in waiting:
        at = plan.reserve(units)
        if units > limit:
            assert at is None
            continue
        assert at is not None and at >= window.clock
        if at > window.clock:
            before = window.copy()
            before.advance(at - 1)
            assert not before.fits(units)
        window.advance(at)
        assert window.fits(units)
        window.take(units)
        started.append((at, units))
    assert busiest_window(started, window_us) <= limit


def test_a_batch_fills_the_limit_and_the_next_starts_one_window_later() -> None:
    window = SlidingWindow(5, 1_000_000)
    window.advance(10_000_000)
    admitted = []
    for units in [2, 2, 2, 1, 1]:
        if window.fits(units):
            window.take(units)
            admitted.append(units)
    assert admitted == [2, 2, 1]  # the third 2 does not fit; the 1 behind it does
    plan = Plan(window.copy())
    assert [plan.reserve(u) for u in (1, 5, 6)] == [11_000_000, 12_000_000, None]


def test_a_stored_log_round_trips() -> None:
    window = SlidingWindow.load(3, 1_000, "[[5000000, 2]]", 5_000_000)
    assert (window.window_us, window.used(), window.fits(1), window.fits(2)) == (
        1_000_000,
        2,
        True,
        False,
    )
    window.advance(5_999_999)
    window.take(1)
    assert window.dump() == "[[5000000,2],[5999999,1]]"
    window.advance(6_000_000)
    assert window.used() == 1


def test_microsecond_conversion_is_exact() -> None:
    at = datetime(2026, 12, 2, 14, 0, 0, 123_457, tzinfo=UTC)
    assert to_us(at) == 1_796_220_000_123_457
    assert from_us(to_us(at)) == at


def test_the_migration_carries_the_units_of_windows_not_yet_ended(pg_url: str) -> None:
    """Units used in a fixed window that has not ended move into the log as started at the
    migration (never fewer counted than before); ended windows leave nothing."""
    name = create_database(pg_url)
    url = with_database(pg_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {SCHEMA}".encode())
            conn.execute(
                f"CREATE TABLE {SCHEMA}.migration (version integer PRIMARY KEY,"
                " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())".encode()
            )
            for m in all_migrations():
                if m.version >= SLIDING_MIGRATION:
                    break
                with conn.transaction():
                    conn.execute(f"SET LOCAL search_path TO {SCHEMA}".encode())
                    conn.execute(m.sql.encode())
                    conn.execute(
                        f"INSERT INTO {SCHEMA}.migration (version, name) VALUES (%s, %s)".encode(),
                        (m.version, m.name),
                    )
            conn.execute(
                f"INSERT INTO {SCHEMA}.rate_limit"
                " (tenant_id, key, limit_value, window_ms, window_start, used) VALUES"
                " (1, 'live', 5, 60000, now() - interval '10 seconds', 3),"
                " (1, 'ended', 5, 1000, now() - interval '1 hour', 4),"
                " (1, 'unused', 5, 60000, now(), 0)".encode()
            )
            before = conn.execute("SELECT now()").fetchone()
        assert migrate(url)[0].startswith(f"{SLIDING_MIGRATION:04d}_")
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                f"SELECT key, recent, clock, now() FROM {SCHEMA}.rate_limit ORDER BY key".encode()
            ).fetchall()
    finally:
        drop_database(pg_url, name)
    assert before is not None
    got = {key: (recent, clock) for key, recent, clock, _ in rows}
    assert got["ended"][0] == [] and got["unused"][0] == []
    [[at_us, units]] = got["live"][0]
    assert units == 3
    assert to_us(before[0]) <= at_us <= to_us(rows[0][3])
    assert to_us(got["live"][1]) == at_us  # the limit's clock: the migration's instant
