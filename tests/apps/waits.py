"""Durable tasks that wait for events, run in real worker processes by
tests/e2e/test_durable_waits.py."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pydantic import BaseModel

from stoker import DurableContext, SleepCondition, Stoker, UserEventCondition, or_


class Await(BaseModel):
    key: str
    expression: str | None = None
    scope: str | None = None
    lookback_s: float | None = None
    timeout_s: float | None = None


class Order(BaseModel):
    id: int
    total: float


class Either(BaseModel):
    key: str
    sleep_s: float


def declare(app: Stoker) -> Stoker:
    @app.durable_task()
    async def await_event(input: Await, ctx: DurableContext) -> dict[str, Any]:
        payload = await ctx.wait_for_event(
            input.key,
            input.expression,
            scope=input.scope,
            lookback=input.lookback_s,
            timeout=input.timeout_s,
        )
        return {"payload": payload, "attempt": ctx.attempt, "pid": os.getpid()}

    @app.durable_task()
    async def await_order(input: Await, ctx: DurableContext) -> dict[str, Any]:
        order = await ctx.wait_for_event(input.key, model=Order)
        return {"type": type(order).__name__, "order": order.model_dump()}

    @app.durable_task()
    async def await_twice(input: Await, ctx: DurableContext) -> list[Any]:
        # Two waits on the same key at once (positions 1 and 2): one event satisfies one.
        first, second = await asyncio.gather(
            ctx.wait_for_event(input.key), ctx.wait_for_event(input.key)
        )
        return [first, second]

    @app.durable_task()
    async def await_either(input: Either, ctx: DurableContext) -> dict[str, Any]:
        got = await ctx.wait_for(
            or_(SleepCondition(input.sleep_s), UserEventCondition(input.key, "input.ok == true"))
        )
        kind = "sleep" if isinstance(got.fired, SleepCondition) else "event"
        return {"fired": kind, "payload": got.payload}

    @app.durable_task()
    async def await_both(input: Either, ctx: DurableContext) -> dict[str, Any]:
        # An AND of two items: the sleep, and either event.
        got = await ctx.wait_for(
            SleepCondition(input.sleep_s),
            or_(UserEventCondition(input.key + ":a"), UserEventCondition(input.key + ":b")),
        )
        fired = got.fired
        name = fired.event_key if isinstance(fired, UserEventCondition) else "sleep"
        return {"fired": name, "payload": got.payload}

    return app


app = declare(Stoker())
