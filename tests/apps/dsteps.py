"""Durable tasks with memoized steps, determinism helpers and child runs, run by real worker
processes in tests/e2e/test_durable_steps.py.

Every side effect appends a line to a file in the test's directory (``input.dir``), so a
test counts how often a step or a child really ran, across killed workers.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stoker import Context, DurableContext, StepError, Stoker, TaskRunError


class Job(BaseModel):
    dir: str
    seconds: float = 0.0
    children: int = 0


class Kid(BaseModel):
    dir: str
    n: int


def note(dir: str, name: str, line: str = "") -> int:
    """Appends a line to ``<dir>/<name>``; how many lines it has now."""
    path = Path(dir) / name
    with path.open("a") as f:
        f.write(f"{line or os.getpid()}\n")
    return len(path.read_text().splitlines())


def declare(app: Stoker) -> Stoker:
    @app.step(name="charge")
    def charge(dir: str, amount: int) -> dict[str, int]:
        return {"charged": amount, "count": note(dir, "charges")}

    @app.step(retries=2, backoff=0.05)
    async def boom(dir: str) -> None:
        note(dir, "booms")
        raise ValueError("the card was declined")

    @app.step(timeout=0.3)
    async def slow() -> int:
        await asyncio.sleep(30)
        return 1

    def make_a_set() -> set[int]:
        return {1, 2}

    @app.durable_task()
    async def memo(input: Job, ctx: DurableContext) -> dict[str, Any]:
        paid = await charge(input.dir, 42)
        flaky = await ctx.step(_flaky, input.dir, name="flaky", retries=3, backoff=0.01)
        now, uid, rnd = await ctx.now(), await ctx.uuid(), await ctx.random()
        helpers = {"now": now.isoformat(), "uuid": str(uid), "random": rnd}
        note(input.dir, "helpers", json.dumps(helpers, sort_keys=True))
        await ctx.sleep(input.seconds)
        return {"paid": paid, "flaky": flaky, **helpers, "attempt": ctx.attempt}

    @app.durable_task()
    async def failing_step(input: Job, ctx: DurableContext) -> dict[str, Any]:
        try:
            await boom(input.dir)
        except StepError as exc:
            caught = {"type": exc.error_type, "message": exc.error_message, "step": exc.step}
        await ctx.sleep(input.seconds)
        return caught

    @app.durable_task(retries=1)
    async def uncaught_step(input: Job, ctx: DurableContext) -> None:
        await boom(input.dir)

    @app.durable_task()
    async def bad_steps(input: Job, ctx: DurableContext) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for label, call in (("json", lambda: ctx.step(make_a_set)), ("timeout", slow)):
            try:
                await call()
            except StepError as exc:
                out[label] = [exc.error_type, exc.error_message]
        return out

    @app.task()
    async def kid(input: Kid, ctx: Context) -> int:
        note(input.dir, "kids")
        return input.n * 2

    @app.task()
    async def bad_kid(input: Kid, ctx: Context) -> int:
        note(input.dir, "bad-kids")
        raise RuntimeError(f"kid {input.n} gave up")

    family = app.workflow("family")

    @family.task()
    async def greet(input: Kid, ctx: Context) -> str:
        note(input.dir, "family")
        return f"hello {input.n}"

    @app.durable_task()
    async def parent(input: Job, ctx: DurableContext) -> dict[str, Any]:
        refs = await kid.aio_run_many([Kid(dir=input.dir, n=i) for i in range(input.children)])
        loose = kid.run_no_wait(Kid(dir=input.dir, n=1000))
        await ctx.sleep(input.seconds)
        results = await asyncio.gather(*(r.aio_result() for r in refs))
        last = await kid.aio_run(Kid(dir=input.dir, n=500))
        flow = await family.aio_run(Kid(dir=input.dir, n=7))
        return {
            "total": sum(results),
            "last": last,
            "loose": await loose.aio_result(),
            "flow": flow,
            "ids": sorted(r.run_id for r in refs),
        }

    @app.durable_task()
    async def grieving(input: Job, ctx: DurableContext) -> dict[str, Any]:
        try:
            await bad_kid.aio_run(Kid(dir=input.dir, n=3))
        except TaskRunError as exc:
            caught = {"type": exc.error_type, "message": exc.error_message, "run": exc.run_id}
        await ctx.sleep(input.seconds)
        return caught

    @app.durable_task()
    async def keyed(input: Job, ctx: DurableContext) -> list[int]:
        # Two calls with one child_key: two positions, one child run.
        first = await kid.aio_run(Kid(dir=input.dir, n=4), child_key="the-one")
        again = await kid.aio_run(Kid(dir=input.dir, n=4), child_key="the-one")
        return [first, again]

    pipeline = app.workflow("pipeline")

    @pipeline.task()
    async def prepare(input: Job, ctx: Context) -> dict[str, int]:
        return {"items": 3}

    @pipeline.durable_task(parents=[prepare])
    async def process(input: Job, ctx: DurableContext) -> dict[str, Any]:
        items = ctx.task_output(prepare)["items"]
        paid = await charge(input.dir, items)
        await ctx.sleep(input.seconds)
        return {"paid": paid, "attempt": ctx.attempt}

    review = app.workflow("review")

    @review.durable_task()
    async def check(input: Job, ctx: DurableContext) -> dict[str, Any]:
        # The sleep's length is read from <dir>/nap when it is called: a test makes it long,
        # then shortens it and resets the step to the sleep.
        paid = await charge(input.dir, 1)
        nap = Path(input.dir) / "nap"
        await ctx.sleep(float(nap.read_text()) if nap.exists() else 0.0)
        if (Path(input.dir) / "fail").exists():
            raise RuntimeError("the check failed after its sleep")
        return {"paid": paid, "attempt": ctx.attempt}

    @review.task(parents=[check])
    async def after(input: Job, ctx: Context) -> str:
        note(input.dir, "after")
        return f"after attempt {ctx.task_output(check)['attempt']}"

    return app


def _flaky(dir: str) -> int:
    """Fails its first two tries (counted in ``<dir>/flaky``), then succeeds."""
    n = note(dir, "flaky")
    if n < 3:
        raise ConnectionError(f"try {n} failed")
    return n


app = declare(Stoker())
