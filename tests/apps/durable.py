"""Durable tasks the end-to-end tests run in real worker processes (tests/e2e/test_durable.py).

``DURABLE_APP_VERSION`` stands for a deploy: version "2" of ``shifty`` calls a different
step than version "1" did, which a replay of a run begun by version 1 must refuse.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stoker import DurableContext, Stoker


class Nap(BaseModel):
    seconds: float


class Chores(BaseModel):
    dir: str
    seconds: float


def declare(app: Stoker) -> Stoker:
    @app.durable_task()
    async def nap(input: Nap, ctx: DurableContext) -> dict[str, Any]:
        await ctx.sleep(input.seconds)
        return {"slept": input.seconds, "attempt": ctx.attempt}

    def record_side_effect(dir: str) -> int:
        """The side effect a step exists for: each run of the step appends a line."""
        path = Path(dir) / "side-effects"
        with path.open("a") as f:
            f.write(f"{os.getpid()}\n")
        return len(path.read_text().splitlines())

    @app.durable_task()
    async def chores(input: Chores, ctx: DurableContext) -> dict[str, Any]:
        count = await ctx.step(record_side_effect, input.dir)
        await ctx.sleep(input.seconds)
        return {"count": count, "attempt": ctx.attempt, "pid": os.getpid()}

    async def alpha() -> str:
        return "alpha"

    async def beta() -> str:
        return "beta"

    @app.durable_task(retries=3)
    async def shifty(input: Chores, ctx: DurableContext) -> str:
        version = os.environ.get("DURABLE_APP_VERSION", "1")
        got = await ctx.step(alpha if version == "1" else beta)
        await ctx.sleep(input.seconds)
        return str(got)

    return app


app = declare(Stoker())
