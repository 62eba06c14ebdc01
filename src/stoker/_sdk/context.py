"""The :class:`Context` a task receives with its input."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from stoker.config import parse_duration


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
    ) -> None:
        self.run_id = run_id
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

    def _cancel(self, reason: str) -> None:
        self.cancel_reason = reason
        self._cancelled_flag.set()
        self.cancelled.set()
