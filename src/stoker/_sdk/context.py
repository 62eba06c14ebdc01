"""The :class:`Context` a task receives with its input."""

from __future__ import annotations

import asyncio
import contextvars
import json
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from stoker._core import envelope
from stoker.config import parse_duration

if TYPE_CHECKING:
    from stoker._sdk.task import Task

O = TypeVar("O")  # noqa: E741 - a parent step's output type

current_context: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "stoker_current_context", default=None
)
"""The Context of the task running in this (asyncio task or thread) context, set by the
worker runtime; runs triggered while it is set are children of that task."""


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
        execution_timeout_s: float | None,
        on_refresh: Callable[[float], None],
        on_release_slot: Callable[[], None] = lambda: None,
        task_id: int = 0,
        on_spawn: Callable[[], None] = lambda: None,
    ) -> None:
        self.run_id = run_id
        self.task_id = task_id
        """The engine's id of this task run (children are linked to it)."""
        self._on_spawn = on_spawn
        self._child_lock = threading.Lock()
        self._next_child = 0
        self.spawned_children = 0
        self._parents: dict[str, Any] = {}
        self._skipped: set[str] = set()
        self._errors: dict[str, Any] = {}
        self.task_name = task_name
        self.attempt = attempt
        self.retry_count = retry_count
        self.additional_metadata = additional_metadata
        self.worker_id = worker_id
        self._on_refresh = on_refresh
        self._on_release_slot = on_release_slot
        self._slot_released = False
        self.deadline: float | None = (
            time.monotonic() + execution_timeout_s if execution_timeout_s else None
        )
        self.cancelled = asyncio.Event()
        self._cancelled_flag = threading.Event()
        self.cancel_reason = ""

    @property
    def is_cancelled(self) -> bool:
        """True once this attempt was cancelled (timeout, cancellation); sync tasks poll it."""
        return self._cancelled_flag.is_set()

    def refresh_timeout(self, duration: str | float | timedelta) -> None:
        """Resets the execution timeout to ``duration`` from now (``"30s"``, seconds, timedelta)."""
        delta = parse_duration(duration, "refresh_timeout")
        assert delta is not None
        seconds = delta.total_seconds()
        self.deadline = time.monotonic() + seconds
        self._on_refresh(seconds)

    def release_slot(self) -> None:
        """Gives this attempt's worker slots back while it keeps running (e.g. before a long
        wait on something external), so the worker can take other work. Idempotent."""
        if not self._slot_released:
            self._slot_released = True
            self._on_release_slot()

    # -- workflows ----------------------------------------------------------------------

    def task_output(self, parent: Task[Any, O]) -> O:
        """The output of ``parent``, a completed parent step of this workflow step, as the
        parent's return type. ValueError when it is not a parent or was skipped."""
        step = str(getattr(parent, "step", parent.name))
        if step in self._skipped:
            raise ValueError(f"step {step!r} was skipped; check ctx.was_skipped() first")
        if step not in self._parents:
            raise ValueError(
                f"step {step!r} is not a completed parent of {self.task_name!r} "
                f"(parents with outputs: {', '.join(sorted(self._parents)) or 'none'})"
            )
        return parent.decode_output(json.dumps(self._parents[step]).encode())

    def was_skipped(self, parent: Task[Any, Any]) -> bool:
        """Whether ``parent`` (a parent step) was skipped by its skip_if conditions."""
        return str(getattr(parent, "step", parent.name)) in self._skipped

    @property
    def task_run_errors(self) -> dict[str, str]:
        """In an on_failure step: the failed steps and their errors (``"Type: message"``)."""
        return {
            step: f"{e.get('type', 'Exception')}: {e.get('message', '')}"
            if isinstance(e, dict)
            else str(e)
            for step, e in self._errors.items()
        }

    def _bind_input(self, raw: bytes, is_step: bool) -> bytes:
        """A workflow step's input arrives wrapped with its parents' outcomes: keeps those
        and returns the workflow's input."""
        if not is_step:
            return raw
        step = envelope.unwrap(raw)
        self._parents = step.parents
        self._skipped = set(step.skipped)
        self._errors = step.errors
        return step.input

    def _take_child_indexes(self, n: int) -> int:
        """Reserves the next ``n`` child indexes of this attempt; returns the first."""
        with self._child_lock:
            first = self._next_child
            self._next_child += n
            self.spawned_children += n
        self._on_spawn()
        return first

    def _cancel(self, reason: str) -> None:
        self.cancel_reason = reason
        self._cancelled_flag.set()
        self.cancelled.set()
