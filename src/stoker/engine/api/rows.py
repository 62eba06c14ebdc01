"""Rows of the read statements (``db/store/read.py``) as the API's response models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from stoker.engine.api.models import Attempt, ErrorSummary, RunError


def run_error(value: Any) -> RunError | None:
    """A stored error document (``{"type", "message", "traceback"}``) as a RunError."""
    if not isinstance(value, dict):
        return None
    return RunError(
        type=str(value.get("type") or "Exception"),
        message=str(value.get("message") or ""),
        traceback=str(value.get("traceback") or ""),
    )


def error_summary(value: Any) -> ErrorSummary | None:
    """A stored error document without its traceback, for lists."""
    error = run_error(value)
    return ErrorSummary(type=error.type, message=error.message) if error else None


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def duration_ms(started: datetime | None, finished: datetime | None) -> int | None:
    """How long an attempt ran, in milliseconds; None unless it started and finished."""
    if started is None or finished is None:
        return None
    return max(0, round((finished - started).total_seconds() * 1000))


def summary_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of :class:`~stoker.engine.api.models.RunSummary` from a run row."""
    return {
        "run_id": row["external_id"],
        "task_name": row["task_name"],
        "status": row["status"],
        "error": run_error(row["error"]),
        "additional_metadata": row["additional_metadata"] or {},
        "priority": row["priority"],
        "attempt": row["attempt"],
        "retry_count": row["retry_count"],
        "max_retries": row["max_retries"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "duration_ms": duration_ms(row["started_at"], row["finished_at"]),
        "worker_id": row["worker_external_id"],
    }


def build_attempts(run: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> list[Attempt]:
    """The attempts of a run: one per ``task_event`` row, then the current attempt.

    Every attempt that ended other than by success left an event; the task row describes
    the attempt it is on now (queued, running, or its final outcome) unless an event
    already tells how that attempt ended.
    """
    attempts: list[Attempt] = []
    ended: set[int] = set()
    for event in events:
        data = event["data"] if isinstance(event["data"], dict) else {}
        attempts.append(
            Attempt(
                number=event["attempt"],
                status=event["kind"],
                error=run_error(data.get("error")),
                worker_id=event["worker_external_id"],
                started_at=_timestamp(data.get("started_at")),
                finished_at=event["created_at"],
            )
        )
        ended.add(event["attempt"])
    if run["attempt"] not in ended:
        status = run["status"]
        attempts.append(
            Attempt(
                number=run["attempt"],
                status=status,
                # The task row keeps the previous attempt's error while a retry waits.
                error=run_error(run["error"]) if status in ("FAILED", "CANCELLED") else None,
                worker_id=run["worker_external_id"],
                started_at=run["started_at"],
                finished_at=run["finished_at"],
            )
        )
    return attempts
