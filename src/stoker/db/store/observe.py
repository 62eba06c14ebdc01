"""Task logs, live streams and run events.

Statements of ``db/sql/observe.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from stoker.db.store import Exec, Many, NoParams, One

# -- logs --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InsertLogs:
    tenants: list[int]
    tasks: list[int]
    attempts: list[int]
    los: list[int]
    his: list[int]
    max_levels: list[int]
    levels: str
    """The lines' fields as JSON arrays: psycopg adapts a Python list element by element
    (microseconds a line), json.dumps in C."""
    loggers: str
    messages: str
    ats: str


insert_logs = Exec[InsertLogs]("insert_logs")

relaxed_commit = Exec[NoParams]("relaxed_commit")


@dataclass(frozen=True, slots=True)
class FindRun:
    tenant_id: int
    run_id: uuid.UUID


class FoundRun(TypedDict):
    """A run by external id: a workflow run, or a task run with its id and attempt."""

    is_workflow: bool
    task_id: int | None
    attempt: int | None
    status: str


find_run = One[FindRun, FoundRun]("find_run")


class LogRow(TypedDict):
    """One stored log line: line ``i`` (from 1) of batch ``id``."""

    id: int
    i: int
    created_at: datetime
    run_id: uuid.UUID
    task_run_id: uuid.UUID
    task_name: str
    attempt: int
    level: int
    logger: str
    message: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class LogsOfRun:
    tenant_id: int
    run_id: uuid.UUID
    after_id: int
    after_i: int
    limit: int


logs_of_run = Many[LogsOfRun, LogRow]("logs_of_run")


@dataclass(frozen=True, slots=True)
class SearchLogs:
    tenant_id: int
    min_level: int
    pattern: str | None
    since: datetime | None
    until: datetime | None
    cursor_at: datetime | None
    cursor_id: int | None
    cursor_i: int | None
    limit: int


search_logs = Many[SearchLogs, LogRow]("search_logs")


@dataclass(frozen=True, slots=True)
class SearchLogsOfTask:
    tenant_id: int
    task_name: str
    min_level: int
    pattern: str | None
    since: datetime | None
    until: datetime | None
    cursor_at: datetime | None
    cursor_id: int | None
    cursor_i: int | None
    limit: int


search_logs_of_task = Many[SearchLogsOfTask, LogRow]("search_logs_of_task")

# -- streams -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InsertStreamChunks:
    task_ids: list[int]
    attempts: list[int]
    seqs: list[int]
    tenant_ids: list[int]
    datas: list[bytes]
    texts: list[bool]
    ends: list[bool]


insert_stream_chunks = Exec[InsertStreamChunks]("insert_stream_chunks")


@dataclass(frozen=True, slots=True)
class ReadStream:
    tenant_id: int
    task_id: int
    attempt: int
    after_seq: int
    limit: int


class ChunkRow(TypedDict):
    """One stored stream chunk."""

    seq: int
    data: bytes
    is_text: bool
    is_end: bool


read_stream = Many[ReadStream, ChunkRow]("read_stream")


@dataclass(frozen=True, slots=True)
class AttemptState:
    task_id: int


class AttemptNow(TypedDict):
    """A task run's current attempt and status."""

    attempt: int
    status: str


attempt_state = One[AttemptState, AttemptNow]("attempt_state")


@dataclass(frozen=True, slots=True)
class PruneStreams:
    older_than_s: float
    limit: int


prune_streams = Exec[PruneStreams]("prune_streams")

# -- run events --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchTasks:
    tenant_id: int
    run_ids: list[uuid.UUID]


class WatchedTask(TypedDict):
    """A task run as a run watch sees it."""

    id: int
    external_id: uuid.UUID
    run_id: uuid.UUID
    task_name: str
    status: str
    attempt: int
    created_at: datetime
    assigned_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    error: dict[str, Any] | None
    worker_external_id: uuid.UUID | None
    worker_name: str | None


watch_tasks = Many[WatchTasks, WatchedTask]("watch_tasks")


@dataclass(frozen=True, slots=True)
class WatchNewTasks:
    tenant_id: int
    since: datetime
    task_name: str | None
    metadata: str
    limit: int


class NewTask(TypedDict):
    """A task run a filtered watch takes up, and its run."""

    external_id: uuid.UUID
    run_id: uuid.UUID
    created_at: datetime


watch_new_tasks = Many[WatchNewTasks, NewTask]("watch_new_tasks")


@dataclass(frozen=True, slots=True)
class WatchAttemptEnds:
    tenant_id: int
    task_ids: list[int]


class AttemptEnd(TypedDict):
    """How an earlier attempt ended."""

    task_id: int
    attempt: int
    kind: str
    data: dict[str, Any]
    created_at: datetime
    worker_external_id: uuid.UUID | None
    worker_name: str | None


watch_attempt_ends = Many[WatchAttemptEnds, AttemptEnd]("watch_attempt_ends")
