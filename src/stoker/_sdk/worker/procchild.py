"""The subprocess side of ``executor="process"``: runs attempts the worker sends it.

A subprocess is started by :mod:`.procpool` and talks to its worker over one duplex
pipe (a ``multiprocessing`` connection, pickled tuples). Everything that crosses it is
plain data: the task is named by its module and qualified name, the input and the output
travel as the JSON bytes the engine stores.

Worker to subprocess:

* ``("run", call_id, module, qualname, task_name, raw_input, is_step, about)`` — one
  attempt; ``about`` holds the :class:`~stoker.Context` fields and the deadline;
* ``("cancel", call_id, reason)`` — the attempt was cancelled: ``ctx.is_cancelled``
  turns true (the worker kills the subprocess if the body does not return soon);
* ``("reply", request_id, ok, value)`` — the answer to a forwarded call.

Subprocess to worker:

* ``("done", call_id, "ok", output_json)`` or ``("done", call_id, "error", type,
  message, traceback, retryable, retry_after_ms)``;
* ``("logs", call_id, levels, loggers, messages, at_ms)`` — lines the attempt logged
  (``ctx.log``, and ``logging`` records while capture is on: ``about["log_level"]`` is the
  worker's root level, None for no capture), batched by :class:`LogBuffer`;
* ``("call", request_id, call_id, target, method, args, kwargs)`` — a call forwarded to
  the attempt's objects in the worker, ``target`` being ``"ctx"`` (the worker's
  :class:`~stoker.Context`) or ``"state"`` (its ``AttemptState``). This is the one
  channel for every context method that must act in the worker: ``refresh_timeout`` and
  ``release_slot`` go through the state's callbacks; a context method forwarded whole is
  listed in :attr:`ProcessContext.FORWARDED`.

One reader thread owns the receiving end, so a cancellation or a reply arrives while the
main thread runs the task body. If the worker goes away (the pipe closes), the subprocess
exits at once, whatever it was running.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import queue
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, ClassVar

import pydantic_core
from pydantic import ValidationError

from stoker._sdk.context import AttemptState, Context, current_context
from stoker._sdk.logs import LEVELS, level_of
from stoker.errors import NonRetryableError, RetryAfter


class Channel:
    """The subprocess's end of the pipe: sends (under a lock) and waits for replies."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()
        self._replies: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._next = 0

    def send(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            self.conn.send(message)

    def call(self, call_id: int, target: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Runs ``method`` on the attempt's ``target`` in the worker and returns its result
        (raising RuntimeError with the worker's message when it failed there)."""
        self._next += 1
        request = self._next
        self.send(("call", request, call_id, target, method, args, kwargs))
        while True:
            _, got, ok, value = self._replies.get()
            if got == request:
                break
        if not ok:
            raise RuntimeError(f"ctx.{method} failed in the worker: {value}")
        return value

    def replied(self, message: tuple[Any, ...]) -> None:
        self._replies.put(message)


SEND_LOGS_EVERY_S = 0.1
"""How long a line logged in a subprocess waits at most before it is sent."""


class LogBuffer(logging.Handler):
    """The lines the running attempt logs in this subprocess: ``ctx.log`` lines, and the
    ``logging`` records of any thread while capture is on. One attempt runs at a time in
    a subprocess, so the attempt a record belongs to is simply the one running. Lines go
    to the worker in one ``logs`` message every SEND_LOGS_EVERY_S and before ``done``."""

    def __init__(self, channel: Channel) -> None:
        super().__init__()
        self._channel = channel
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self.call_id: int | None = None
        self.capture = False
        self._lines: tuple[list[int], list[str], list[str], list[int]] = ([], [], [], [])
        self._wake = threading.Event()
        threading.Thread(target=self._sender, name="stoker-subprocess-logs", daemon=True).start()

    def start(self, call_id: int, level: int | None) -> None:
        root = logging.getLogger()
        if level is not None:
            root.setLevel(level)
            if self not in root.handlers:
                root.addHandler(self)
        self.capture = level is not None
        with self._lock:
            self.call_id = call_id

    def add(self, level: int, message: str, logger: str) -> None:
        with self._lock:
            if self.call_id is None:
                return  # between attempts (a thread that outlived its attempt)
            levels, loggers, messages, at = self._lines
            levels.append(level)
            loggers.append(logger)
            messages.append(message)
            at.append(time.time_ns() // 1_000_000)
            first = len(levels) == 1
        if first:
            self._wake.set()

    def emit(self, record: logging.LogRecord) -> None:
        if not self.capture or self.call_id is None:
            return
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[0] is not None:
                message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
        except Exception:
            self.handleError(record)
            return
        self.add(record.levelno, message, record.name)

    def flush(self) -> None:
        """Sends what waits (the caller's thread). One flush at a time, so that the lines
        the sender thread took are sent before ``finish`` returns (and ``done`` follows)."""
        with self._flushing:
            with self._lock:
                if not self._lines[0] or self.call_id is None:
                    return
                lines, self._lines = self._lines, ([], [], [], [])
                call_id = self.call_id
            self._channel.send(("logs", call_id, *lines))

    def finish(self) -> None:
        """The attempt ended: what it logged goes out (before its ``done``)."""
        self.flush()
        with self._lock:
            self.call_id = None
            self._lines = ([], [], [], [])

    def _sender(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(SEND_LOGS_EVERY_S)  # lines gather into one message
            self._wake.clear()
            try:
                self.flush()
            except (OSError, ValueError):
                return  # the pipe is gone: the subprocess is exiting


class ProcessContext(Context):
    """The :class:`~stoker.Context` of a task running in a subprocess.

    Reading the run's facts, ``ctx.task_output``, ``ctx.is_cancelled`` and the deadline
    work locally. The context methods named in :attr:`FORWARDED` run in the worker,
    on the attempt's real context, through the pipe (their arguments and results must
    pickle); ``refresh_timeout`` and ``release_slot`` reach the worker through the
    attempt state's callbacks, so they also keep the local deadline and flag right.
    """

    FORWARDED: ClassVar[frozenset[str]] = frozenset({"put_stream"})
    """Context methods run whole in the worker (a method that only reports to the engine
    and has no local state belongs here): a stream chunk joins the attempt's stream in the
    worker, bounded and batched as for any task. ``ctx.log`` lines are batched here
    (:class:`LogBuffer`) and join the attempt's log in the worker."""

    def __init__(self, channel: Channel, call_id: int, logs: LogBuffer, **about: Any) -> None:
        super().__init__(**about)
        self._channel = channel
        self._call_id = call_id
        self._logs = logs

    def log(self, message: str, level: str | int = "INFO") -> None:
        number = LEVELS.get(level) if isinstance(level, str) else None
        if number is None:
            number = level_of(level)
        self._logs.add(number, str(message), "")

    def __getattribute__(self, name: str) -> Any:
        if name in type(self).FORWARDED:
            channel = object.__getattribute__(self, "_channel")
            call_id = object.__getattribute__(self, "_call_id")
            return functools.partial(channel.call, call_id, "ctx", name)
        return super().__getattribute__(name)


def _locate(module: str, qualname: str, task_name: str) -> Any:
    """The declared task: the module's attribute at ``qualname`` is the Task itself when
    the decorator's result was kept under the function's name; otherwise the task is
    found on an app or workflow of that module."""
    from stoker._sdk.app import Stoker
    from stoker._sdk.task import Task
    from stoker._sdk.workflow import Workflow

    mod = importlib.import_module(module)
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if isinstance(obj, Task) and obj.name == task_name:
        return obj
    for value in list(vars(mod).values()):
        candidates: list[Any] = []
        if isinstance(value, Stoker):
            candidates = [value.tasks.get(task_name)]
        elif isinstance(value, Workflow):
            candidates = list(value.steps.values())
        elif isinstance(value, Task):
            candidates = [value]
        for task in candidates:
            if isinstance(task, Task) and task.name == task_name:
                return task
    raise LookupError(
        f"task {task_name!r} was not found in module {module!r} (looked for {qualname!r} "
        "and for the module's apps and workflows)"
    )


def _outcome(call_id: int, task: Any, raw: bytes, is_step: bool, ctx: Context) -> tuple[Any, ...]:
    """Runs one attempt and returns the ``done`` message."""

    def error(
        exc: BaseException, kind: str, tb: str, retryable: bool, after: int = 0
    ) -> tuple[Any, ...]:
        return ("done", call_id, "error", kind, str(exc), tb, retryable, after)

    try:
        value = task.decode_input(ctx.state.bind_input(raw, is_step))
    except ValidationError as exc:
        return error(exc, "InputValidationError", "", False)
    token = current_context.set(ctx)
    try:
        result = task.fn(value, ctx)
    except NonRetryableError as exc:
        return error(exc, type(exc).__name__, traceback.format_exc(), False)
    except RetryAfter as exc:
        after = max(1, int(exc.seconds * 1000))
        return error(exc, type(exc).__name__, traceback.format_exc(), True, after)
    except Exception as exc:
        return error(exc, type(exc).__name__, traceback.format_exc(), True)
    finally:
        current_context.reset(token)
    try:
        output = task.encode_output(result)
    except (pydantic_core.PydanticSerializationError, ValidationError, TypeError, ValueError) as e:
        message = f"the task's output could not be serialized to JSON: {e}"
        return ("done", call_id, "error", "OutputSerializationError", message, "", True, 0)
    return ("done", call_id, "ok", output)


def child_main(conn: Connection) -> None:
    """The subprocess's main function: serves attempts until the pipe closes."""
    channel = Channel(conn)
    logs = LogBuffer(channel)
    runs: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
    running: dict[int, AttemptState] = {}

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                os._exit(0)  # the worker is gone: nothing left to report to
            kind = message[0]
            if kind == "run":
                runs.put(message)
            elif kind == "cancel":
                state = running.get(message[1])
                if state is not None:
                    state.cancel(message[2])
            elif kind == "reply":
                channel.replied(message)
            elif kind == "stop":
                runs.put(None)
                return

    threading.Thread(target=read, name="stoker-subprocess-reader", daemon=True).start()
    tasks: dict[tuple[str, str, str], Any] = {}
    while (message := runs.get()) is not None:
        _, call_id, module, qualname, task_name, raw, is_step, about = message
        deadline = about.pop("deadline")
        logs.start(call_id, about.pop("log_level", None))
        state = AttemptState(
            on_refresh=functools.partial(channel.call, call_id, "state", "refresh"),
            on_release_slot=functools.partial(channel.call, call_id, "state", "release_slot"),
            on_cancel_run=functools.partial(channel.call, call_id, "state", "request_cancel"),
        )
        state.deadline = deadline  # one monotonic clock for the whole machine
        running[call_id] = state
        try:
            key = (module, qualname, task_name)
            if key not in tasks:
                tasks[key] = _locate(module, qualname, task_name)
            ctx = ProcessContext(channel, call_id, logs, state=state, **about)
            done = _outcome(call_id, tasks[key], raw, is_step, ctx)
        except Exception as exc:  # the task could not be found or its context not made
            done = ("done", call_id, "error", type(exc).__name__, str(exc), "", True, 0)
        finally:
            running.pop(call_id, None)
            logs.finish()
        channel.send(done)
