"""The event-loop watchdog: a blocked loop leaves the stacks of every thread in the log.

The engine is one asyncio loop; a call that blocks it (a synchronous library call, a long
CPU-bound step) stops gRPC answers, heartbeats and every leader loop at once, and leaves
nothing in the log to say where. The watchdog re-arms
:func:`faulthandler.dump_traceback_later` from the loop every second (more often for a
short ``stall_s``): if the loop does not come back within ``stall_s``, the interpreter's own
watchdog thread (C code, which runs even while the GIL is held) writes the traceback of
every thread to stderr, the blocked frame among them. When the loop comes back it logs how
long it was away.

``STOKER_LOOP_STALL_S`` sets ``stall_s`` (0 turns the watchdog off). Sending ``SIGUSR1`` to
an engine dumps the stacks of its threads at any time (:func:`enable_stack_dumps`), and
``SIGUSR2`` logs every asyncio task with the chain of calls it is awaiting
(:func:`enable_task_dumps`): what a call that never answers is waiting for.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import signal
import sys
import time
import traceback
from types import FrameType
from typing import Any

log = logging.getLogger("stoker.engine.watchdog")

_TICK_S = 1.0


def enable_stack_dumps() -> None:
    """``kill -USR1 <pid>`` writes the traceback of every thread to stderr."""
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)


def enable_task_dumps(loop: asyncio.AbstractEventLoop) -> None:
    """``kill -USR2 <pid>`` logs every task of ``loop`` and what it awaits."""
    if hasattr(signal, "SIGUSR2"):
        loop.add_signal_handler(signal.SIGUSR2, lambda: log.warning("%s", describe_tasks()))


def describe_tasks() -> str:
    """Every task of the running loop, each with the chain of frames it is awaiting."""
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    lines = [f"{len(tasks)} asyncio tasks:"]
    for task in tasks:
        lines.append(f"task {task.get_name()}:")
        frames = _await_chain(task.get_coro())
        lines += [f"  {line.rstrip()}" for line in traceback.format_list(frames)]
    return "\n".join(lines)


def _await_chain(coro: Any) -> list[traceback.FrameSummary]:
    """The frames from a coroutine down to what it awaits at the bottom (a future, say)."""
    out: list[traceback.FrameSummary] = []
    for _ in range(100):
        frame: FrameType | None = None
        for attr in ("cr_frame", "ag_frame", "gi_frame"):
            frame = frame or getattr(coro, attr, None)
        if frame is not None:
            code = frame.f_code
            out.append(traceback.FrameSummary(code.co_filename, frame.f_lineno, code.co_name))
        awaited = None
        for attr in ("cr_await", "ag_await", "gi_yieldfrom"):
            awaited = awaited or getattr(coro, attr, None)
        if awaited is None:
            break
        if not any(hasattr(awaited, a) for a in ("cr_frame", "ag_frame", "gi_frame")):
            out.append(traceback.FrameSummary("<awaiting>", 0, repr(awaited)[:300]))
            break
        coro = awaited
    return out


async def watch(stall_s: float) -> None:
    """Runs until cancelled; see the module docstring."""
    if stall_s <= 0:
        return
    # The timer is re-armed every tick, so it fires once the loop has been away for about
    # stall_s (the tick's own sleep does not count).
    tick = min(_TICK_S, stall_s / 4)
    try:
        while True:
            faulthandler.dump_traceback_later(stall_s + tick, repeat=False, file=sys.stderr)
            began = time.monotonic()
            await asyncio.sleep(tick)
            away = time.monotonic() - began - tick
            if away >= stall_s:
                log.warning(
                    "the event loop was blocked for %.1fs; the stacks of every thread were "
                    "written to stderr when it had been blocked for %gs",
                    away,
                    stall_s,
                )
    finally:
        faulthandler.cancel_dump_traceback_later()
