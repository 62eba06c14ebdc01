"""Workflows the end-to-end tests run in real worker processes (see tests/apps/basic.py).

Steps append their name to the file ``input.log`` names (when given), so a test can tell
which steps ran and how often, across worker processes.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stoker import (
    Context,
    NonRetryableError,
    ParentCondition,
    SleepCondition,
    Stoker,
    UserEventCondition,
    or_,
)


class Job(BaseModel):
    log: str = ""
    value: int = 1
    order_id: int = 0
    hold_s: float = 0.0
    fail: bool = False


class Count(BaseModel):
    n: int


def record(input: Job, step: str) -> None:
    if input.log:
        with Path(input.log).open("a") as f:
            f.write(step + "\n")


def declare(app: Stoker) -> Stoker:
    # -- a diamond: a -> (b, c) -> d ------------------------------------------------------
    diamond = app.workflow("diamond", input_validator=Job, retries=1)

    @diamond.task()
    async def a(input: Job, ctx: Context) -> dict[str, int]:
        record(input, "a")
        return {"v": input.value}

    @diamond.task(parents=[a])
    async def b(input: Job, ctx: Context) -> dict[str, int]:
        record(input, "b")
        await asyncio.sleep(input.hold_s)
        return {"v": ctx.task_output(a)["v"] * 10}

    @diamond.task(parents=[a])
    def c(input: Job, ctx: Context) -> dict[str, int]:
        record(input, "c")
        time.sleep(input.hold_s)
        return {"v": ctx.task_output(a)["v"] + 5}

    @diamond.task(parents=[b, c])
    async def d(input: Job, ctx: Context) -> dict[str, Any]:
        record(input, "d")
        return {"sum": ctx.task_output(b)["v"] + ctx.task_output(c)["v"], "b_started": True}

    # -- conditions on parents: skip and cancel propagation --------------------------------
    branchy = app.workflow("branchy", input_validator=Job)

    @branchy.task()
    async def amount(input: Job, ctx: Context) -> dict[str, int]:
        return {"amount": input.value}

    @branchy.task(parents=[amount], skip_if=[ParentCondition(amount, "output.amount > 100")])
    async def small(input: Job, ctx: Context) -> str:
        return "small"

    @branchy.task(parents=[amount], cancel_if=[ParentCondition(amount, "output.amount > 1000")])
    async def not_huge(input: Job, ctx: Context) -> str:
        return "not huge"

    @branchy.task(parents=[small])
    async def after_small(input: Job, ctx: Context) -> dict[str, bool]:
        return {"small_skipped": ctx.was_skipped(small)}

    @branchy.task(parents=[not_huge])
    async def after_not_huge(input: Job, ctx: Context) -> str:
        return "ran"

    # -- sleep, event, and an AND of ORs -----------------------------------------------------
    waits = app.workflow("waits", input_validator=Job)

    @waits.task()
    async def start(input: Job, ctx: Context) -> dict[str, Any]:
        return {"ok": True, "at": time.time()}

    @waits.task(parents=[start], wait_for=[SleepCondition(timedelta(seconds=1))])
    async def slept(input: Job, ctx: Context) -> dict[str, float]:
        return {"at": time.time()}

    @waits.task(
        parents=[start],
        wait_for=[UserEventCondition("order:paid", "input.order_id == run_input.order_id")],
    )
    async def paid(input: Job, ctx: Context) -> str:
        return "paid"

    @waits.task(
        parents=[start],
        wait_for=[
            or_(SleepCondition("60s"), UserEventCondition("order:go")),
            ParentCondition(start, "output.ok"),
        ],
    )
    async def mixed(input: Job, ctx: Context) -> str:
        return "mixed"

    # -- on-failure and on-success -------------------------------------------------------
    failing = app.workflow("failing", input_validator=Job)

    @failing.task()
    async def boom(input: Job, ctx: Context) -> None:
        raise NonRetryableError("boom failed on purpose")

    @failing.task()
    async def fine(input: Job, ctx: Context) -> str:
        return "fine"

    @failing.task(parents=[boom])
    async def after_boom(input: Job, ctx: Context) -> str:
        return "never"

    @failing.on_failure_task()
    async def cleanup(input: Job, ctx: Context) -> dict[str, str]:
        return ctx.task_run_errors

    succeeding = app.workflow("succeeding", input_validator=Job)

    @succeeding.task()
    async def only(input: Job, ctx: Context) -> int:
        return input.value

    @succeeding.on_success_task()
    async def celebrate(input: Job, ctx: Context) -> str:
        return "done"

    @succeeding.on_failure_task()
    async def mourn(input: Job, ctx: Context) -> str:
        return "never"

    # -- cancellation of running sync and async steps --------------------------------------
    slow = app.workflow("slow", input_validator=Job, execution_timeout="60s")

    @slow.task()
    async def async_wait(input: Job, ctx: Context) -> None:
        record(input, "async_wait:start")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            record(input, "async_wait:cancelled")
            raise

    @slow.task()
    def sync_spin(input: Job, ctx: Context) -> None:
        record(input, "sync_spin:start")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ctx.is_cancelled:
            time.sleep(0.02)
        record(input, "sync_spin:cancelled")

    @slow.task(parents=[async_wait, sync_spin])
    async def never(input: Job, ctx: Context) -> None:
        record(input, "never")

    # -- replay: the second step fails until a marker file exists ---------------------------
    replayable = app.workflow("replayable", input_validator=Job)

    @replayable.task()
    async def first(input: Job, ctx: Context) -> dict[str, int]:
        record(input, "first")
        return {"v": input.value}

    @replayable.task(parents=[first])
    def second(input: Job, ctx: Context) -> dict[str, int]:
        record(input, "second")
        marker = Path(input.log + ".ok")
        if not marker.exists():
            marker.touch()
            raise NonRetryableError("second fails the first time")
        return {"v": ctx.task_output(first)["v"] + 1}

    # -- child runs ------------------------------------------------------------------------
    @app.task()
    async def square(input: Count, ctx: Context) -> int:
        return input.n * input.n

    @app.task(execution_timeout="120s")
    async def fan_out(input: Count, ctx: Context) -> dict[str, Any]:
        refs = await square.aio_run_many([Count(n=i) for i in range(input.n)])
        results = await asyncio.gather(*(r.aio_result() for r in refs))
        return {"sum": sum(results), "children": len(refs)}

    @app.task(retries=1)
    async def spawn_then_fail(input: Count, ctx: Context) -> dict[str, Any]:
        refs = [await square.aio_run_no_wait(Count(n=i)) for i in range(input.n)]
        keyed = await square.aio_run_no_wait(Count(n=100), child_key="the-keyed-one")
        if ctx.retry_count == 0:
            raise RuntimeError("fail after spawning, to be retried")
        results = [await r.aio_result() for r in refs]
        return {
            "ids": [r.run_id for r in refs] + [keyed.run_id],
            "sum": sum(results),
            "metadata": ctx.additional_metadata,
        }

    @app.task()
    def sync_parent(input: Count, ctx: Context) -> dict[str, Any]:
        out = diamond.run(Job(value=input.n))
        return {"d": out["d"]["sum"]}

    @app.task()
    def child_fails_once(input: Job, ctx: Context) -> str:
        marker = Path(input.log + ".child")
        if not marker.exists():
            marker.touch()
            raise NonRetryableError("the child fails the first time")
        return "child ok"

    @app.task()
    async def parent_of_failing_child(input: Job, ctx: Context) -> dict[str, str]:
        return {"child": await child_fails_once.aio_run(input)}

    @app.task()
    async def metadata_echo(input: Count, ctx: Context) -> dict[str, Any]:
        return ctx.additional_metadata

    @app.task()
    async def metadata_parent(input: Count, ctx: Context) -> dict[str, Any]:
        child = await metadata_echo.aio_run(Count(n=1), additional_metadata={"child": "yes"})
        return {"child_saw": child}

    return app


app = declare(Stoker())
