"""Tasks that move payloads near the size limit (tests/test_security.py): a parent that
spawns children whose inputs together are larger than one gRPC message may be."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from stoker import Context, Stoker


class FanOut(BaseModel):
    children: int
    size: int


def declare(app: Stoker) -> Stoker:
    @app.task()
    async def measure(input: dict[str, Any], ctx: Context) -> int:
        return len(input["data"])

    @app.task()
    async def fan_out(input: FanOut, ctx: Context) -> list[int]:
        refs = await measure.aio_run_many([{"data": "d" * input.size}] * input.children)
        return [await ref.aio_result() for ref in refs]

    return app


app = declare(Stoker())
