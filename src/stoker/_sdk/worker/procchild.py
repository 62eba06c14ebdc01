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
import os
import queue
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any, ClassVar

import pydantic_core
from pydantic import ValidationError

from stoker._sdk.context import AttemptState, Context, current_context
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


class ProcessContext(Context):
    """The :class:`~stoker.Context` of a task running in a subprocess.

    Reading the run's facts, ``ctx.task_output``, ``ctx.is_cancelled`` and the deadline
    work locally. The context methods named in :attr:`FORWARDED` run in the worker,
    on the attempt's real context, through the pipe (their arguments and results must
    pickle); ``refresh_timeout`` and ``release_slot`` reach the worker through the
    attempt state's callbacks, so they also keep the local deadline and flag right.
    """

    FORWARDED: ClassVar[frozenset[str]] = frozenset({"log", "put_stream"})
    """Context methods run whole in the worker (a method that only reports to the engine
    and has no local state belongs here): a log line and a stream chunk join the attempt's
    log and stream in the worker, bounded and batched as for any task."""

    def __init__(self, channel: Channel, call_id: int, **about: Any) -> None:
        super().__init__(**about)
        self._channel = channel
        self._call_id = call_id

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
            ctx = ProcessContext(channel, call_id, state=state, **about)
            done = _outcome(call_id, tasks[key], raw, is_step, ctx)
        except Exception as exc:  # the task could not be found or its context not made
            done = ("done", call_id, "error", type(exc).__name__, str(exc), "", True, 0)
        finally:
            running.pop(call_id, None)
        channel.send(done)
