"""The durable timers' loop wakes for a new deadline only when it is earlier than the one
it sleeps until: a thousand tasks falling asleep for later cost it no round each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from stoker.engine.controllers.durable_timers import DurableTimers


def timers() -> DurableTimers:
    nothing: Any = None
    return DurableTimers(nothing, nothing, nothing, nothing, nothing, interval_s=1.0)


def test_a_later_deadline_does_not_wake_the_sleeping_loop_an_earlier_one_does() -> None:
    t = timers()
    now = datetime.now(UTC)
    t._next_at = (now + timedelta(seconds=10)).timestamp()  # asleep until then
    t.wake(now + timedelta(seconds=20))
    assert not t._wake.is_set()
    t.wake(now + timedelta(seconds=5))
    assert t._wake.is_set()


def test_while_a_round_runs_every_deadline_wakes_the_loop_again() -> None:
    # The round may have planned before this deadline was recorded.
    t = timers()
    t.wake(datetime.now(UTC) + timedelta(hours=1))
    assert t._wake.is_set()
    u = timers()
    u._next_at = 0.0
    u.wake()  # a deadline of unknown time always wakes it
    assert u._wake.is_set()
