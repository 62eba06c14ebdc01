"""Tasks that run in a worker's subprocesses (``executor="process"``) or its per-task
thread pools, for tests/e2e/test_executors.py. Declared at module level: a subprocess
imports each task by name. The worker serves ``app`` (configured from the environment);
the tests trigger the tasks by name."""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stoker import Context, NonRetryableError, Stoker

app = Stoker()


class Burn(BaseModel):
    seconds: float
    """CPU time to burn (a busy loop)."""
    marker: str = ""
    """A file the task writes its pid to when it starts."""


class Crash(BaseModel):
    how: str
    """"exit" (os._exit), "segv" (a segfault), "raise" or "ok"."""
    until_attempt: int = 99
    """Crash only on attempts before this one."""


def _burn_until(deadline: float, ctx: Context | None = None) -> int:
    n = 0
    while time.monotonic() < deadline:
        n += sum(i * i for i in range(2000))
        if ctx is not None and ctx.is_cancelled:
            break
    return n


@app.task(executor="process", execution_timeout="60s")
def burn(input: Burn, ctx: Context) -> dict[str, Any]:
    """Burns CPU in a subprocess; says where and when it ran."""
    if input.marker:
        Path(input.marker).write_text(str(os.getpid()))
    start = time.time()
    _burn_until(time.monotonic() + input.seconds)
    return {"pid": os.getpid(), "start": start, "end": time.time(), "attempt": ctx.attempt}


@app.task(executor="process", execution_timeout="60s")
def polite(input: Burn, ctx: Context) -> dict[str, Any]:
    """Burns CPU but stops when ``ctx.is_cancelled`` turns true, leaving a note."""
    Path(input.marker).write_text(str(os.getpid()))
    _burn_until(time.monotonic() + input.seconds, ctx)
    if ctx.is_cancelled:
        Path(input.marker + ".cancelled").write_text(ctx.cancel_reason)
    return {"pid": os.getpid()}


@app.task(executor="process", retries=1, backoff_factor=None)
def crash(input: Crash, ctx: Context) -> dict[str, Any]:
    """Dies in the way asked, on the attempts before ``until_attempt``."""
    if ctx.attempt < input.until_attempt:
        if input.how == "exit":
            os._exit(3)
        if input.how == "segv":
            ctypes.string_at(0)
        if input.how == "raise":
            raise NonRetryableError("refused in a subprocess")
    return {"pid": os.getpid(), "attempt": ctx.attempt}


@app.task(executor="process", execution_timeout="1s")
def refreshing(input: Burn, ctx: Context) -> dict[str, Any]:
    """Runs past its 1 s timeout by refreshing it from the subprocess."""
    end = time.monotonic() + input.seconds
    while time.monotonic() < end:
        ctx.refresh_timeout("1s")
        _burn_until(min(end, time.monotonic() + 0.2))
    return {"pid": os.getpid()}


@app.task(executor="process", execution_timeout="1s")
def overrun(input: Burn, ctx: Context) -> dict[str, Any]:
    """Burns CPU past its 1 s timeout without looking at ``ctx``."""
    Path(input.marker).write_text(str(os.getpid()))
    _burn_until(time.monotonic() + input.seconds)
    return {"pid": os.getpid()}


@app.task(executor="process")
def unsendable(input: dict[str, Any], ctx: Context) -> Any:
    """Returns what JSON cannot carry."""
    return {"when": object()}


@app.task(executor="process")
def chatty(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Logs and streams from a subprocess."""
    for i in range(input["n"]):
        ctx.log(f"line {i} from {os.getpid()}", level="WARNING")
        ctx.put_stream(f"c{i}")
    return {"pid": os.getpid()}


@app.task(executor="process")
def logs_in_subprocess(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Logs through ``logging`` in a subprocess: the task's thread, a thread it starts, a
    record with a traceback, one below the worker's level, and ctx.log in between."""
    applog = logging.getLogger("app.proc")
    applog.info("info %s", input["tag"])
    ctx.log(f"ctx {input['tag']}")
    applog.debug("debug %s", input["tag"])  # below the worker's INFO: not captured

    def in_thread() -> None:
        logging.getLogger("app.proc.thread").warning("thread %s", input["tag"])

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    try:
        raise ValueError("boom")
    except ValueError:
        applog.exception("failed %s", input["tag"])
    return {"pid": os.getpid()}


@app.task(executor="thread")
def threaded(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Says which thread ran it (a pool of this task's own)."""
    return {"thread": threading.current_thread().name, "pid": os.getpid()}


@app.task()
def plain_sync(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """A sync task with no executor of its own: the worker's default applies."""
    return {"thread": threading.current_thread().name, "pid": os.getpid()}
