"""Reading what runs logged and streamed, and their events: ``app.runs.logs(run_id)``,
``ref.stream()``, ``ref.events()``, ``app.runs.events(...)``.

Logs are pages read with the ``ListLogs`` call (unary, retried like every call). Streams
and events are server-streaming calls on the running loop's channel: reading them is an
``async for``; breaking out of it (or cancelling the task) cancels the call, and the
engine lets go of the subscription.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stoker._core.wire import encode_json
from stoker._proto import observe_pb2 as opb
from stoker.errors import EngineUnavailableError

if TYPE_CHECKING:
    from stoker._sdk.calls import Connection

FOLLOW_POLL_S = 0.5
"""How often a follower of a running run's logs asks for new lines."""

FOLLOW_GRACE_S = 1.0
"""How long a follower keeps asking after the run finished (its last lines trail it)."""


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line a task logged (``ctx.log`` or a ``logging`` record)."""

    run_id: str
    task_run_id: str
    """The task run that logged it (a workflow run's step; ``run_id`` for a task run)."""
    task_name: str
    attempt: int
    level: str
    logger: str
    """The ``logging`` logger's name ("" for ``ctx.log``)."""
    message: str
    at: datetime

    @classmethod
    def from_pb(cls, e: opb.LogEntry) -> LogLine:
        return cls(
            e.run_id, e.task_run_id, e.task_name, e.attempt, e.level, e.logger, e.message,
            _at(e.at_ms),
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class RunEvent:
    """Something that happened to a run: ``kind`` is ``queued``, ``assigned`` (to
    ``worker_id`` / ``worker_name``), ``started``, ``retrying`` (with the attempt's
    ``error``) or ``finished`` (``status`` COMPLETED, FAILED or CANCELLED)."""

    run_id: str
    task_run_id: str
    task_name: str
    kind: str
    attempt: int
    status: str
    at: datetime
    worker_id: str | None = None
    worker_name: str | None = None
    error: str | None = None

    @classmethod
    def from_pb(cls, e: opb.RunEvent) -> RunEvent:
        return cls(
            e.run_id, e.task_run_id, e.task_name, e.kind, e.attempt, e.status, _at(e.at_ms),
            e.worker_id or None, e.worker_name or None, e.error or None,
        )  # fmt: skip


def _request(run_id: str, cursor: str) -> opb.ListLogsRequest:
    return opb.ListLogsRequest(run_id=run_id, cursor=cursor, limit=1000)


def read_logs(connection: Connection, run_id: str) -> list[LogLine]:
    """Every line of a run stored so far, oldest first."""
    lines: list[LogLine] = []
    cursor = ""
    while True:
        page = connection.calls.list_logs(_request(run_id, cursor))
        lines += [LogLine.from_pb(e) for e in page.lines]
        cursor = page.next_cursor
        if len(page.lines) < 1000:
            return lines


async def aio_read_logs(connection: Connection, run_id: str) -> list[LogLine]:
    lines: list[LogLine] = []
    cursor = ""
    while True:
        page = await connection.calls.aio_list_logs(_request(run_id, cursor))
        lines += [LogLine.from_pb(e) for e in page.lines]
        cursor = page.next_cursor
        if len(page.lines) < 1000:
            return lines


def follow_logs(
    connection: Connection, run_id: str, poll_s: float = FOLLOW_POLL_S
) -> Iterator[LogLine]:
    """The run's lines, then new ones as they are stored, until the run has finished and
    everything it logged was read: lines still on their way when it finished (they are
    written in batches, a little after the result) are waited for ``FOLLOW_GRACE_S``."""
    cursor = ""
    finished_at: float | None = None
    while True:
        page = connection.calls.list_logs(_request(run_id, cursor))
        for e in page.lines:
            yield LogLine.from_pb(e)
        cursor = page.next_cursor
        if len(page.lines) == 1000:
            continue
        if page.finished:
            now = time.monotonic()
            finished_at = finished_at or now
            if not page.lines and now - finished_at >= FOLLOW_GRACE_S:
                return
        time.sleep(poll_s)


RESUMES = 5
"""Broken reads in a row (no chunk or event between them) a stream or a watch of one run
resumes after, on the next engine address, before the error reaches the caller."""


async def _pause(failures: int) -> None:
    await asyncio.sleep(min(2.0, 0.1 * 2**failures))


async def read_stream(
    connection: Connection, run_id: str, attempt: int = 0
) -> AsyncIterator[str | bytes]:
    """The chunks of a task run's stream (its latest attempt's, or ``attempt``'s), from
    the first, live until the attempt ends; str chunks come back as str. A read broken by
    an engine going away resumes (on the next engine address) after the last chunk given,
    on the same attempt: nothing is missed or given twice."""
    after = failures = 0
    while True:
        request = opb.ReadStreamRequest(run_id=run_id, attempt=attempt, after_seq=after)
        try:
            async for chunk in connection.calls.read_stream(request):
                attempt = chunk.attempt or attempt
                after, failures = chunk.seq, 0
                yield chunk.data.decode() if chunk.text else chunk.data
            return
        except EngineUnavailableError:
            failures += 1
            if failures > RESUMES:
                raise
            await _pause(failures)


async def watch_runs(
    connection: Connection,
    *,
    run_id: str = "",
    task_name: str | None = None,
    additional_metadata: Mapping[str, Any] | None = None,
) -> AsyncIterator[RunEvent]:
    """Run events (see :class:`RunEvent`): of one run until it finishes, or of the runs
    created from now on that match the filter, until the caller stops reading. A watch of
    one run broken by an engine going away resumes (on the next engine address) after the
    last event given."""
    metadata = (
        encode_json(dict(additional_metadata), "additional_metadata")
        if additional_metadata
        else b""
    )
    cursor = ""
    failures = 0
    while True:
        request = opb.WatchRunsRequest(
            run_id=run_id,
            task_name=task_name or "",
            additional_metadata=metadata,
            resume=cursor,
        )
        given = False
        try:
            async for event in connection.calls.watch_runs(request):
                cursor, failures, given = event.cursor, 0, True
                yield RunEvent.from_pb(event)
            return
        except EngineUnavailableError:
            failures += 1
            if not run_id or failures > RESUMES or (given and not cursor):
                raise
            await _pause(failures)


__all__ = ["LogLine", "RunEvent"]
