"""The step-input envelope (stoker._core.envelope) and the stored error document
(stoker._core.status.read_error): what the engine writes, the SDK reads back."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from stoker._core.envelope import ERRORS, INPUT, PARENTS, SKIPPED, StepInput, unwrap, wrap_root
from stoker._core.status import error_doc, error_json, read_error

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(value=json_values)
def test_a_root_step_gets_its_input_back_with_no_parents(value: Any) -> None:
    wrapped = wrap_root(json.dumps(value).encode())
    assert json.loads(wrapped) == {INPUT: value, PARENTS: {}, SKIPPED: [], ERRORS: {}}
    step = unwrap(wrapped)
    assert json.loads(step.input) == value
    assert step == StepInput(step.input)  # nothing from parents


@given(
    value=json_values,
    outputs=st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=3),
    skipped=st.lists(st.text(min_size=1, max_size=8), max_size=3),
    failed=st.dictionaries(st.text(min_size=1, max_size=8), st.text(), max_size=2),
)
def test_a_step_reads_what_its_parents_left_behind(
    value: Any, outputs: dict[str, Any], skipped: list[str], failed: dict[str, str]
) -> None:
    # The document dag_step_input builds in SQL, with the same keys.
    errors = {s: error_doc("ValueError", m) for s, m in failed.items()}
    raw = json.dumps({INPUT: value, PARENTS: outputs, SKIPPED: skipped, ERRORS: errors})
    step = unwrap(raw.encode())
    assert json.loads(step.input) == value
    assert step.parents == outputs
    assert step.skipped == frozenset(skipped)
    assert step.errors == errors


@given(
    value=json_values.filter(lambda v: not (isinstance(v, dict) and PARENTS in v)),
)
def test_a_plain_tasks_input_is_passed_through_untouched(value: Any) -> None:
    raw = json.dumps(value).encode()
    assert unwrap(raw) == StepInput(raw)


def test_missing_or_null_parts_of_an_envelope_read_as_empty() -> None:
    step = unwrap(b'{"parents": null}')
    assert step == StepInput(b"null")
    assert unwrap(b"") == StepInput(b"")


# -- the stored error document ------------------------------------------------------------


@given(type_=st.text(), message=st.text(), traceback=st.text())
def test_an_error_document_reads_back_as_written(type_: str, message: str, traceback: str) -> None:
    doc = error_doc(type_, message, traceback)
    assert read_error(doc) == doc
    assert read_error(json.loads(error_json(type_, message, traceback))) == doc


def test_reading_an_error_tolerates_missing_keys_and_odd_values() -> None:
    assert read_error(None) is None
    assert read_error({}) is None
    assert read_error({"message": "boom"}) == {"type": "", "message": "boom", "traceback": ""}
    assert read_error({"type": "E", "message": None, "traceback": 3}) == {
        "type": "E",
        "message": "",
        "traceback": "3",
    }
