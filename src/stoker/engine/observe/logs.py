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
from typing import Any

from prometheus_client import Counter

from stoker._core.wire import storable_text
from stoker._proto import observe_pb2 as opb
from stoker.db import Executor, NoParams
from stoker.db.store import observe as store
from stoker.engine import faults
from stoker.engine.service import LoopService
from stoker.errors import InvalidRequestError

log = logging.getLogger("stoker.engine.logs")

LOG_LINES = Counter(
    "stoker_log_lines",
    "Task log lines the engine received, by outcome: stored, dropped (the engine's "
    "buffer was full while the database fell behind) or refused (by the database).",
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


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _unb64(cursor: str, kind: str) -> list[str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith(kind):
            raise ValueError(raw)
        return raw[1:].split(":")
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestError("invalid cursor: pass next_cursor as it was returned") from None


def encode_run_cursor(batch_id: int, line: int) -> str:
    """The cursor after line ``line`` of batch ``batch_id`` of a run (opaque to callers)."""
    return _b64(f"r{batch_id}:{line}")


def decode_run_cursor(cursor: str) -> tuple[int, int]:
    if not cursor:
        return 0, 0
    parts = _unb64(cursor, "r")
    try:
        batch_id, line = (int(p) for p in parts)
    except ValueError:
        raise InvalidRequestError("invalid cursor: pass next_cursor as it was returned") from None
    return batch_id, line


def encode_search_cursor(row: store.LogRow) -> str:
    """The cursor after a line of a newest-first search."""
    return _b64(f"s{row['created_at'].timestamp():.6f}:{row['id']}:{row['i']}")


def decode_search_cursor(cursor: str) -> tuple[datetime, int, int]:
    parts = _unb64(cursor, "s")
    try:
        at, batch_id, line = parts
        return datetime.fromtimestamp(float(at), UTC), int(batch_id), int(line)
    except ValueError:
        raise InvalidRequestError("invalid cursor: pass next_cursor as it was returned") from None


def line_time(row: store.LogRow) -> datetime:
    """When a line was logged (on the worker's clock)."""
    return datetime.fromtimestamp(row["at_ms"] / 1000, UTC)


@dataclass(frozen=True, slots=True)
class LogPage:
    """A page of log lines and where the next one starts (None: no more, for a search)."""

    rows: list[store.LogRow]
    next_cursor: str | None


def _params(groups: list[list[Any]]) -> store.InsertLogs:
    """The insert of some attempts' batches: their lines concatenated, and where each
    batch's are (C-level list work only: no loop over lines in Python). The lines' four
    fields go as JSON arrays: ``json.dumps`` is C, where psycopg would adapt a list one
    element at a time in Python (about 5 µs a line on a busy machine, the engine's largest
    cost of a chatty task)."""
    tenants: list[int] = []
    tasks: list[int] = []
    attempts: list[int] = []
    los: list[int] = []
    his: list[int] = []
    max_levels: list[int] = []
    levels: list[int] = []
    loggers: list[str] = []
    messages: list[str] = []
    ats: list[int] = []
    for tenant_id, task_id, attempt, lv, lg, ms, at in groups:
        tenants.append(tenant_id)
        tasks.append(task_id)
        attempts.append(attempt)
        los.append(len(messages) + 1)
        levels.extend(lv)
        loggers.extend(lg)
        messages.extend(ms)
        ats.extend(at)
        his.append(len(messages))
        max_levels.append(max(lv))
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    return store.InsertLogs(
        tenants,
        tasks,
        attempts,
        los,
        his,
        max_levels,
        dumps(levels),
        dumps(loggers),
        dumps(messages),
        dumps(ats),
    )


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
        self._pending: list[list[Any]] = []
        """Groups of one attempt's lines: [tenant, task, attempt, levels, loggers,
        messages, at_ms]."""
        self._pending_lines = 0
        self._full = self.signal()
        self._dropped = 0
        self._warned_at = 0.0
        self.written = 0
        """Lines stored since start (for tests and the curious)."""

    def take(self, tenant_id: int, attempts: Iterable[opb.AttemptLines]) -> None:
        """Queues lines of attempts the sending worker holds (checked by the dispatcher).
        Per attempt, not per line: the lists go on as they came, checked in bulk."""
        for a in attempts:
            messages = list(a.messages)
            n = len(messages)
            if not n or len(a.levels) != n or len(a.loggers) != n or len(a.at_ms) != n:
                continue  # malformed: the lists must be parallel
            if self._pending_lines + n > self._max_pending:
                self._dropped += n
                continue
            loggers = list(a.loggers)
            levels = list(a.levels)
            if max(levels) > 32767 or min(levels) < 0:
                levels = [max(0, min(v, 32767)) for v in levels]
            if max(map(len, messages)) > MAX_LINE_CHARS:
                cut = f"... [truncated by the engine at {MAX_LINE_CHARS} characters]"
                messages = [
                    m if len(m) <= MAX_LINE_CHARS else m[:MAX_LINE_CHARS] + cut for m in messages
                ]
            if "\x00" in "".join(messages) or "\x00" in "".join(loggers):
                messages = [storable_text(m) for m in messages]
                loggers = [storable_text(x) for x in loggers]
            self._pending.append(
                [tenant_id, a.task_id, a.attempt, levels, loggers, messages, list(a.at_ms)]
            )
            self._pending_lines += n
        if self._pending_lines >= self._batch:
            self._full.set()

    async def run(self) -> None:
        while not self.stopping.is_set():
            await self._full.wait(self._interval)
            await self.flush()
        await self.flush()

    async def flush(self) -> None:
        """Writes what waits, about ``batch`` lines per statement."""
        self._report_dropped()
        while self._pending:
            lines = taken = 0
            for group in self._pending:
                taken += 1
                lines += len(group[5])
                if lines >= self._batch:
                    break
            groups, self._pending = self._pending[:taken], self._pending[taken:]
            self._pending_lines -= lines
            try:
                async with self._db.transaction() as tx:
                    await store.relaxed_commit(tx, NoParams())
                    await store.insert_logs(tx, _params(groups))
            except Exception as exc:
                if not faults.transient(exc):
                    # Lines the database refuses are dropped (never retried forever).
                    log.warning("dropped %d task log line(s) the database refused: %s", lines, exc)
                    LOG_LINES.labels("refused").inc(lines)
                    continue
                # The database went away: keep the lines for the next round.
                self._pending[:0] = groups
                self._pending_lines += lines
                raise
            self.written += lines
            LOG_LINES.labels("stored").inc(lines)

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
