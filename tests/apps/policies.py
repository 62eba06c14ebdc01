"""Tasks for the scheduling-policy tests; each reports when and where it ran."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stoker import (
    ConcurrencyExpression,
    ConcurrencyLimitStrategy,
    Context,
    DesiredWorkerLabel,
    NonRetryableError,
    RateLimit,
    SleepCondition,
    Stoker,
    WorkerLabelComparator,
)


class Job(BaseModel):
    key: str = "k"
    other: str = "o"
    user: str = "u"
    seconds: float = 0.0
    n: int = 0


async def _work(input: Job, ctx: Context) -> dict[str, Any]:
    start = time.time()
    await asyncio.sleep(input.seconds)
    return {
        "start": start,
        "end": time.time(),
        "worker": ctx.worker_id,
        "pid": os.getpid(),
        "key": input.key,
        "n": input.n,
    }


def declare(app: Stoker) -> Stoker:
    app.task(
        name="round_robin",
        concurrency=ConcurrencyExpression(expression="input.key", max_runs=2),
    )(_work)
    app.task(
        name="two_keys",
        concurrency=[
            ConcurrencyExpression(expression="input.key", max_runs=1),
            ConcurrencyExpression(expression="input.other", max_runs=2),
        ],
    )(_work)
    app.task(
        name="cancel_in_progress",
        concurrency=ConcurrencyExpression(
            expression="input.key",
            max_runs=1,
            limit_strategy=ConcurrencyLimitStrategy.CANCEL_IN_PROGRESS,
        ),
    )(_work)
    app.task(
        name="cancel_newest",
        concurrency=ConcurrencyExpression(
            expression="input.key",
            max_runs=1,
            limit_strategy=ConcurrencyLimitStrategy.CANCEL_NEWEST,
        ),
    )(_work)
    app.task(name="global_limit", concurrency=2)(_work)
    app.task(name="static_limited", rate_limits=[RateLimit(static_key="shared", units=1)])(_work)
    app.task(name="static_limited_2", rate_limits=[RateLimit(static_key="shared", units=2)])(_work)
    app.task(
        name="dynamic_limited",
        rate_limits=[RateLimit(dynamic_key="input.user", units=1, limit=3, duration="second")],
    )(_work)
    app.task(name="plain")(_work)
    app.task(
        name="needs_gpu",
        desired_worker_labels={"gpu": DesiredWorkerLabel(value="a100", required=True)},
        schedule_timeout="3s",
    )(_work)
    app.task(
        name="prefers_memory",
        desired_worker_labels={
            "memory_gb": DesiredWorkerLabel(
                value=32, comparator=WorkerLabelComparator.GREATER_THAN, weight=10
            )
        },
    )(_work)
    app.task(name="costly", slot_cost=2)(_work)
    app.task(name="whole_worker", slot_cost=4)(_release_then_sleep)
    app.task(name="durable_job", durable=True)(_work)
    app.task(name="hard_sticky", sticky="hard", schedule_timeout="30s")(_work)
    _sticky_chain(app, "hard")
    _sticky_chain(app, "soft")
    app.task(
        name="fails_once_limited",
        concurrency=ConcurrencyExpression(expression="input.key", max_runs=1),
    )(_fail_once)
    # Workflow-level concurrency: a default for every step, the later ones included.
    limited = app.workflow(
        "limited_chain",
        input_validator=Job,
        concurrency=ConcurrencyExpression(expression="input.key", max_runs=1),
    )
    prepare = limited.task(name="prepare")(_work)
    limited.task(name="charge", parents=[prepare])(_slow_work)
    # A dynamic rate limit on a workflow step (its key from the run's input).
    rated = app.workflow("rated_chain", input_validator=Job)
    rated.task(
        name="call",
        rate_limits=[RateLimit(dynamic_key="input.user", units=1, limit=3, duration="second")],
    )(_work)
    return app


async def _slow_work(input: Job, ctx: Context) -> dict[str, Any]:
    return await _work(input.model_copy(update={"seconds": input.seconds * 5}), ctx)


def _fail_once(input: Job, ctx: Context) -> dict[str, Any]:
    """Fails (for good) unless the file named by ``input.other`` exists; creates it."""
    marker = Path(input.other)
    if not marker.exists():
        marker.touch()
        raise NonRetryableError("fails the first time")
    start = time.time()
    time.sleep(input.seconds)
    return {"start": start, "end": time.time(), "worker": ctx.worker_id, "key": input.key}


def _sticky_chain(app: Stoker, sticky: str) -> None:
    """``{sticky}_chain``: first -> (left, right) -> last, every step sticky; the steps after
    ``first`` wait two seconds (a sleep condition, holding no worker) before they are queued,
    which gives a test time to stop the run's worker between its steps."""
    wf = app.workflow(f"{sticky}_chain", input_validator=Job, sticky=sticky, schedule_timeout="3s")
    first = wf.task(name="first")(_work)
    pause = [SleepCondition(timedelta(seconds=2))]
    left = wf.task(name="left", parents=[first], wait_for=pause)(_work)
    right = wf.task(name="right", parents=[first], wait_for=pause)(_work)
    wf.task(name="last", parents=[left, right])(_work)


async def _release_then_sleep(input: Job, ctx: Context) -> dict[str, Any]:
    if input.n:
        ctx.release_slot()
    return await _work(input, ctx)


app = declare(Stoker())
