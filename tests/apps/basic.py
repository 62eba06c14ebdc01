"""Tasks the end-to-end tests run in real worker processes.

``declare(app)`` puts every task on ``app``; the worker processes use the module's ``app``
(configured from STOKER_ADDRESS/STOKER_TOKEN), the tests declare the same tasks on a client
app of their own tenant.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from pydantic import BaseModel

from stoker import Context, NonRetryableError, RetryAfter, Stoker


class Greet(BaseModel):
    name: str


class Greeting(BaseModel):
    message: str
    length: int


class Sleep(BaseModel):
    seconds: float
    tag: str = ""


class Flaky(BaseModel):
    fail_times: int
    key: str


def declare(app: Stoker) -> Stoker:
    @app.task()
    async def greet(input: Greet, ctx: Context) -> dict[str, Any]:
        return {"message": f"hello {input.name}", "attempt": ctx.attempt}

    @app.task()
    def sync_greet(input: Greet, ctx: Context) -> Greeting:
        return Greeting(message=f"hi {input.name}", length=len(input.name))

    @app.task()
    async def bad_output_model(input: Greet, ctx: Context) -> Greeting:
        return {"message": "missing length"}  # type: ignore[return-value]

    @app.task(retries=3, backoff_factor=2.0)
    async def flaky(input: Flaky, ctx: Context) -> dict[str, Any]:
        if ctx.retry_count < input.fail_times:
            raise RuntimeError(f"failure {ctx.retry_count} of {input.key}")
        return {"retry_count": ctx.retry_count, "at": time.time()}

    @app.task(retries=3)
    async def fails_hard(input: Greet, ctx: Context) -> None:
        raise NonRetryableError(f"cannot greet {input.name}")

    @app.task(retries=2)
    async def always_fails(input: Greet, ctx: Context) -> None:
        raise ValueError(f"no such person: {input.name}")

    @app.task(retries=1)
    async def retry_after(input: Greet, ctx: Context) -> dict[str, Any]:
        if ctx.retry_count == 0:
            raise RetryAfter(1.5)
        return {"retry_count": ctx.retry_count}

    @app.task(execution_timeout="1s", retries=1)
    async def async_too_slow(input: Sleep, ctx: Context) -> None:
        await asyncio.sleep(input.seconds)

    @app.task(execution_timeout="1s")
    def sync_too_slow(input: Sleep, ctx: Context) -> dict[str, Any]:
        deadline = time.monotonic() + input.seconds
        while time.monotonic() < deadline and not ctx.is_cancelled:
            time.sleep(0.05)
        return {"cancelled": ctx.is_cancelled}

    @app.task(execution_timeout="1s")
    async def refreshes(input: Sleep, ctx: Context) -> dict[str, Any]:
        ctx.refresh_timeout("5s")
        await asyncio.sleep(input.seconds)
        return {"slept": input.seconds}

    @app.task(execution_timeout="60s")
    async def slow(input: Sleep, ctx: Context) -> dict[str, Any]:
        await asyncio.sleep(input.seconds)
        return {"pid": os.getpid(), "attempt": ctx.attempt, "tag": input.tag}

    @app.task(execution_timeout="60s")
    async def marks_done(input: Sleep, ctx: Context) -> dict[str, Any]:
        """Sleeps, then writes "done" to the file named by ``tag`` (a signal for tests)."""
        await asyncio.sleep(input.seconds)
        with open(input.tag, "w") as f:  # noqa: ASYNC230 - a few bytes, once
            f.write("done")
        return {"pid": os.getpid(), "attempt": ctx.attempt}

    @app.task(execution_timeout="60s")
    def sync_sleep(input: Sleep, ctx: Context) -> dict[str, Any]:
        time.sleep(input.seconds)
        return {"pid": os.getpid(), "attempt": ctx.attempt, "tag": input.tag}

    @app.task(execution_timeout="60s")
    async def blocks_loop(input: Sleep, ctx: Context) -> dict[str, Any]:
        time.sleep(input.seconds)  # noqa: ASYNC251 - blocks the worker's event loop on purpose
        return {"pid": os.getpid(), "attempt": ctx.attempt}

    @app.task()
    async def not_json(input: Greet, ctx: Context) -> Any:
        return {"when": object()}

    @app.task()
    async def huge_output(input: Greet, ctx: Context) -> str:
        return "x" * (5 * 1024 * 1024)

    @app.task()
    async def echo(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {"input": input, "metadata": ctx.additional_metadata, "run_id": ctx.run_id}

    return app


app = declare(Stoker())
