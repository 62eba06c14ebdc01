"""Task logs: the lines workers send, written in batches, and read back a page at a time.

Workers batch their attempts' log lines (bounded per attempt on the worker, see
:mod:`stoker._sdk.logs`) and send them on their stream; the dispatcher hands the lines of
attempts the connection holds to :meth:`LogWriter.take`. The writer keeps them in memory
and writes every ``interval_s`` (or as soon as ``batch`` lines wait) in one statement,
off the path of task events: a slow log write never delays a completion. What waits is
bounded too (``max_pending`` lines): past it new lines are dropped and counted, so a
database that cannot keep up costs lines, not the engine's memory.

Lines are stored in ``task_log`` (range-partitioned by day, dropped with the history by
the retention). A run's lines are read in insertion order (``id``); the tenant-wide
search is newest first, keyset-paginated on ``(created_at, id)``.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import Counter

from stoker._core.wire import storable_text
from stoker._proto import observe_pb2 as opb
from stoker.db import Executor
from stoker.db.store import observe as store
from stoker.engine.service import LoopService
from stoker.errors import InvalidRequestError

log = logging.getLogger("stoker.engine.logs")

LOG_LINES = Counter(
    "stoker_log_lines",
    "Task log lines the engine received, by outcome: stored, or dropped (the engine's "
    "buffer was full while the database fell behind).",
    ["outcome"],
)

MAX_LINE_CHARS = 64 * 1024
"""The engine's own cap on one line (the worker's bound is usually lower)."""

LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}
LEVEL_NUMBERS = {name: n for n, name in LEVELS.items()} | {"WARN": 30, "FATAL": 50}


def level_name(level: int) -> str:
    """``INFO`` for 20; ``LEVEL 25`` for a custom level."""
    return LEVELS.get(level, f"LEVEL {level}")


def level_number(level: str | int) -> int:
    """The number of a level name (case-insensitive) or number; InvalidRequestError else."""
    if isinstance(level, int) or level.isdigit():
        return int(level)
    found = LEVEL_NUMBERS.get(level.upper())
    if found is None:
        raise InvalidRequestError(
            f"unknown log level {level!r}: use DEBUG, INFO, WARNING, ERROR, CRITICAL or a number"
        )
    return found


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching ``text`` anywhere, its wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def encode_run_cursor(line_id: int) -> str:
    """The cursor after a run's line (opaque to callers)."""
    return base64.urlsafe_b64encode(f"r{line_id}".encode()).decode().rstrip("=")


def decode_run_cursor(cursor: str) -> int:
    if not cursor:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("r"):
            raise ValueError(raw)
        return int(raw[1:])
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestError("invalid cursor: pass next_cursor as it was returned") from None


def encode_search_cursor(row: store.LogRow) -> str:
    """The cursor after a line of a newest-first search."""
    raw = f"s{row['created_at'].timestamp():.6f}:{row['id']}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_search_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("s"):
            raise ValueError(raw)
        at, line_id = raw[1:].split(":", 1)
        return datetime.fromtimestamp(float(at), UTC), int(line_id)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestError("invalid cursor: pass next_cursor as it was returned") from None


@dataclass(frozen=True, slots=True)
class LogPage:
    """A page of log lines and where the next one starts (None: no more, for a search)."""

    rows: list[store.LogRow]
    next_cursor: str | None


class LogWriter(LoopService):
    """Buffers the log lines workers send and writes them in batches."""

    name = "logs"

    def __init__(
        self,
        db: Executor,
        *,
        interval_s: float = 0.05,
        batch: int = 5_000,
        max_pending: int = 200_000,
    ) -> None:
        super().__init__()
        self._db = db
        self._interval = interval_s
        self._batch = batch
        self._max_pending = max_pending
        self._pending: list[list[object]] = []
        self._full = self.signal()
        self._dropped = 0
        self._warned_at = 0.0
        self.written = 0
        """Lines stored since start (for tests and the curious)."""

    def take(self, tenant_id: int, lines: Iterable[opb.LogLine]) -> None:
        """Queues lines of attempts the sending worker holds (checked by the dispatcher)."""
        pending = self._pending
        for line in lines:
            if len(pending) >= self._max_pending:
                self._dropped += 1
                continue
            message = line.message
            if len(message) > MAX_LINE_CHARS:
                cut = f"... [truncated by the engine at {MAX_LINE_CHARS} characters]"
                message = message[:MAX_LINE_CHARS] + cut
            pending.append(
                [
                    tenant_id,
                    line.task_id,
                    line.attempt,
                    max(0, min(line.level, 32767)),
                    storable_text(line.logger[:200]),
                    storable_text(message),
                    line.at_ms or time.time_ns() // 1_000_000,
                ]
            )
        if len(pending) >= self._batch:
            self._full.set()

    async def run(self) -> None:
        while not self.stopping.is_set():
            await self._full.wait(self._interval)
            await self.flush()
        await self.flush()

    async def flush(self) -> None:
        """Writes what waits, ``batch`` lines per statement."""
        self._report_dropped()
        while self._pending:
            lines, self._pending = self._pending[: self._batch], self._pending[self._batch :]
            try:
                await store.insert_logs(self._db, store.InsertLogs(json.dumps(lines)))
            except Exception:
                # The database went away: keep the lines for the next round (bounded).
                self._pending[:0] = lines[: max(0, self._max_pending - len(self._pending))]
                raise
            self.written += len(lines)
            LOG_LINES.labels("stored").inc(len(lines))

    def _report_dropped(self) -> None:
        if not self._dropped:
            return
        LOG_LINES.labels("dropped").inc(self._dropped)
        now = time.monotonic()
        if now - self._warned_at >= 10:
            log.warning(
                "dropped %d task log line(s): more than %d waited to be written",
                self._dropped,
                self._max_pending,
            )
            self._warned_at = now
        self._dropped = 0
