"""Tasks an HTTP push worker serves behind uvicorn in the end-to-end tests
(tests/e2e/test_push_workers.py): ``uvicorn tests.apps.push:worker``.

The worker process is configured by STOKER_ADDRESS/STOKER_TOKEN (the engine it reports
to), PUSH_URL (where the engine reaches it), PUSH_SECRET, and PUSH_MARKS (a folder where
tasks leave a file per run, so a test can tell whether a task ran at all).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from stoker import Context, Stoker


def declare(app: Stoker) -> Stoker:
    """Puts the tasks on ``app`` (the tests declare them on a client app of their own)."""
    marks = Path(os.environ.get("PUSH_MARKS", "."))

    @app.task(name="push_t_echo")
    async def push_t_echo(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {"echo": input, "attempt": ctx.attempt, "pid": os.getpid()}

    @app.task(name="push_t_sync")
    def push_t_sync(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {"sum": sum(input["numbers"])}

    @app.task(name="push_t_mark")
    def push_t_mark(input: dict[str, Any], ctx: Context) -> str:
        (marks / input["mark"]).write_text("ran")
        return "marked"

    @app.task(name="push_t_flaky", retries=2)
    async def push_t_flaky(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        (marks / f"{input['key']}-{ctx.retry_count}").write_text("ran")
        if ctx.retry_count < input["fail_times"]:
            raise RuntimeError(f"failure {ctx.retry_count} of {input['key']}")
        return {"retry_count": ctx.retry_count}

    @app.task(name="push_t_slow", execution_timeout="1s", retries=0)
    async def push_t_slow(input: dict[str, Any], ctx: Context) -> None:
        (marks / f"{input['key']}-started").write_text("ran")
        try:
            await asyncio.sleep(60)
        finally:
            (marks / f"{input['key']}-stopped").write_text("stopped")

    @app.task(name="push_t_background")
    async def push_t_background(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        await asyncio.sleep(0.3)
        return {"late": input["n"] * 2}

    @app.task(name="push_t_hang", execution_timeout=None)
    async def push_t_hang(input: dict[str, Any], ctx: Context) -> None:
        (marks / f"{input['key']}-started").write_text("ran")
        try:
            await asyncio.sleep(600)
        finally:
            (marks / f"{input['key']}-stopped").write_text("stopped")

    return app


app = declare(Stoker())
worker = app.http_worker(
    "push-tests",
    url=os.environ.get("PUSH_URL", "http://127.0.0.1:8000"),
    secret=os.environ.get("PUSH_SECRET", "push-tests-secret-0123456789"),
    slots=4,
    background=[app.tasks["push_t_background"]],
)
