"""A plain Hatchet SDK project, unchanged, for the Hatchet front door's tests.

``python hatchet_app.py worker`` runs its worker; ``python hatchet_app.py run NAME JSON``
runs one task and prints its run id and output (or error) as JSON; ``bulk NAME JSON...``
runs several at once and prints their outputs; ``aio NAME JSON...`` awaits them with
``aio_run``; ``dag JSON`` runs the two-task workflow (``fragile JSON``: the failing one);
``push KEY JSON`` pushes an event and prints its id; ``rate-limit KEY N`` puts a rate
limit of N per second; ``meta NAME JSON METADATA`` runs a task with additional metadata;
``schedule NAME JSON S`` schedules a run S seconds from now.
It reads only Hatchet's own settings (HATCHET_CLIENT_TOKEN, HATCHET_CLIENT_HOST_PORT,
HATCHET_CLIENT_TLS_STRATEGY).
"""

import json
import sys
import time
from datetime import UTC, timedelta

from hatchet_sdk import (
    ConcurrencyExpression,
    ConcurrencyLimitStrategy,
    Context,
    Hatchet,
    NonRetryableException,
    RateLimit,
    RateLimitDuration,
)
from pydantic import BaseModel

hatchet = Hatchet()


class Words(BaseModel):
    message: str


class Out(BaseModel):
    upper: str
    attempt: int


@hatchet.task(input_validator=Words)
def hatchet_upper(input: Words, ctx: Context) -> Out:
    return Out(upper=input.message.upper(), attempt=ctx.retry_count)


@hatchet.task(input_validator=Words, retries=2)
async def hatchet_flaky(input: Words, ctx: Context) -> Out:
    if ctx.retry_count < 2:
        raise RuntimeError(f"flaky attempt {ctx.retry_count}")
    return Out(upper=input.message.upper(), attempt=ctx.retry_count)


@hatchet.task(input_validator=Words)
def hatchet_broken(input: Words, ctx: Context) -> Out:
    raise ValueError(f"cannot shout {input.message}")


@hatchet.task(input_validator=Words, execution_timeout=timedelta(seconds=4))
def hatchet_slow(input: Words, ctx: Context) -> Out:
    # Hatchet adds the increment: the deadline moves from 4 s to 8 s after the start.
    ctx.refresh_timeout(timedelta(seconds=4))
    time.sleep(6)
    return Out(upper=input.message.upper(), attempt=ctx.retry_count)


@hatchet.task(input_validator=Words, on_events=["hatchet:shout"])
def hatchet_on_shout(input: Words, ctx: Context) -> Out:
    return Out(upper=input.message.upper(), attempt=ctx.retry_count)


class Span(BaseModel):
    started: float
    finished: float


@hatchet.task(
    input_validator=Words,
    concurrency=ConcurrencyExpression(
        expression="input.message",
        max_runs=1,
        limit_strategy=ConcurrencyLimitStrategy.GROUP_ROUND_ROBIN,
    ),
)
def hatchet_one_at_a_time(input: Words, ctx: Context) -> Span:
    started = time.time()
    time.sleep(1)
    return Span(started=started, finished=time.time())


@hatchet.task(input_validator=Words, rate_limits=[RateLimit(static_key="hatchet-rl", units=1)])
def hatchet_rate_limited(input: Words, ctx: Context) -> Span:
    now = time.time()
    return Span(started=now, finished=now)


@hatchet.task(input_validator=Words)
def hatchet_parent(input: Words, ctx: Context) -> Out:
    # Two children: the first spawned twice with one key is one child run.
    first = hatchet_upper.run(Words(message=input.message), child_key="first")
    again = hatchet_upper.run(Words(message=input.message), child_key="first")
    second = hatchet_upper.run(Words(message=input.message + "2"))
    return Out(upper=f"{first.upper}|{again.upper}|{second.upper}", attempt=ctx.retry_count)


class Seen(BaseModel):
    metadata: dict[str, str]


@hatchet.task(input_validator=Words)
def hatchet_metadata(input: Words, ctx: Context) -> Seen:
    return Seen(metadata={k: str(v) for k, v in ctx.additional_metadata.items()})


@hatchet.task(input_validator=Words, retries=3)
def hatchet_gives_up(input: Words, ctx: Context) -> Out:
    raise NonRetryableException(f"no point retrying {input.message}")


dag = hatchet.workflow(name="hatchet_dag", input_validator=Words)


@dag.task()
def shout(input: Words, ctx: Context) -> Out:
    return Out(upper=input.message.upper(), attempt=ctx.retry_count)


@dag.task(parents=[shout])
def exclaim(input: Words, ctx: Context) -> Out:
    return Out(upper=ctx.task_output(shout).upper + "!", attempt=ctx.retry_count)


fragile = hatchet.workflow(name="hatchet_fragile", input_validator=Words)


@fragile.task()
def breaks(input: Words, ctx: Context) -> Out:
    raise ValueError(f"{input.message} broke")


@fragile.on_failure_task()
def tidy_up(input: Words, ctx: Context) -> Seen:
    return Seen(metadata=ctx.task_run_errors)


TASKS = {
    t.name: t
    for t in (
        hatchet_upper,
        hatchet_flaky,
        hatchet_broken,
        hatchet_slow,
        hatchet_on_shout,
        hatchet_one_at_a_time,
        hatchet_rate_limited,
        hatchet_parent,
        hatchet_metadata,
        hatchet_gives_up,
    )
}

if __name__ == "__main__":
    command = sys.argv[1]
    if command == "worker":
        hatchet.worker("hatchet-e2e", slots=4, workflows=[*TASKS.values(), dag, fragile]).start()
    elif command == "run":
        ref = TASKS[sys.argv[2]].run(Words.model_validate_json(sys.argv[3]), wait_for_result=False)
        try:
            out = ref.result()
        except Exception as exc:
            print(
                json.dumps({"run_id": str(ref), "error": type(exc).__name__, "message": str(exc)})
            )
        else:
            print(json.dumps({"run_id": str(ref), "output": out.model_dump()}))
    elif command == "aio":
        import asyncio

        words = [Words.model_validate_json(a) for a in sys.argv[3:]]

        async def main() -> list[Out]:
            return await asyncio.gather(*(TASKS[sys.argv[2]].aio_run(w) for w in words))

        try:
            outs = asyncio.run(main())
        except Exception as exc:
            print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        else:
            print(json.dumps([o.model_dump() for o in outs]))
    elif command in ("dag", "fragile"):
        flow = dag if command == "dag" else fragile
        ref = flow.run(Words.model_validate_json(sys.argv[2]), wait_for_result=False)
        try:
            print(json.dumps({"run_id": str(ref), "output": ref.result()}))
        except Exception as exc:
            print(
                json.dumps({"run_id": str(ref), "error": type(exc).__name__, "message": str(exc)})
            )
    elif command == "meta":
        out = TASKS[sys.argv[2]].run(
            Words.model_validate_json(sys.argv[3]), additional_metadata=json.loads(sys.argv[4])
        )
        print(out.model_dump_json())
    elif command == "schedule":
        from datetime import datetime

        at = datetime.now(UTC) + timedelta(seconds=float(sys.argv[4]))
        version = TASKS[sys.argv[2]].schedule(at, Words.model_validate_json(sys.argv[3]))
        print(json.dumps({"ids": [w.id for w in version.scheduled_workflows]}))
    elif command == "rate-limit":
        hatchet.rate_limits.put(sys.argv[2], int(sys.argv[3]), RateLimitDuration.SECOND)
        print(json.dumps({"key": sys.argv[2]}))
    elif command == "push":
        event = hatchet.event.push(sys.argv[2], json.loads(sys.argv[3]))
        print(json.dumps({"event_id": event.event_id, "key": event.key}))
    elif command == "bulk":
        task = TASKS[sys.argv[2]]
        items = [task.create_bulk_run_item(Words.model_validate_json(a)) for a in sys.argv[3:]]
        print(json.dumps([o.model_dump() for o in task.run_many(items)]))
