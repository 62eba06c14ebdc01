"""What a due cron does in one round (stoker.engine.controllers.crons.decide): the ticks
that fire (on time or caught up) meet the overlap policy one after the other, oldest first,
as they would have on time; a paused cron starts nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stoker.db.store.crons import DueCron
from stoker.engine.controllers.crons import decide

NOW = datetime(2026, 3, 1, 10, 2, 30, tzinfo=UTC)
PREVIOUS = uuid.uuid4()


def minute(m: int) -> datetime:
    return datetime(2026, 3, 1, 10, tzinfo=UTC) + timedelta(minutes=m)


def row(overlap: str, *, tick: datetime, buffered: datetime | None = None, **extra: Any) -> DueCron:
    values: dict[str, Any] = {
        "id": 1,
        "tenant_id": 1,
        "name": "c",
        "task_name": "t",
        "workflow_name": None,
        "expression": "* * * * *",
        "timezone": "UTC",
        "input": {},
        "additional_metadata": {},
        "priority": 0,
        "overlap": overlap,
        "catch_up_window_s": 600,
        "catch_up_max": 3,
        "next_fire_at": tick,
        "buffered_tick": buffered,
        "paused": False,
        "last_run_id": PREVIOUS,
    }
    values.update(extra)
    return DueCron(**values)  # type: ignore[typeddict-item]


# Down since 9:55: the ticks of 10:00, 10:01, 10:02 are caught up (at most 3).
CAUGHT = [minute(0), minute(1), minute(2)]


@pytest.mark.parametrize(
    ("overlap", "previous", "start", "skipped", "held", "cancel"),
    [
        ("allow", "RUNNING", CAUGHT, [], None, False),
        ("skip", "COMPLETED", CAUGHT[:1], CAUGHT[1:], None, False),
        ("skip", "RUNNING", [], CAUGHT, None, False),
        ("buffer_one", "COMPLETED", CAUGHT[:1], CAUGHT[1:2], CAUGHT[2], False),
        ("buffer_one", "QUEUED", [], CAUGHT[:2], CAUGHT[2], False),
        ("cancel_previous", "RUNNING", CAUGHT[2:], CAUGHT[:2], None, True),
        ("cancel_previous", None, CAUGHT[2:], CAUGHT[:2], None, False),
    ],
)
def test_caught_up_ticks_meet_the_overlap_policy_in_turn(
    overlap: str,
    previous: str | None,
    start: list[datetime],
    skipped: list[datetime],
    held: datetime | None,
    cancel: bool,
) -> None:
    d = decide(row(overlap, tick=minute(-5)), NOW, previous, False)
    assert d.start == start
    assert d.records == [(t, "skipped") for t in skipped]
    assert d.buffered == held
    assert d.cancel == (PREVIOUS if cancel else None)
    assert d.following == minute(3)


def test_a_held_tick_starts_when_the_previous_run_ended() -> None:
    r = row("buffer_one", tick=minute(3), buffered=minute(1))
    waiting = decide(r, NOW, "RUNNING", False)  # no tick due: it keeps holding
    assert (waiting.start, waiting.buffered, waiting.following) == ([], minute(1), minute(3))
    ended = decide(r, NOW, "COMPLETED", False)
    assert (ended.start, ended.buffered) == ([minute(1)], None)
    # With a new tick due too: the held one starts, the new one is held behind it.
    due = decide(row("buffer_one", tick=minute(2), buffered=minute(1)), NOW, "FAILED", False)
    assert (due.start, due.buffered, due.records) == ([minute(1)], minute(2), [])


def test_a_paused_cron_records_its_ticks_and_starts_nothing() -> None:
    d = decide(row("allow", tick=minute(-5)), NOW, None, True)
    assert d.start == [] and d.records == [(t, "paused") for t in CAUGHT]
    assert d.following == minute(3)
    held = decide(row("buffer_one", tick=minute(3), buffered=minute(1)), NOW, "COMPLETED", True)
    assert (held.start, held.buffered) == ([], minute(1))  # held until resumed


def test_a_tick_held_under_another_policy_is_dropped() -> None:
    d = decide(row("skip", tick=minute(2), buffered=minute(1)), NOW, "COMPLETED", False)
    assert (d.start, d.buffered) == ([minute(2)], None)
