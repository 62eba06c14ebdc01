"""Wire limits shared by the SDK and the engine (stoker._core.wire): requests split to fit
a message, the message limit, and the payload checks that refuse what Postgres cannot
store before anything is sent or written."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stoker._core.wire import (
    MAX_JSON_DEPTH,
    MESSAGE_HEADROOM,
    json_problem,
    message_limit,
    split_batches,
    text_problem,
)

MARGIN = 4096  # room split_batches keeps for a request's other fields
PREFIX = 10  # a repeated field's tag and length prefix, per item


@dataclass(frozen=True)
class Item:
    """Stands for a protobuf message: only its encoded size matters."""

    n: int
    size: int

    def ByteSize(self) -> int:
        return self.size


def request_size(batch: list[Item]) -> int:
    return MARGIN + sum(i.size + PREFIX for i in batch)


@given(
    sizes=st.lists(st.integers(0, 5000), max_size=60),
    limit=st.integers(MARGIN, 30_000),
    max_items=st.integers(1, 10),
)
def test_batches_keep_every_item_in_order_and_fill_up_to_the_limits(
    sizes: list[int], limit: int, max_items: int
) -> None:
    items = [Item(n, size) for n, size in enumerate(sizes)]
    batches = split_batches(items, limit, max_items)
    assert [i for b in batches for i in b] == items
    assert all(1 <= len(b) <= max_items for b in batches)
    for b in batches:
        # Over the limit only as an item too large alone, which gRPC then refuses.
        assert request_size(b) <= limit or len(b) == 1
    for b, after in itertools.pairwise(batches):
        # A batch ends only when the next item would not fit in it.
        assert len(b) == max_items or request_size([*b, after[0]]) > limit


def test_no_items_make_no_requests() -> None:
    assert split_batches([], 10_000, 5) == []


def test_a_request_may_take_exactly_the_limit() -> None:
    items = [Item(n, 100) for n in range(5)]
    exact = MARGIN + 2 * (100 + PREFIX)
    assert [len(b) for b in split_batches(items, exact, 10)] == [2, 2, 1]
    assert [len(b) for b in split_batches(items, exact - 1, 10)] == [1, 1, 1, 1, 1]
    assert [len(b) for b in split_batches(items, 10**6, 2)] == [2, 2, 1]


@given(payload=st.integers(0, 2**31))
def test_a_message_holds_one_payload_and_its_headroom(payload: int) -> None:
    assert message_limit(payload) == payload + MESSAGE_HEADROOM
    assert MESSAGE_HEADROOM >= MARGIN  # a request's own fields fit in the headroom


# -- payload checks -----------------------------------------------------------------------

# Text Postgres stores: no NUL, no lone surrogate (in values and in keys alike).
storable_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
storable = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | storable_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(storable_text, children, max_size=4)
    ),
    max_leaves=20,
)


@given(value=storable, ascii_only=st.booleans())
def test_storable_json_is_accepted(value: Any, ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert json_problem(raw) is None
    assert json_problem(raw, serialized=True) is None


@given(depth=st.integers(MAX_JSON_DEPTH - 3, MAX_JSON_DEPTH + 3), bracket=st.sampled_from("[{"))
def test_nesting_is_refused_past_the_limit(depth: int, bracket: str) -> None:
    value: Any = 1
    for _ in range(depth):
        value = [value] if bracket == "[" else {"k": value}
    problem = json_problem(json.dumps(value).encode())
    if depth <= MAX_JSON_DEPTH:
        assert problem is None
    else:
        assert problem == f"it nests {depth} levels deep, over the limit of {MAX_JSON_DEPTH}"


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    assert json_problem(json.dumps(["[" * 500, "{" * 500]).encode()) is None


@given(before=st.text(max_size=5), after=st.text(max_size=5))
def test_a_nul_character_is_refused_but_its_escaped_spelling_is_kept(
    before: str, after: str
) -> None:
    before, after = before.replace("\x00", ""), after.replace("\x00", "")
    nul = json.dumps({"k": f"{before}\x00{after}"}).encode()
    for serialized in (False, True):
        assert "NUL" in (json_problem(nul, serialized=serialized) or "")
    literal = json.dumps({"k": f"{before}\\u0000{after}"}).encode()  # backslash, u, 0000
    assert json_problem(literal) is None


@pytest.mark.parametrize(
    ("raw", "starts"),
    [
        (json.dumps("\ud800").encode(), "it holds a lone UTF-16 surrogate"),
        (b'{"a": ', "it is not JSON"),
        (b'"\xff"', "it is not UTF-8 text"),
        ("[1]".encode("utf-16"), "it is not UTF-8 text"),
    ],
)
def test_what_postgres_cannot_store_is_refused_with_the_reason(raw: bytes, starts: str) -> None:
    problem = json_problem(raw)
    assert problem is not None and problem.startswith(starts)


@given(text=st.text())
def test_text_is_refused_only_for_a_nul(text: str) -> None:
    problem = text_problem(text)
    assert (problem is not None) == ("\x00" in text)
