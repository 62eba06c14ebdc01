"""The rules of durable waits' conditions that the SDK and the engine share."""

from __future__ import annotations

import pytest

from stoker._core.durable import WaitLeaf, wait_holds, wait_leaves, wait_request
from stoker.engine.durable.waits import parse_wait


def test_a_request_round_trips_with_paths() -> None:
    event = WaitLeaf("0.0", "event", key="paid", expression="input.ok", lookback_ms=5)
    timer = WaitLeaf("0.1", "sleep", ms=1000)
    other = WaitLeaf("1", "event", key="shipped")
    request = wait_request([[event, timer], other])
    assert wait_leaves(request) == [event, timer, other]


def test_items_are_anded_and_or_groups_ored() -> None:
    request = wait_request(
        [[WaitLeaf("0.0", "sleep", ms=1), WaitLeaf("0.1", "event", key="a")],
         WaitLeaf("1", "event", key="b")]
    )  # fmt: skip
    assert not wait_holds(request, [])
    assert not wait_holds(request, ["0.1"])
    assert not wait_holds(request, ["1"])
    assert wait_holds(request, ["0.0", "1"])
    assert wait_holds(request, ["0.1", "1"])


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"[]", "not an object"),
        (b'{"conditions": []}', "at least one condition"),
        (b'{"conditions": [{"kind": "parent"}]}', "unknown wait condition kind"),
        (b'{"conditions": [{"kind": "sleep", "ms": -1}]}', "duration >= 0"),
        (b'{"conditions": [{"kind": "event", "key": ""}]}', "event key"),
        (b'{"conditions": [{"kind": "event", "key": "k", "lookback_ms": -1}]}', "0 to 24 h"),
        (b'{"conditions": [{"kind": "event", "key": "k", "lookback_ms": 86400001}]}', "24 h"),
        (b'{"conditions": [{"kind": "event", "key": "k", "expression": "a >"}]}', "invalid CEL"),
    ],
)
def test_the_engine_refuses_a_malformed_wait(raw: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_wait(raw)
