"""Tasks and a workflow the cron tests start on a clock, in real worker processes."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from stoker import Context, Stoker


class Nap(BaseModel):
    seconds: float = 0.0
    tag: str = ""


def declare(app: Stoker) -> Stoker:
    @app.task()
    async def tick(input: Nap, ctx: Context) -> dict[str, Any]:
        await asyncio.sleep(input.seconds)
        return {"tag": input.tag, "tick": ctx.additional_metadata.get("stoker_cron_tick")}

    @app.task()
    async def other(input: Nap, ctx: Context) -> dict[str, Any]:
        return {"tag": input.tag}

    flow = app.workflow("cron_flow", input_validator=Nap)

    @flow.task()
    async def step(input: Nap, ctx: Context) -> dict[str, Any]:
        return {"tag": input.tag}

    return app


app = declare(Stoker())
