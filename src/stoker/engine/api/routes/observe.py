"""Task logs, live streams and run events (docs/observability.md).

* ``GET /api/v1/runs/{run_id}/logs`` — a run's lines, oldest first (a workflow run: all its
  steps'); follow a running run by asking again with ``next_cursor``;
* ``GET /api/v1/tasks/{task_name}/logs`` and ``GET /api/v1/logs`` — search the tenant's
  lines (text, minimum level, task, time), newest first, keyset-paginated;
* ``GET /api/v1/runs/{run_id}/logs/follow`` — Server-Sent Events: a run's lines, stored then
  new, until the run has finished;
* ``GET /api/v1/runs/{run_id}/stream`` — Server-Sent Events: the chunks a task run's attempt
  publishes with ``ctx.put_stream``, from the first, until the attempt ends;
* ``GET /api/v1/runs/{run_id}/events`` and ``GET /api/v1/run-events`` — Server-Sent Events:
  queued, assigned, started, retrying and finished, for one run (until it finishes) or for
  the runs matching a filter.

An SSE response sends ``event: <name>`` and one line of JSON ``data`` per message, a
``: keepalive`` comment every 15 s while nothing happens, and ``event: end`` when the
stream is over. A client that disconnects ends its subscription on the engine. Messages of
one run's logs, stream and events carry an ``id``; a client that reconnects with the last
one in ``Last-Event-ID`` gets what it missed and nothing twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from stoker.db.store.observe import ChunkRow, LogRow
from stoker.engine.api.deps import Auth, StateDep
from stoker.engine.api.errors import ERROR_RESPONSES
from stoker.engine.api.models import ErrorBody
from stoker.engine.api.pages import aware
from stoker.engine.observe import LogPage, Observe, RunEventOut
from stoker.engine.observe.logs import level_name, line_time
from stoker.errors import InvalidRequestError

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["observability"])

KEEPALIVE_S = 15.0
T = TypeVar("T")

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such run for this tenant"}
}
SSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": "Server-Sent Events (see the route's description)",
    }
}


class LogLine(BaseModel):
    """One line a task logged."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "run_id": "6f1c0e0a-6a59-4c43-9d0e-1c7f7b0b2a11",
                "task_run_id": "6f1c0e0a-6a59-4c43-9d0e-1c7f7b0b2a11",
                "task_name": "resize",
                "attempt": 1,
                "level": "INFO",
                "logger": "",
                "message": "resized 3 images",
                "at": "2026-12-03T16:00:00.123000Z",
            }
        }
    )

    run_id: uuid.UUID
    task_run_id: uuid.UUID
    task_name: str
    attempt: int
    level: str
    logger: str
    message: str
    at: datetime


class LogLinePage(BaseModel):
    """A page of log lines; pass ``next_cursor`` back as ``cursor`` for the next one."""

    items: list[LogLine]
    next_cursor: str | None = None
    finished: bool | None = None
    """A run's logs: whether the run has finished (a follower stops once a page after it
    is empty)."""


def _line(row: LogRow) -> LogLine:
    return LogLine(
        run_id=row["run_id"],
        task_run_id=row["task_run_id"],
        task_name=row["task_name"],
        attempt=row["attempt"],
        level=level_name(row["level"]),
        logger=row["logger"],
        message=row["message"],
        at=line_time(row),
    )


def _observe(state: StateDep) -> Observe:
    assert state.observe is not None  # create_app always sets one
    return state.observe


def _page(page: LogPage, finished: bool | None = None) -> LogLinePage:
    return LogLinePage(
        items=[_line(r) for r in page.rows], next_cursor=page.next_cursor, finished=finished
    )


Cursor = Annotated[
    str | None, Query(description="next_cursor of the previous page", max_length=200)
]
Limit = Annotated[int, Query(ge=1, le=1000)]
Text = Annotated[
    str | None, Query(description="Only lines containing this text (case-insensitive)")
]
Level = Annotated[
    str, Query(description="Only lines at or above this level (DEBUG, INFO, WARNING, ...)")
]
Since = Annotated[
    datetime | None, Query(description="Stored at or after (ISO 8601; UTC if no zone)")
]
Until = Annotated[datetime | None, Query(description="Stored before (ISO 8601; UTC if no zone)")]


@router.get("/runs/{run_id}/logs", response_model=LogLinePage, responses=NOT_FOUND)
async def run_logs(
    run_id: uuid.UUID, who: Auth, state: StateDep, cursor: Cursor = None, limit: Limit = 1000
) -> LogLinePage:
    """A run's log lines, oldest first (a workflow run: the lines of all its steps).

    ``next_cursor`` is always set: to follow a running run, ask again with it; once
    ``finished`` is true and a page comes back empty, nothing more will come.
    """
    page, finished = await _observe(state).run_logs(who.tenant_id, run_id, cursor or "", limit)
    return _page(page, finished)


@router.get("/tasks/{task_name}/logs", response_model=LogLinePage)
async def task_logs(
    task_name: str,
    who: Auth,
    state: StateDep,
    text: Text = None,
    level: Level = "DEBUG",
    since: Since = None,
    until: Until = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> LogLinePage:
    """The lines of one task's runs, newest first, one page at a time."""
    return _page(
        await _observe(state).search_logs(
            who.tenant_id,
            text=text,
            level=level,
            task_name=task_name,
            since=aware(since),
            until=aware(until),
            cursor=cursor,
            limit=limit,
        )
    )


@router.get("/logs", response_model=LogLinePage)
async def search_logs(
    who: Auth,
    state: StateDep,
    text: Text = None,
    level: Level = "DEBUG",
    task_name: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
    since: Since = None,
    until: Until = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> LogLinePage:
    """Search the tenant's log lines (text, minimum level, task, time), newest first."""
    return _page(
        await _observe(state).search_logs(
            who.tenant_id,
            text=text,
            level=level,
            task_name=task_name,
            since=aware(since),
            until=aware(until),
            cursor=cursor,
            limit=limit,
        )
    )


# -- Server-Sent Events -------------------------------------------------------------------


def _message(event: str, data: object, ident: str = "") -> str:
    head = f"id: {ident}\n" if ident else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


LastEventId = Annotated[
    str | None,
    Header(
        description="Resume: the id of the last event received (browsers' EventSource sends "
        "it when it reconnects); the events after it follow, none twice",
        max_length=200_000,
    ),
]


async def sse(source: AsyncGenerator[T, None], render: Callable[[T], str]) -> AsyncIterator[str]:
    """``source`` as SSE messages, with a keepalive comment every KEEPALIVE_S and a final
    ``end`` event. ``source`` is read by a task of its own (a timeout must not cancel the
    generator itself); whatever way the response ends, both are closed."""
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue(maxsize=64)

    async def pump() -> None:
        try:
            async for item in source:
                await queue.put((True, item))
            await queue.put((False, None))
        except Exception as exc:
            await queue.put((False, exc))
        finally:
            await source.aclose()

    task = asyncio.create_task(pump(), name="stoker-sse")
    try:
        while True:
            try:
                more, item = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
            except TimeoutError:
                yield ": keepalive\n\n"
                continue
            if not more:
                if isinstance(item, Exception):
                    yield _message("error", {"message": str(item)})
                break
            yield render(item)
        yield _message("end", {})
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def _stream_response(body: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


def _chunk_renderer(attempt: int) -> Callable[[ChunkRow], str]:
    def render(c: ChunkRow) -> str:
        data, ident = c["data"], f"{attempt}.{c['seq']}"
        if c["is_text"]:
            text = data.decode(errors="replace")
            return _message("chunk", {"seq": c["seq"], "text": text}, ident)
        encoded = base64.b64encode(data).decode()
        return _message("chunk", {"seq": c["seq"], "bytes": encoded}, ident)

    return render


def _run_event(e: RunEventOut) -> str:
    return _message(e.kind, e.as_dict(), e.cursor)


def _log_line(item: tuple[LogRow, str]) -> str:
    row, cursor = item
    return _message("line", _line(row).model_dump(mode="json"), cursor)


def _stream_position(last_event_id: str | None) -> tuple[int, int] | None:
    """``(attempt, seq)`` of a stream event id, None for none."""
    if not last_event_id:
        return None
    attempt, _, seq = last_event_id.partition(".")
    if not (attempt.isdigit() and seq.isdigit()) or len(last_event_id) > 40:
        raise InvalidRequestError(f"not a stream event id: {last_event_id[:100]!r}")
    return int(attempt), int(seq)


@router.get(
    "/runs/{run_id}/stream",
    response_class=StreamingResponse,
    responses=SSE | NOT_FOUND,
)
async def run_stream(
    run_id: uuid.UUID,
    who: Auth,
    state: StateDep,
    attempt: Annotated[
        int, Query(ge=0, description="The attempt whose stream to read (0: the latest)")
    ] = 0,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """A task run's live stream (``ctx.put_stream``), as Server-Sent Events.

    Every chunk the attempt published, from the first (a late subscriber misses nothing
    still kept), then live, in order: ``event: chunk`` with ``{"seq": n, "text": ...}`` (a
    str chunk) or ``{"seq": n, "bytes": <base64>}``; ``event: end`` once the attempt ended.
    Each chunk's ``id`` is ``<attempt>.<seq>``: a client that reconnects with it in
    ``Last-Event-ID`` gets that attempt's chunks after it. A workflow run has no stream of
    its own (422): read one of its task runs'.
    """
    after = 0
    position = _stream_position(last_event_id)
    if position is not None:
        attempt, after = position
    read, chunks = await _observe(state).stream(who.tenant_id, run_id, attempt, after)
    return _stream_response(sse(chunks, _chunk_renderer(read)))


@router.get(
    "/runs/{run_id}/events",
    response_class=StreamingResponse,
    responses=SSE | NOT_FOUND,
)
async def run_events(
    run_id: uuid.UUID, who: Auth, state: StateDep, last_event_id: LastEventId = None
) -> StreamingResponse:
    """A run's events as Server-Sent Events, from the first, until the run finishes.

    Each message's event name is its kind (``queued``, ``assigned``, ``started``,
    ``retrying``, ``finished``) and its data a JSON object: ``run_id``, ``task_run_id``,
    ``task_name``, ``kind``, ``attempt``, ``status``, ``at``, ``worker_id`` and
    ``worker_name`` (assigned, started), ``error`` (retrying, finished as FAILED). Each
    message's ``id`` says how far the watch got (for a workflow run, in each of its task
    runs): a client that reconnects with it in ``Last-Event-ID`` gets the events after it.
    """
    events = await _observe(state).events(who.tenant_id, run_id=run_id, resume=last_event_id or "")
    return _stream_response(sse(events, _run_event))


@router.get(
    "/runs/{run_id}/logs/follow",
    response_class=StreamingResponse,
    responses=SSE | NOT_FOUND,
)
async def follow_run_logs(
    run_id: uuid.UUID, who: Auth, state: StateDep, last_event_id: LastEventId = None
) -> StreamingResponse:
    """A run's log lines as Server-Sent Events: those stored, oldest first, then new ones
    as they are written, until the run has finished and its last lines were sent.

    Each line is ``event: line`` with the JSON of a ``LogLine``; its ``id`` is the cursor
    after it (the same as ``cursor`` of ``/runs/{run_id}/logs``): a client that reconnects
    with it in ``Last-Event-ID`` gets the lines after it.
    """
    lines = await _observe(state).follow_logs(who.tenant_id, run_id, last_event_id or "")
    return _stream_response(sse(lines, _log_line))


@router.get("/run-events", response_class=StreamingResponse, responses=SSE)
async def watch_runs(
    who: Auth,
    state: StateDep,
    task_name: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
    metadata: Annotated[
        str | None,
        Query(description='A JSON object the runs\' metadata must contain, e.g. {"user": "a"}'),
    ] = None,
) -> StreamingResponse:
    """The events of every run created from now on that matches the filter (task name,
    additional metadata), as Server-Sent Events, until the client disconnects; the same
    messages as ``/runs/{run_id}/events``."""
    md: dict[str, Any] | None = None
    if metadata:
        try:
            md = json.loads(metadata)
        except ValueError as exc:
            raise InvalidRequestError(f"metadata is not JSON: {exc}") from None
        if not isinstance(md, dict):
            raise InvalidRequestError("metadata must be a JSON object")
    events = await _observe(state).events(who.tenant_id, task_name=task_name, metadata=md)
    return _stream_response(sse(events, _run_event))
