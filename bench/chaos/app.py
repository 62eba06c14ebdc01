"""The chaos suite's worker: one task that notes every execution, and a worker entry point.

``chaos_job`` appends a start line before its body and an end line after it to
``<CHAOS_RECORDS>/exec-<pid>.log`` with one unbuffered ``write`` each, so a line written
before a ``kill -9`` survives it and a line is never torn. The driver reads these files to
tell executions from runs: the same run executed twice is a re-execution, two runs for one
producer request are a duplicate run.

``python -m bench.chaos.app NAME`` runs a worker (address and token from ``STOKER_*``) with
``CHAOS_SLOTS`` slots and ``CHAOS_GRACE_S`` seconds of drain on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import Any

from pydantic import BaseModel

from stoker import Context, Stoker

RECORDS_ENV = "CHAOS_RECORDS"
TASK = "chaos_job"


class Job(BaseModel):
    """One producer request: its unique id and how long the body runs."""

    id: str
    seconds: float


_fd: int | None = None


def _note(kind: str, job: Job, ctx: Context) -> None:
    global _fd
    directory = os.environ.get(RECORDS_ENV)
    if not directory:
        return
    if _fd is None:
        path = os.path.join(directory, f"exec-{os.getpid()}.log")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    line = f"{kind} {job.id} {ctx.run_id} {ctx.attempt} {os.getpid()} {time.time_ns()}\n"
    os.write(_fd, line.encode())


def declare(app: Stoker) -> Stoker:
    """Puts ``chaos_job`` on ``app`` (workers and the producer declare the same task)."""

    @app.task(name=TASK, retries=3, execution_timeout="120s")
    async def chaos_job(input: Job, ctx: Context) -> dict[str, Any]:
        _note("S", input, ctx)
        await asyncio.sleep(input.seconds)
        _note("E", input, ctx)
        return {"id": input.id, "attempt": ctx.attempt, "pid": os.getpid()}

    return app


def main(name: str) -> None:
    """A worker process until SIGTERM (then it drains for ``CHAOS_GRACE_S`` seconds)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = declare(Stoker())
    slots = int(os.environ.get("CHAOS_SLOTS", "16"))
    grace = float(os.environ.get("CHAOS_GRACE_S", "30"))
    worker = app.worker(name, slots=slots)
    worker.grace = grace  # the drain period on SIGTERM (Worker's own default is 30 s)
    worker.start()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "chaos")
