"""Tasks the dashboard pages' browser tests run (tests/browser/test_pages.py).

The worker processes serve ``app`` (everything but ``nobody_serves``); the tests declare
every task, ``nobody_serves`` included, on a client app of their tenant, so that runs of
``nobody_serves`` wait with no eligible worker.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field

from stoker import Context, RateLimit, Stoker

LIMIT_KEY = "dash-pages-api"


class Order(BaseModel):
    customer: str = Field(description="Who ordered")
    quantity: int
    lines: list[dict[str, Any]] = []


class Hold(BaseModel):
    seconds: float


def declare(app: Stoker, *, served_only: bool = False) -> Stoker:
    @app.task()
    async def place_order(input: Order, ctx: Context) -> dict[str, Any]:
        return {"customer": input.customer, "items": input.quantity * max(1, len(input.lines))}

    @app.task(execution_timeout="120s")
    async def hold(input: Hold, ctx: Context) -> None:
        await asyncio.sleep(input.seconds)

    @app.task(on_events=["shop:order"])
    async def on_order(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {"seen": input}

    @app.task(rate_limits=[RateLimit(static_key=LIMIT_KEY, units=1)])
    async def call_api(input: dict[str, Any], ctx: Context) -> None:
        return None

    if not served_only:

        @app.task()
        async def nobody_serves(input: dict[str, Any], ctx: Context) -> None:
            return None

    return app


app = declare(Stoker(), served_only=True)
