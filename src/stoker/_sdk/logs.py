"""What a running attempt logs and streams, on the worker side.

**Logs.** ``ctx.log(message, level=...)`` and the records of the standard ``logging``
module emitted while an attempt runs go to the attempt's :class:`AttemptLog`, which bounds
them (``LogLimits``: lines and bytes per attempt, bytes per line) and queues them on the
worker's :class:`~stoker._sdk.worker.session.Outbox`. Nothing is sent from the task's own
path: the session's send loop ships what waits in batches, every ``SHIP_EVERY_S`` or with
the next task event (lines go out before the event that ends their attempt, so the engine
still holds the attempt when they arrive).

Past the bound, lines are counted, not kept; when the attempt ends one marker line says
how many lines and bytes were dropped. A line longer than the per-line bound is cut, with
a marker saying by how much.

**Which attempt a record belongs to.** :class:`CaptureHandler`, on the root logger while a
worker runs, attributes a record by :data:`current_log` — a context variable the runtime
sets for each attempt. Async tasks have their own asyncio context, and a sync task's body
runs in a pool thread under a copy of it, so both are attributed exactly, however many
attempts run at once. A thread a task starts does not inherit context variables in
Python, so while capture is installed ``threading.Thread.start`` carries the starting
thread's attempt over to the new thread (:func:`_start_with_attempt`): records from
threads a task starts are attributed to that task's attempt. A record emitted outside any
attempt (the worker's own, other threads') is left to the other handlers alone.

**Streams.** ``ctx.put_stream(chunk)`` queues a chunk (str or bytes, at most the payload
limit, and at most ``LogLimits.stream_max_bytes`` per attempt) and wakes the send loop at
once; the attempt's stream is closed with an end marker when it ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stoker._proto import observe_pb2 as opb
from stoker.errors import DeclarationError, PayloadTooLargeError

SHIP_EVERY_S = 0.1
"""How often waiting log lines are sent at the latest."""

LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "WARN": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}


def level_of(level: str | int) -> int:
    """A level name (case-insensitive) or number as a number; ValueError otherwise."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    if isinstance(level, str) and level.upper() in LEVELS:
        return LEVELS[level.upper()]
    raise ValueError(
        f"unknown log level {level!r}: use DEBUG, INFO, WARNING, ERROR, CRITICAL or a number"
    )


@dataclass(frozen=True, slots=True)
class LogLimits:
    """How much one attempt may log and stream (``Worker(log_max_lines=...)``)."""

    max_lines: int = 1000
    max_bytes: int = 1024 * 1024
    line_max_bytes: int = 16 * 1024
    stream_max_bytes: int = 64 * 1024 * 1024

    def check(self, worker: str) -> LogLimits:
        for name in ("max_lines", "max_bytes", "line_max_bytes", "stream_max_bytes"):
            if getattr(self, name) <= 0:
                raise DeclarationError(f"worker {worker!r}: log {name} must be at least 1")
        if self.line_max_bytes < 64:
            raise DeclarationError(f"worker {worker!r}: log_line_max_bytes must be at least 64")
        return self


class Shipping:
    """The lines and chunks waiting to be sent, shared by every attempt of a worker (from
    any thread) and taken by the session's send loop."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self.chunks: list[opb.StreamPut] = []
        self._dirty: dict[int, AttemptLog] = {}
        """Attempts with lines waiting, by id()."""
        self._held: list[opb.AttemptLines] = []
        """Lines taken for a stream that broke, sent first on the next one."""
        self._wake = wake

    @property
    def lines(self) -> bool:
        """Whether log lines wait."""
        return bool(self._dirty or self._held)

    def mark(self, log: AttemptLog) -> None:
        """``log`` has lines waiting."""
        if id(log) not in self._dirty:
            with self._lock:
                self._dirty[id(log)] = log

    def put_chunk(self, chunk: opb.StreamPut) -> None:
        with self._lock:
            self.chunks.append(chunk)
        self._wake()

    def take(self) -> tuple[list[opb.StreamPut], list[opb.AttemptLines]]:
        """Everything waiting: the chunks in order, and each attempt's lines in order."""
        with self._lock:
            chunks, self.chunks = self.chunks, []
            dirty, self._dirty = self._dirty, {}
            held, self._held = self._held, []
        lines = held + [b for b in (log.take_lines() for log in dirty.values()) if b is not None]
        return chunks, lines

    def give_back(self, chunks: list[opb.StreamPut], lines: list[opb.AttemptLines]) -> None:
        """Puts back what could not be sent (a stream that broke), ahead of newer items."""
        with self._lock:
            self.chunks[:0] = chunks
            self._held[:0] = lines

    def __bool__(self) -> bool:
        return bool(self.chunks or self._dirty or self._held)


class AttemptLog:
    """One attempt's log lines and stream chunks, bounded (see the module docstring)."""

    def __init__(
        self, task_id: int, attempt: int, shipping: Shipping, limits: LogLimits, max_chunk: int
    ) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self._shipping = shipping
        self._limits = limits
        self._max_chunk = max_chunk
        self._lock = threading.Lock()
        self.lines = 0
        self.bytes = 0
        self.dropped_lines = 0
        self.dropped_bytes = 0
        self.closed = False
        self._seq = 0
        self._stream_bytes = 0
        # Lines not sent yet (parallel lists, swapped out whole by take_lines).
        self._levels: list[int] = []
        self._loggers: list[str] = []
        self._messages: list[str] = []
        self._at: list[int] = []

    def add(self, level: int, message: str, logger: str = "", at_ms: int = 0) -> None:
        """Keeps one line, unless the attempt's bound is reached (then counts it).
        ``at_ms``: when it was logged (epoch ms; default now)."""
        if self.closed:
            return
        limits = self._limits
        # Characters bound bytes from below and, times 4, from above: encode only when
        # the line may be long.
        size = len(message)
        if size * 4 > limits.line_max_bytes or not message.isascii():
            raw = message.encode(errors="replace")
            size = len(raw)
            if size > limits.line_max_bytes:
                keep = raw[: limits.line_max_bytes].decode(errors="ignore")
                message = (
                    f"{keep}... [line truncated: {size - limits.line_max_bytes} more bytes "
                    f"over the limit of {limits.line_max_bytes} bytes a line]"
                )
                size = limits.line_max_bytes
        with self._lock:
            if self.lines >= limits.max_lines or self.bytes + size > limits.max_bytes:
                self.dropped_lines += 1
                self.dropped_bytes += size
                return
            self.lines += 1
            self.bytes += size
            self._levels.append(level)
            self._loggers.append(logger)
            self._messages.append(message)
            self._at.append(at_ms or time.time_ns() // 1_000_000)
            first = len(self._levels) == 1
        if first:
            self._shipping.mark(self)

    def take_lines(self) -> opb.AttemptLines | None:
        """The lines not sent yet, as one message (None: none)."""
        with self._lock:
            if not self._levels:
                return None
            levels, self._levels = self._levels, []
            loggers, self._loggers = self._loggers, []
            messages, self._messages = self._messages, []
            at, self._at = self._at, []
        return opb.AttemptLines(
            task_id=self.task_id,
            attempt=self.attempt,
            levels=levels,
            loggers=loggers,
            messages=messages,
            at_ms=at,
        )

    def put_stream(self, chunk: str | bytes) -> None:
        """Publishes one chunk of the attempt's live stream."""
        if isinstance(chunk, str):
            data, text = chunk.encode(), True
        elif isinstance(chunk, bytes | bytearray | memoryview):
            data, text = bytes(chunk), False
        else:
            raise TypeError(f"a stream chunk is str or bytes, not {type(chunk).__name__}")
        if len(data) > self._max_chunk:
            raise PayloadTooLargeError(
                f"the stream chunk is {len(data)} bytes, over the payload limit of "
                f"{self._max_chunk} bytes"
            )
        if self.closed:
            return
        with self._lock:
            if self._stream_bytes + len(data) > self._limits.stream_max_bytes:
                raise PayloadTooLargeError(
                    f"the attempt's stream would reach {self._stream_bytes + len(data)} bytes, "
                    f"over the limit of {self._limits.stream_max_bytes} bytes an attempt "
                    "(Worker(stream_max_bytes=...))"
                )
            self._stream_bytes += len(data)
            self._seq += 1
            seq = self._seq
        self._shipping.put_chunk(
            opb.StreamPut(task_id=self.task_id, attempt=self.attempt, seq=seq, data=data, text=text)
        )

    def close(self, *, reported: bool) -> None:
        """The attempt ended: the drop marker and the stream's end go out (``reported``:
        its end is reported to the engine, which still holds it until then)."""
        if self.closed:
            return
        self.closed = True
        if not reported:
            return
        limits = self._limits
        if self.dropped_lines:
            with self._lock:
                self._levels.append(logging.WARNING)
                self._loggers.append("stoker")
                self._messages.append(
                    f"[stoker] {self.dropped_lines} more log line(s) "
                    f"({self.dropped_bytes} bytes) dropped: this attempt reached its "
                    f"bound of {limits.max_lines} lines / {limits.max_bytes} bytes"
                )
                self._at.append(time.time_ns() // 1_000_000)
            self._shipping.mark(self)
        if self._seq:
            self._shipping.put_chunk(
                opb.StreamPut(
                    task_id=self.task_id, attempt=self.attempt, seq=self._seq + 1, end=True
                )
            )


current_log: contextvars.ContextVar[AttemptLog | None] = contextvars.ContextVar(
    "stoker_current_log", default=None
)
"""The log of the attempt running in this (asyncio task or thread) context."""

_thread_log = threading.local()
"""A thread started by a task: the attempt it belongs to (set by _start_with_attempt)."""


def attempt_log() -> AttemptLog | None:
    """The attempt log of the caller: its context's, or its thread's."""
    found = current_log.get()
    if found is None:
        found = getattr(_thread_log, "log", None)
    return found


class CaptureHandler(logging.Handler):
    """Sends the records emitted inside an attempt to that attempt's log."""

    def emit(self, record: logging.LogRecord) -> None:
        target = attempt_log()
        if target is None or target.closed:
            return
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[0] is not None:
                message = f"{message}\n{self.formatException(record.exc_info)}"
        except Exception:
            self.handleError(record)
            return
        target.add(record.levelno, message, record.name)

    def formatException(self, ei: Any) -> str:
        return logging.Formatter().formatException(ei)


_install_lock = threading.Lock()
_installed = 0
_handler = CaptureHandler()
_original_start = threading.Thread.start


def _start_with_attempt(self: threading.Thread) -> None:
    """``Thread.start`` that carries the starting thread's attempt to the new thread."""
    target = attempt_log()
    if target is not None:
        run = self.run

        def run_in_attempt() -> None:
            _thread_log.log = target
            try:
                run()
            finally:
                _thread_log.log = None

        self.run = run_in_attempt  # type: ignore[method-assign]
    _original_start(self)


def capturing() -> bool:
    """Whether ``logging`` records are captured into attempts (a worker runs with
    ``capture_logging``)."""
    return _installed > 0


def install_capture() -> None:
    """Starts capturing ``logging`` records into attempts (reference-counted: one per
    running worker)."""
    global _installed
    with _install_lock:
        _installed += 1
        if _installed == 1:
            logging.getLogger().addHandler(_handler)
            threading.Thread.start = _start_with_attempt  # type: ignore[method-assign]


def uninstall_capture() -> None:
    """Undoes one :func:`install_capture`."""
    global _installed
    with _install_lock:
        if _installed == 0:
            return
        _installed -= 1
        if _installed == 0:
            logging.getLogger().removeHandler(_handler)
            threading.Thread.start = _original_start  # type: ignore[method-assign]


def wake_from_any_thread(
    loop: asyncio.AbstractEventLoop, event: asyncio.Event
) -> Callable[[], None]:
    """A function that sets ``event`` (of ``loop``) from the loop's thread or any other."""

    def wake() -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    return wake
