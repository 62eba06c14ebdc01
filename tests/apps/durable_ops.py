"""Durable tasks for the operations tests (tests/e2e/test_durable_ops.py): replay, reset
and the REST log, in real worker processes.

``errands`` runs three steps, each appending its name to ``<dir>/side-effects`` (what a
test counts), with a sleep between the second and the third whose length is read from
``<dir>/nap`` when the sleep is called (0 without the file), and fails at the end while
``<dir>/fail`` exists — so a test can make a run fail, mend it, and replay it.

``ledger`` records ``steps`` steps at once (``asyncio.gather``), each returning ``size``
bytes of text and appending a line to ``<dir>/side-effects``, and fails on its first attempt
after them: its replay reads a log too long for one message, in pages.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stoker import DurableContext, NonRetryableError, Stoker


class Errand(BaseModel):
    dir: str


class Ledger(BaseModel):
    dir: str
    steps: int
    size: int


def side_effects(dir: str) -> list[str]:
    """The names of the steps that ran, in order, one line per run of a step."""
    path = Path(dir) / "side-effects"
    return path.read_text().splitlines() if path.exists() else []


def declare(app: Stoker) -> Stoker:
    def record(dir: str, name: str) -> str:
        with (Path(dir) / "side-effects").open("a") as f:
            f.write(f"{name}\n")
        return f"{name} done"

    async def body(input: Errand, ctx: DurableContext) -> dict[str, Any]:
        a = await ctx.step(record, input.dir, "a", name="a")
        b = await ctx.step(record, input.dir, "b", name="b")
        nap = Path(input.dir) / "nap"
        await ctx.sleep(float(nap.read_text()) if nap.exists() else 0.0)
        c = await ctx.step(record, input.dir, "c", name="c")
        if (Path(input.dir) / "fail").exists():
            raise RuntimeError("the errands failed after their steps")
        return {"steps": [a, b, c], "attempt": ctx.attempt}

    # The same body twice: evicted while it sleeps long (the default), and never evicted.
    @app.durable_task()
    async def errands(input: Errand, ctx: DurableContext) -> dict[str, Any]:
        return await body(input, ctx)

    @app.durable_task(eviction=None)
    async def errands_held(input: Errand, ctx: DurableContext) -> dict[str, Any]:
        return await body(input, ctx)

    def line(dir: str, i: int, size: int) -> str:
        with (Path(dir) / "side-effects").open("a") as f:
            f.write(f"e{i}\n")
        return str(i % 10) * size

    @app.durable_task(eviction=None)
    async def ledger(input: Ledger, ctx: DurableContext) -> dict[str, int]:
        results = await asyncio.gather(
            *(ctx.step(line, input.dir, i, input.size, name=f"e{i}") for i in range(input.steps))
        )
        if ctx.attempt == 0:
            raise NonRetryableError("the ledger fails once, to be replayed")
        return {"steps": len(results), "bytes": sum(len(r) for r in results)}

    return app


app = declare(Stoker())
