"""The step-input envelope: how a workflow step receives its input.

A plain task's stored input is the caller's JSON document. A workflow step's stored input
wraps the workflow run's input with what its parents left behind::

    {"input": <workflow input>, "parents": {step: output}, "skipped": [step, ...],
     "errors": {step: error document}}

The engine writes it twice — at trigger time for root steps (:func:`wrap_root`, no parents
yet) and when a step becomes ready (``dag_step_input`` in ``db/sql/dags.sql`` builds the same
keys with ``jsonb_build_object``) — and the SDK unwraps it before the task's input model sees
it (:func:`unwrap`). The key names below are the contract; the SQL uses the same literals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

INPUT = "input"
PARENTS = "parents"
SKIPPED = "skipped"
ERRORS = "errors"


def wrap_root(raw_input: bytes) -> bytes:
    """The envelope of a step without parents, around an already-serialized input."""
    return b'{"' + INPUT.encode() + b'":' + raw_input + b',"parents":{},"skipped":[],"errors":{}}'


@dataclass(frozen=True, slots=True)
class StepInput:
    """An unwrapped envelope: the workflow input and the parents' outcomes."""

    input: bytes
    parents: dict[str, Any] = field(default_factory=dict)
    skipped: frozenset[str] = frozenset()
    errors: dict[str, Any] = field(default_factory=dict)


def unwrap(raw: bytes) -> StepInput:
    """Reads an envelope; a document that is not one is returned whole as the input."""
    wrapped = json.loads(raw or b"{}")
    if not isinstance(wrapped, dict) or PARENTS not in wrapped:
        return StepInput(raw)
    return StepInput(
        json.dumps(wrapped.get(INPUT)).encode(),
        dict(wrapped.get(PARENTS) or {}),
        frozenset(wrapped.get(SKIPPED) or ()),
        dict(wrapped.get(ERRORS) or {}),
    )
