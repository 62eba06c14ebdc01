"""Watching runs: task logs, live streams and run events (docs/observability.md).

* :mod:`.logs` — the lines tasks log, written in batches, read per run and searched;
* :mod:`.streams` — the chunks running attempts publish, live and from the start;
* :mod:`.events` — queued / assigned / started / retrying / finished, per run or filter.

:class:`Observe` bundles them for the gRPC ``Observe`` service and the REST routes, which
read through it and only through it (the dashboard too).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import Gauge

from stoker._core.status import FINAL
from stoker.db import Executor
from stoker.db.store import observe as store
from stoker.engine.observe.events import RunEventOut, RunFeed, parse_cursor
from stoker.engine.observe.logs import (
    LogPage,
    LogWriter,
    decode_run_cursor,
    decode_search_cursor,
    encode_run_cursor,
    encode_search_cursor,
    level_number,
    like_pattern,
)
from stoker.engine.observe.streams import Streams
from stoker.engine.signals import Signals
from stoker.errors import NotFoundError

MAX_LOG_PAGE = 1000

_OPEN = Gauge(
    "stoker_open_subscriptions",
    "Subscriptions open on this engine: stream readers and run-event watches (gRPC and SSE).",
    ["kind"],
)


class Observe:
    """Logs, streams and run events of one engine (or of a REST API without one)."""

    def __init__(
        self,
        db: Executor,
        *,
        signals: Signals | None = None,
        engine_id: str = "",
        max_chunk_bytes: int = 4 * 1024 * 1024,
        stream_retention_s: float = 3600.0,
        stream_attempt_max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._db = db
        self.logs = LogWriter(db)
        self.streams = Streams(
            db,
            engine_id=engine_id,
            max_chunk_bytes=max_chunk_bytes,
            retention_s=stream_retention_s,
            attempt_max_bytes=stream_attempt_max_bytes,
        )
        self.feed = RunFeed(db, signals)
        _OPEN.labels("stream").set_function(lambda: self.streams.subscribers)
        _OPEN.labels("run_events").set_function(lambda: self.feed.watching)

    # -- logs ---------------------------------------------------------------------------

    async def run_logs(
        self, tenant_id: int, run_id: uuid.UUID, cursor: str = "", limit: int = MAX_LOG_PAGE
    ) -> tuple[LogPage, bool]:
        """A page of a run's lines, oldest first, and whether the run has finished.
        ``next_cursor`` is always set (to follow: ask again with it). NotFoundError for a
        run the tenant does not have."""
        found = await store.find_run(self._db, store.FindRun(tenant_id, run_id))
        if found is None:
            raise NotFoundError(f"no run with id {run_id}")
        after_id, after_i = decode_run_cursor(cursor)
        rows = await store.logs_of_run(
            self._db,
            store.LogsOfRun(tenant_id, run_id, after_id, after_i, max(1, min(limit, MAX_LOG_PAGE))),
        )
        if rows:
            after_id, after_i = rows[-1]["id"], rows[-1]["i"]
        return LogPage(rows, encode_run_cursor(after_id, after_i)), found["status"] in FINAL

    async def follow_logs(
        self, tenant_id: int, run_id: uuid.UUID, cursor: str = "", poll_s: float = 0.5
    ) -> AsyncGenerator[tuple[store.LogRow, str], None]:
        """A run's lines after ``cursor``, oldest first, each with the cursor after it,
        until the run has finished and its last lines were read. The run and the cursor
        are checked before the first line: NotFoundError / InvalidRequestError at once."""
        await self.run_logs(tenant_id, run_id, cursor, 1)

        async def lines() -> AsyncGenerator[tuple[store.LogRow, str], None]:
            nonlocal cursor
            empty_after_finish = 0
            while True:
                page, finished = await self.run_logs(tenant_id, run_id, cursor)
                for row in page.rows:
                    yield row, encode_run_cursor(row["id"], row["i"])
                cursor = page.next_cursor or cursor
                if len(page.rows) == MAX_LOG_PAGE:
                    continue
                if not page.rows and finished:
                    # Lines trail a run's result by a moment: one more look, then done.
                    empty_after_finish += 1
                    if empty_after_finish > 1:
                        return
                elif page.rows:
                    empty_after_finish = 0
                await asyncio.sleep(poll_s)

        return lines()

    async def search_logs(
        self,
        tenant_id: int,
        *,
        text: str | None = None,
        level: str | int = 0,
        task_name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> LogPage:
        """The tenant's lines, newest first, one page at a time (``next_cursor`` None on
        the last page)."""
        cursor_at, cursor_id, cursor_i = (
            decode_search_cursor(cursor) if cursor else (None, None, None)
        )
        limit = max(1, min(limit, MAX_LOG_PAGE))
        common: dict[str, Any] = {
            "tenant_id": tenant_id,
            "min_level": level_number(level),
            "pattern": like_pattern(text) if text else None,
            "since": since,
            "until": until,
            "cursor_at": cursor_at,
            "cursor_id": cursor_id,
            "cursor_i": cursor_i,
            "limit": limit + 1,
        }
        rows: list[store.LogRow]
        if task_name:
            rows = await store.search_logs_of_task(
                self._db, store.SearchLogsOfTask(task_name=task_name, **common)
            )
        else:
            rows = await store.search_logs(self._db, store.SearchLogs(**common))
        page = rows[:limit]
        return LogPage(page, encode_search_cursor(page[-1]) if len(rows) > limit else None)

    # -- streams and events -------------------------------------------------------------

    async def stream(
        self, tenant_id: int, run_id: uuid.UUID, attempt: int = 0, after: int = 0
    ) -> tuple[int, AsyncGenerator[store.ChunkRow, None]]:
        """A task run's stream (its current attempt's, or ``attempt``'s), from the chunk
        after sequence number ``after``, and the attempt read. The run is checked before
        the first chunk: NotFoundError / InvalidRequestError at once. Resuming (``after``
        set), ``attempt`` is the attempt read before, 0 included (not "the latest")."""
        task_id, attempt = await self.streams.resolve(tenant_id, run_id, attempt, after > 0)
        return attempt, self.streams.read(tenant_id, task_id, attempt, max(0, after))

    async def events(
        self,
        tenant_id: int,
        *,
        run_id: uuid.UUID | None = None,
        task_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        resume: str = "",
    ) -> AsyncGenerator[RunEventOut, None]:
        """Run events (see :mod:`.events`); an unknown run id is NotFoundError at once.
        ``resume``: the ``cursor`` of the last event a client of one run got (it gets
        the events after it)."""
        if run_id is not None:
            found = await store.find_run(self._db, store.FindRun(tenant_id, run_id))
            if found is None:
                raise NotFoundError(f"no run with id {run_id}")
        return self.feed.watch(
            tenant_id,
            run_id=run_id,
            task_name=task_name,
            metadata=metadata,
            resume=parse_cursor(resume),
        )


__all__ = ["LogPage", "Observe", "RunEventOut"]
