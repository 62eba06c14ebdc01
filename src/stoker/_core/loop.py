"""Running a process's event loop: uvloop when it is installed and not turned off.

uvloop runs the same asyncio programs on libuv, with a cheaper loop iteration, callbacks
and socket handling; the engine and the worker spend a share of every task in the loop
(docs/performance.md). ``STOKER_UVLOOP=0`` (the ``uvloop`` setting of the engine and of
clients and workers) keeps the standard loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], *, uvloop: bool = True) -> T:
    """``asyncio.run(main)``, on uvloop when ``uvloop`` and it can be imported."""
    if uvloop:
        try:
            import uvloop as uv
        except ImportError:
            pass
        else:
            with asyncio.Runner(loop_factory=uv.new_event_loop) as runner:
                return runner.run(main)
    return asyncio.run(main)


def uvloop_running() -> bool:
    """Whether the running loop is uvloop's (for logs and tests)."""
    return type(asyncio.get_running_loop()).__module__.startswith("uvloop")
