"""The :class:`Context` a task receives with its input, and the attempt's runtime state.

:class:`Context` is the user's surface: who the run is, its parents' outputs, the
timeout, cancellation, releasing the slot. What the worker runtime changes while the
attempt runs (the deadline, the cancel flag and reason, whether the slot was released,
the child index counter, the parents' outcomes, the callbacks that report to the engine)
lives on :class:`AttemptState`, which the runtime owns and the context reads through."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from stoker._core import envelope
from stoker._core.envelope import StepInput
from stoker._sdk.logs import LEVELS, level_of
from stoker.config import parse_duration

if TYPE_CHECKING:
    from stoker._sdk.logs import AttemptLog
    from stoker._sdk.task import Task

O = TypeVar("O")  # noqa: E741 - a parent step's output type

task_logger = logging.getLogger("stoker.task")
"""Where ``ctx.log`` lines go when the context was made by hand (no worker)."""

current_context: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "stoker_current_context", default=None
)
"""The Context of the task running in this (asyncio task or thread) context, set by the
worker runtime; runs triggered while it is set are children of that task."""


class AttemptState:
    """The runtime's side of one attempt: what the worker changes while it runs.

    ``on_refresh(seconds)``, ``on_release_slot()`` and ``on_spawn()`` report to the
    runtime (and so to the engine); the defaults do nothing, for a context made by hand
    to call a task function directly.
    """

    def __init__(
        self,
        *,
        execution_timeout_s: float | None = None,
        on_refresh: Callable[[float], None] = lambda _: None,
        on_release_slot: Callable[[], None] = lambda: None,
        on_spawn: Callable[[], None] = lambda: None,
        on_cancel_run: Callable[[str], None] | None = None,
    ) -> None:
        self.deadline: float | None = (
            time.monotonic() + execution_timeout_s if execution_timeout_s else None
        )
        """When the attempt times out (``time.monotonic()``); None: no limit."""
        self.cancelled = asyncio.Event()
        self.cancel_flag = threading.Event()
        self.cancel_reason = ""
        self.slot_released = False
        self.step = StepInput(b"")
        """A workflow step's parents' outcomes (empty for a plain task)."""
        self.spawned_children = 0
        self._on_refresh = on_refresh
        self._on_release_slot = on_release_slot
        self._on_spawn = on_spawn
        self._on_cancel_run = on_cancel_run
        self._child_lock = threading.Lock()
        self._next_child = 0
        self.log: AttemptLog | None = None
        """Where the attempt's log lines and stream chunks go (None: a context made by
        hand; lines then go to the ``stoker.task`` logger and chunks nowhere)."""

    def bind_input(self, raw: bytes, is_step: bool) -> bytes:
        """A workflow step's input arrives wrapped with its parents' outcomes
        (:mod:`stoker._core.envelope`): keeps those and returns the workflow's input."""
        if not is_step:
            return raw
        self.step = envelope.unwrap(raw)
        return self.step.input

    def cancel(self, reason: str) -> None:
        """Marks the attempt cancelled (a timeout, a cancellation, a hand-back)."""
        self.cancel_reason = reason
        self.cancel_flag.set()
        self.cancelled.set()

    def request_cancel(self, run_id: str) -> None:
        """Asks the engine to cancel ``run_id`` (this attempt's run or its workflow run)."""
        if self._on_cancel_run is None:
            raise RuntimeError("ctx.cancel() works in a task run by a worker")
        self._on_cancel_run(run_id)

    def refresh(self, seconds: float) -> None:
        """Moves the deadline to ``seconds`` from now and tells the engine."""
        self.deadline = time.monotonic() + seconds
        self._on_refresh(seconds)

    def release_slot(self) -> None:
        """Gives the attempt's slots back (once)."""
        if not self.slot_released:
            self.slot_released = True
            self._on_release_slot()

    def index_children_from(self, first: int) -> None:
        """Numbers this attempt's next children from ``first`` (a durable task keeps its
        recorded children's indexes, their positions, apart from the others)."""
        with self._child_lock:
            self._next_child = first

    def take_child_indexes(self, n: int) -> int:
        """Reserves the next ``n`` child indexes of this attempt; returns the first."""
        with self._child_lock:
            first = self._next_child
            self._next_child += n
            self.spawned_children += n
        self._on_spawn()
        return first


class Context:
    """What a running task knows about itself, and how it talks back to the engine."""

    def __init__(
        self,
        *,
        run_id: str,
        task_name: str,
        attempt: int,
        retry_count: int,
        additional_metadata: dict[str, Any],
        worker_id: str,
        task_id: int = 0,
        state: AttemptState | None = None,
        filter_payload: Any = None,
        lifespan: Any = None,
        max_attempts: int = 1,
        parent_run_id: str | None = None,
        child_index: int | None = None,
        child_key: str | None = None,
        workflow_run_id: str | None = None,
    ) -> None:
        self.run_id = run_id
        self.task_id = task_id
        """The engine's id of this task run (children are linked to it)."""
        self.task_name = task_name
        self.attempt = attempt
        self.retry_count = retry_count
        self.additional_metadata = additional_metadata
        self.worker_id = worker_id
        self.state = state if state is not None else AttemptState()
        """The attempt's runtime state, owned by the worker runtime."""
        self.filter_payload = filter_payload
        """In a run an event started: the payload of the filter that let it through
        (README "Events"); None when no filter applied or the run was not started by an
        event."""
        self.max_attempts = max_attempts
        """How many attempts the run may take in all (its retries + 1); the last one is
        ``ctx.attempt == ctx.max_attempts - 1`` (attempts count from 0)."""
        self.parent_run_id = parent_run_id
        """The run that spawned this one as a child (for a step of a child workflow: the
        workflow's parent); None when it is not a child."""
        self.child_index = child_index
        """This run's index among its parent's children (None when not a child)."""
        self.child_key = child_key
        """The ``child_key`` this run was spawned with (None: none, or not a child)."""
        self.workflow_run_id = workflow_run_id
        """The workflow run this step belongs to (None for a plain task)."""
        self.lifespan = lifespan
        """What the worker's lifespan yielded (``app.worker(lifespan=...)``); None without
        one, and in a subprocess (``executor="process"``)."""

    @property
    def deadline(self) -> float | None:
        """When this attempt times out, on the ``time.monotonic()`` clock (None: no limit)."""
        return self.state.deadline

    @property
    def cancelled(self) -> asyncio.Event:
        """Set once this attempt was cancelled; async tasks may wait on it."""
        return self.state.cancelled

    @property
    def cancel_reason(self) -> str:
        """Why this attempt was cancelled ("" while it was not)."""
        return self.state.cancel_reason

    @property
    def is_cancelled(self) -> bool:
        """True once this attempt was cancelled (timeout, cancellation); sync tasks poll it."""
        return self.state.cancel_flag.is_set()

    @property
    def spawned_children(self) -> int:
        """How many child runs this attempt has started."""
        return self.state.spawned_children

    def cancel(self) -> None:
        """Cancels this run (for a workflow step: the workflow run) through the engine:
        the attempt is then cancelled like any other (``ctx.is_cancelled`` turns true, an
        async task is interrupted), and the run ends CANCELLED without a retry."""
        self.state.request_cancel(self.workflow_run_id or self.run_id)

    def refresh_timeout(self, duration: str | float | timedelta) -> None:
        """Resets the execution timeout to ``duration`` from now (``"30s"``, seconds, timedelta)."""
        delta = parse_duration(duration, "refresh_timeout")
        assert delta is not None
        self.state.refresh(delta.total_seconds())

    def release_slot(self) -> None:
        """Gives this attempt's worker slots back while it keeps running (e.g. before a long
        wait on something external), so the worker can take other work. Idempotent."""
        self.state.release_slot()

    # -- logs and streams ---------------------------------------------------------------

    def log(self, message: str, level: str | int = "INFO") -> None:
        """Adds a line to this attempt's log (read with ``app.runs.logs(run_id)``, REST
        ``/api/v1/runs/{id}/logs`` or ``stoker logs``). ``level``: DEBUG, INFO, WARNING,
        ERROR, CRITICAL or a number. Never blocks: lines are sent in batches; past the
        worker's bound per attempt they are counted and one marker line says how many
        were dropped."""
        number = LEVELS.get(level) if isinstance(level, str) else None
        if number is None:
            number = level_of(level)
        target = self.state.log
        if target is None:
            task_logger.log(number, "%s", message)
        else:
            target.add(number, str(message))

    def put_stream(self, chunk: str | bytes) -> None:
        """Publishes a chunk of this attempt's live stream (LLM tokens, progress): read
        in order with ``async for chunk in ref.stream()`` or REST SSE
        ``/api/v1/runs/{id}/stream``, live and by late subscribers. Never blocks; a
        chunk over the payload limit raises PayloadTooLargeError naming the limit."""
        if self.state.log is not None:
            self.state.log.put_stream(chunk)

    async def aio_put_stream(self, chunk: str | bytes) -> None:
        """:meth:`put_stream` for async tasks: queues the chunk and lets the worker's
        loop send it before the task goes on."""
        self.put_stream(chunk)
        await asyncio.sleep(0)

    # -- workflows ----------------------------------------------------------------------

    def task_output(self, parent: Task[Any, O]) -> O:
        """The output of ``parent``, a completed parent step of this workflow step, as the
        parent's return type. ValueError when it is not a parent or was skipped."""
        step = str(getattr(parent, "step", parent.name))
        parents = self.state.step.parents
        if step in self.state.step.skipped:
            raise ValueError(f"step {step!r} was skipped; check ctx.was_skipped() first")
        if step not in parents:
            raise ValueError(
                f"step {step!r} is not a completed parent of {self.task_name!r} "
                f"(parents with outputs: {', '.join(sorted(parents)) or 'none'})"
            )
        return parent.decode_output(json.dumps(parents[step]).encode())

    def was_skipped(self, parent: Task[Any, Any]) -> bool:
        """Whether ``parent`` (a parent step) was skipped by its skip_if conditions."""
        return str(getattr(parent, "step", parent.name)) in self.state.step.skipped

    @property
    def task_run_errors(self) -> dict[str, str]:
        """In an on_failure step: the failed steps and their errors (``"Type: message"``)."""
        return {
            step: f"{e.get('type', 'Exception')}: {e.get('message', '')}"
            if isinstance(e, dict)
            else str(e)
            for step, e in self.state.step.errors.items()
        }
