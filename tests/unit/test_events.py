"""Event key patterns and which runs an event starts through its subscribers' filters."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from stoker import DeclarationError, DefaultFilter, Stoker
from stoker._core.events import matches, pattern_problem
from stoker.db.store.events import FilterRow
from stoker.engine.ingest.events import EventView, Subscriber, plan_runs

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("order:created", "order:created", True),
        ("order:created", "order:created:eu", False),
        ("order:*", "order:created", True),
        ("order:*", "order", False),
        ("order:*", "order:created:eu", False),
        ("*:created", "order:created", True),
        ("order:**", "order:created", True),
        ("order:**", "order:created:eu", True),
        ("order:**", "order", False),
        ("**", "anything:at:all", True),
        ("Order:*", "order:created", False),
    ],
)
def test_patterns_match_whole_segments(pattern: str, key: str, expected: bool) -> None:
    assert pattern_problem(pattern) is None
    assert matches(pattern, key) is expected


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [("", "non-empty"), ("ord*", "whole segment"), ("a:**:b", "last segment"), ("x" * 501, "500")],
)
def test_bad_patterns_say_why(pattern: str, problem: str) -> None:
    found = pattern_problem(pattern)
    assert found is not None and problem in found


def test_bad_subscriptions_fail_at_declaration() -> None:
    app = Stoker()
    with pytest.raises(DeclarationError, match="whole segment"):

        @app.task(on_events=["order:cr*"])
        def a(input: Any, ctx: Any) -> None: ...

    with pytest.raises(DeclarationError, match="invalid CEL"):

        @app.task(on_events=["x"], default_filters=[DefaultFilter("input.amount >")])
        def b(input: Any, ctx: Any) -> None: ...

    wf = app.workflow("flow", on_events=["order:*"])
    with pytest.raises(DeclarationError, match="belong to the workflow"):

        @wf.task(on_events=["x"])
        def c(input: Any, ctx: Any) -> None: ...


def _filter(owner: str, expression: str, scope: str | None = None) -> FilterRow:
    return FilterRow(
        external_id=uuid.uuid4(),
        task_name=owner,
        workflow_name=None,
        scope=scope,
        expression=expression,
        payload={"by": expression},
    )


def test_filters_decide_per_scope_and_the_first_that_holds_gives_the_payload() -> None:
    a, b, c = (Subscriber("task", n, ("order:*",)) for n in "abc")
    filters = [
        _filter("b", "input.amount > 100"),
        _filter("b", "input.amount > 10"),
        _filter("c", "input.amount > 1000", scope="s7"),
        _filter("c", "input.nope.deeper > 1"),  # fails on every event: never holds
    ]
    events = [
        EventView("order:created", "s7", {"amount": 50}, {}),
        EventView("order:created", "s8", {"amount": 500}, {}),
    ]
    planned = plan_runs(events, [[a, b, c], [a, b, c]], filters)
    got = [
        (p.event, p.subscriber.name, p.filter["expression"] if p.filter else None) for p in planned
    ]
    assert got == [
        (0, "a", None),  # no filters: runs
        (0, "b", "input.amount > 10"),  # the first that holds gives the payload
        # c: its s7 filter and its failing one apply; neither holds
        (1, "a", None),
        (1, "b", "input.amount > 100"),
        # c: only the unscoped failing filter applies to s8: no run
    ]
