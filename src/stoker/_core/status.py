"""Run statuses and the stored error document: one definition for the SDK, the engine and
the API.

A run's ``status`` column holds one of :class:`RunStatus`; the SQL statements use the same
literals. An attempt that did not succeed stores its error as one JSON document with the
keys ``type``, ``message`` and ``traceback`` (:class:`ErrorDoc`), whether a worker reported
it or the engine decided it (timeouts, lost workers, cancellation, policy errors).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, TypedDict


class RunStatus(StrEnum):
    """Where a run stands."""

    PENDING = "PENDING"  # a workflow step waiting for its parents or conditions
    QUEUED = "QUEUED"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    EVICTED = "EVICTED"  # a durable task taken off its worker while it waits (docs/durable.md)
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINAL: frozenset[str] = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
"""The statuses a run never leaves (unless a user replays it)."""


class ErrorDoc(TypedDict):
    """The stored error of an attempt, a run or a workflow run."""

    type: str
    message: str
    traceback: str


def error_doc(type_: str, message: str, traceback: str = "") -> ErrorDoc:
    """The error document for ``type_`` and ``message``."""
    return {"type": type_, "message": message, "traceback": traceback}


def error_json(type_: str, message: str, traceback: str = "") -> str:
    """The error document serialized, for a ``jsonb`` parameter."""
    return json.dumps(error_doc(type_, message, traceback))


def read_error(value: Mapping[str, Any] | None) -> ErrorDoc | None:
    """A stored error document read back (tolerant of missing keys), or ``None``."""
    if not value:
        return None
    return error_doc(
        str(value.get("type") or ""),
        str(value.get("message") or ""),
        str(value.get("traceback") or ""),
    )
