"""Tasks that log, stream and retry, for the logs / streams / run-events tests."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from pydantic import BaseModel

from stoker import Context, Stoker


class Lines(BaseModel):
    n: int = 1
    tag: str = ""


class Chunks(BaseModel):
    n: int
    delay: float = 0.0
    binary: bool = False


class Fail(BaseModel):
    times: int
    tag: str = ""


def declare(app: Stoker) -> Stoker:
    @app.task()
    async def log_async(input: Lines, ctx: Context) -> int:
        applog = logging.getLogger("app.async")
        for i in range(input.n):
            ctx.log(f"{input.tag} ctx line {i}")
            applog.warning("%s logging line %d", input.tag, i)
            await asyncio.sleep(0)
        return input.n

    @app.task()
    def log_sync(input: Lines, ctx: Context) -> int:
        applog = logging.getLogger("app.sync")
        ctx.log(f"{input.tag} sync ctx line", level="ERROR")
        applog.info("%s sync logging line", input.tag)

        def in_thread() -> None:
            logging.getLogger("app.thread").info("%s from a thread", input.tag)

        t = threading.Thread(target=in_thread)
        t.start()
        t.join()
        return 1

    @app.task()
    async def log_long(input: Lines, ctx: Context) -> int:
        ctx.log("x" * input.n)
        return input.n

    @app.task()
    async def stream_chunks(input: Chunks, ctx: Context) -> int:
        for i in range(input.n):
            if input.binary:
                ctx.put_stream(bytes([i % 256]) * 3)
            else:
                await ctx.aio_put_stream(f"token-{i} ")
            if input.delay:
                await asyncio.sleep(input.delay)
        return input.n

    @app.task()
    def stream_sync(input: Chunks, ctx: Context) -> int:
        for i in range(input.n):
            ctx.put_stream(f"s{i}")
            if input.delay:
                time.sleep(input.delay)
        return input.n

    @app.task()
    async def stream_too_big(input: Chunks, ctx: Context) -> str:
        try:
            ctx.put_stream(b"x" * input.n)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "sent"

    @app.task(retries=2)
    async def fail_then_pass(input: Fail, ctx: Context) -> dict[str, Any]:
        ctx.log(f"attempt {ctx.attempt}")
        if ctx.retry_count < input.times:
            raise RuntimeError(f"failing attempt {ctx.attempt}")
        return {"attempt": ctx.attempt}

    return app


app = declare(Stoker())
