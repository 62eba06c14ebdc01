"""Tasks and workflows the dashboard's browser tests run (tests/browser).

``dash_work`` holds for ``hold_s`` and returns; ``dash_diamond`` is a diamond whose ``c``
fails (twice: it has a retry) when asked to; ``dash_fanout`` spawns ``n`` children and
waits for them; ``dash_talk`` logs and streams as it goes.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from stoker import Context, Stoker


class Work(BaseModel):
    hold_s: float = 0.0
    fail: bool = False
    n: int = 0


def declare(app: Stoker) -> Stoker:
    @app.task(execution_timeout="120s")
    async def dash_work(input: Work, ctx: Context) -> dict[str, float]:
        await asyncio.sleep(input.hold_s)
        if input.fail:
            raise ValueError("dash_work failed on purpose")
        return {"held": input.hold_s}

    diamond = app.workflow("dash_diamond", input_validator=Work)

    @diamond.task()
    async def a(input: Work, ctx: Context) -> dict[str, int]:
        return {"v": 1}

    @diamond.task(parents=[a])
    async def b(input: Work, ctx: Context) -> dict[str, int]:
        return {"v": 2}

    @diamond.task(parents=[a], retries=1)
    async def c(input: Work, ctx: Context) -> dict[str, int]:
        if input.fail:
            raise RuntimeError("c cannot go on: the input asked it to fail")
        return {"v": 3}

    @diamond.task(parents=[b, c])
    async def d(input: Work, ctx: Context) -> dict[str, int]:
        return {"v": 4}

    @app.task(execution_timeout="120s")
    async def dash_fanout(input: Work, ctx: Context) -> int:
        refs = await dash_work.aio_run_many([Work() for _ in range(input.n)])
        for ref in refs:
            await ref.aio_result()
        return input.n

    @app.task(execution_timeout="120s")
    async def dash_talk(input: Work, ctx: Context) -> int:
        """Logs a line and streams a word every 100 ms, ``n`` times."""
        for i in range(input.n):
            ctx.log(f"line {i}")
            ctx.put_stream(f"word{i} ")
            await asyncio.sleep(0.1)
        return input.n

    return app


app = declare(Stoker())
