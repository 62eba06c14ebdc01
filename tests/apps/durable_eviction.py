"""Durable tasks for the eviction, restore and timeout tests (tests/e2e/test_durable_eviction.py),
run in real worker processes."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from stoker import DurableContext, Eviction, Stoker


class Nap(BaseModel):
    seconds: float


class Work(BaseModel):
    nap: float
    busy: float


def declare(app: Stoker) -> Stoker:
    @app.durable_task()
    async def doze(input: Nap, ctx: DurableContext) -> dict[str, Any]:
        """The default policy: evicted under capacity pressure (or after 30 s blocked)."""
        await ctx.sleep(input.seconds)
        return {"attempt": ctx.attempt, "retry_count": ctx.retry_count}

    @app.durable_task(eviction=Eviction(ttl="1s"))
    async def hibernate(input: Nap, ctx: DurableContext) -> dict[str, Any]:
        """A sleep longer than the TTL: evicted at once, restored by its timer."""
        first = await ctx.step(lambda: "once", name="before")
        await ctx.sleep(input.seconds)
        return {"attempt": ctx.attempt, "retry_count": ctx.retry_count, "step": first}

    @app.durable_task(eviction=None)
    async def stay(input: Nap, ctx: DurableContext) -> dict[str, Any]:
        """Never evicted by policy (a stopping worker still evicts it)."""
        await ctx.sleep(input.seconds)
        return {"attempt": ctx.attempt, "retry_count": ctx.retry_count}

    @app.durable_task(execution_timeout="1s", eviction=None)
    async def timed(input: Work, ctx: DurableContext) -> dict[str, Any]:
        """Sleeps (durably) for `nap`, then runs for `busy`: only the running counts."""
        await ctx.sleep(input.nap)
        await asyncio.sleep(input.busy)  # running, not a durable call
        return {"attempt": ctx.attempt}

    @app.durable_task(timeout="3s", eviction=Eviction(ttl="1s"))
    async def bounded(input: Nap, ctx: DurableContext) -> str:
        """Its whole run may last 3 s, evictions included."""
        await ctx.sleep(input.seconds)
        return "woke"

    @app.task()
    def quick(input: Nap, ctx: Any) -> str:
        """An ordinary task, in the normal slots."""
        return "quick"

    return app


app = declare(Stoker())
