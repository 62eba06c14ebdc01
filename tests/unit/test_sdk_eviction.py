"""The worker's eviction decisions (stoker._sdk.worker.eviction) and the durable log's idea
of "blocked", against a stand-in for the engine's answers on the stream: who is evicted
(TTL, timers beyond the TTL, capacity pressure longest-blocked first, everything on stop),
what the EVICT request carries, and that the body is cancelled only once it is accepted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from stoker import DeclarationError, DurableContext, Eviction, Stoker
from stoker._core.durable import EntryKind, fingerprint
from stoker._proto import engine_pb2 as pb
from stoker._sdk.context import AttemptState
from stoker._sdk.durable import DurableLog, DurableTask
from stoker._sdk.worker.eviction import Evictor
from stoker._sdk.worker.runtime import Attempt

NOW_MS = 1_000_000


class Engine:
    """Answers the requests of several attempts' logs: OPEN (empty log), APPEND (sleeps
    pending with their deadline), EVICT with ``accept(req)``."""

    def __init__(self) -> None:
        self.accept: Callable[[pb.DurableRequest], bool] = lambda _: True
        self.logs: dict[int, DurableLog] = {}
        self.evicts: list[pb.DurableRequest] = []

    def send(self, msg: pb.WorkerMessage) -> None:
        req = msg.durable
        reply = pb.DurableReply(
            task_id=req.task_id, attempt=req.attempt, request_id=req.request_id, invocation=1
        )
        reply.now_ms = NOW_MS
        if req.op == pb.EVICT:
            self.evicts.append(req)
            if self.accept(req):
                reply.evicted = True
            else:
                reply.error = "eviction refused: a resolution is on its way"
        for call in req.calls:
            reply.entries.append(
                pb.DurableEntry(
                    position=call.position,
                    kind=call.kind,
                    name=call.name,
                    fingerprint=call.fingerprint,
                    status=call.status,
                    wake_at_ms=NOW_MS + call.delay_ms,
                    inserted=True,
                )
            )
        asyncio.get_running_loop().call_soon(self.logs[req.task_id].on_reply, reply)


class Worker:
    """A runtime's attempts, as the Evictor sees them (``running``), fed by ``Engine``."""

    def __init__(self, engine: Engine, slots: int) -> None:
        self.name = "w"
        self.engine = engine
        self.running: dict[int, Attempt] = {}
        self.evictor = Evictor(self, slots)  # type: ignore[arg-type]
        self.evicted: list[int] = []

    async def close(self) -> None:
        """Cancels the bodies still running (the end of a test)."""
        futures = [a.future for a in self.running.values() if a.future is not None]
        for f in futures:
            f.cancel()
        await asyncio.gather(*futures, return_exceptions=True)

    async def start(self, task_id: int, task: DurableTask, body: Any) -> Attempt:
        def evicted() -> None:
            self.evicted.append(task_id)
            attempt = self.running.pop(task_id)
            assert attempt.future is not None
            attempt.future.cancel()

        log = DurableLog(task_id, 0, self.engine.send, on_evicted=evicted)
        self.engine.logs[task_id] = log
        state = AttemptState()
        ctx = DurableContext(
            log=log,
            run_id=f"r{task_id}",
            task_name=task.name,
            attempt=0,
            retry_count=0,
            additional_metadata={},
            worker_id="w",
            task_id=task_id,
            state=state,
        )
        assignment = pb.Assignment(task_id=task_id, run_id=f"r{task_id}", task_name=task.name)
        attempt = Attempt(task, assignment, ctx, state)
        self.running[task_id] = attempt
        await log.open()
        attempt.future = asyncio.ensure_future(body(ctx))
        return attempt


def tasks() -> dict[str, DurableTask]:
    app = Stoker(address="127.0.0.1:1")

    async def body(inp: Any, ctx: DurableContext) -> None:
        return None

    declared = {
        "default": app.durable_task(name="default")(body),
        "short": app.durable_task(name="short", eviction=Eviction(ttl=0.2))(body),
        "never": app.durable_task(name="never", eviction=None)(body),
        "no_capacity": app.durable_task(
            name="no_capacity", eviction=Eviction(ttl="1h", on_capacity=False)
        )(body),
    }
    return {k: v for k, v in declared.items() if isinstance(v, DurableTask)}


async def settle_loop() -> None:
    # Enough loop turns for a step (its own task, then its append) to reach the next call.
    for _ in range(20):
        await asyncio.sleep(0)


def sleeper(seconds: float) -> Any:
    async def body(ctx: DurableContext) -> None:
        await ctx.sleep(seconds)

    return body


async def test_a_body_awaiting_a_sleep_is_blocked_and_a_running_step_is_not() -> None:
    engine = Engine()
    worker = Worker(engine, slots=10)
    gate = asyncio.Event()

    async def body(ctx: DurableContext) -> None:
        await ctx.step(gate.wait, name="work")
        await ctx.sleep(60)

    attempt = await worker.start(1, tasks()["default"], body)
    log = attempt.ctx.journal  # type: ignore[attr-defined]
    await settle_loop()
    assert not log.blocked  # the step runs
    gate.set()
    await settle_loop()
    assert log.blocked and list(log.waiting) == [2]
    await worker.close()


async def test_a_sleep_beyond_the_ttl_is_evicted_at_once_and_a_short_one_is_not() -> None:
    engine = Engine()
    worker = Worker(engine, slots=10)
    short = tasks()["short"]  # ttl 0.2 s
    far = await worker.start(1, short, sleeper(60))
    near = await worker.start(2, short, sleeper(0.15))
    await settle_loop()
    assert worker.evictor.round() == 1
    await settle_loop()
    assert worker.evicted == [1] and far.future is not None and far.future.cancelled()
    assert [r.task_id for r in engine.evicts] == [1]
    assert engine.evicts[0].invocation == 1 and engine.evicts[0].attempt == 0
    assert 2 in worker.running and near.ctx.journal.blocked  # type: ignore[attr-defined]
    await worker.close()


async def test_a_task_blocked_for_its_ttl_is_evicted() -> None:
    engine = Engine()
    worker = Worker(engine, slots=10)
    await worker.start(1, tasks()["short"], sleeper(0.15))
    await settle_loop()
    assert worker.evictor.round() == 0
    log = worker.running[1].ctx.journal  # type: ignore[attr-defined]
    log.blocked_since -= 0.25  # blocked for longer than its 0.2 s TTL
    assert worker.evictor.round() == 1
    await worker.close()


async def test_capacity_pressure_evicts_the_longest_blocked_first() -> None:
    engine = Engine()
    worker = Worker(engine, slots=3)
    declared = tasks()
    for task_id, name in [(1, "default"), (2, "never"), (3, "default")]:
        await worker.start(task_id, declared[name], sleeper(5))
        await settle_loop()
        log = worker.running[task_id].ctx.journal  # type: ignore[attr-defined]
        log.blocked_since = time.monotonic() - 0.01 * (10 - task_id)  # 1: the longest
    # 3 blocked, 3 durable slots: one goes, the longest-blocked that may (not "never").
    assert worker.evictor.round() == 1
    await settle_loop()
    assert worker.evicted == [1]
    # 2 blocked of 3 slots: no pressure any more.
    assert worker.evictor.round() == 0
    await worker.close()


async def test_a_stopping_worker_evicts_every_blocked_task_whatever_its_policy() -> None:
    engine = Engine()
    worker = Worker(engine, slots=10)
    declared = tasks()
    for task_id, name in [(1, "never"), (2, "no_capacity"), (3, "default")]:
        await worker.start(task_id, declared[name], sleeper(5))
    await settle_loop()
    assert worker.evictor.round() == 0
    worker.evictor.stopping = True
    assert worker.evictor.round() == 3
    await settle_loop()
    assert sorted(worker.evicted) == [1, 2, 3] and worker.running == {}
    await worker.close()


async def test_a_refused_eviction_keeps_the_task_and_is_asked_again_only_after_news() -> None:
    engine = Engine()
    engine.accept = lambda _: False
    worker = Worker(engine, slots=10)
    attempt = await worker.start(1, tasks()["short"], sleeper(60))
    await settle_loop()
    assert worker.evictor.round() == 1
    await settle_loop()
    assert worker.evicted == [] and attempt.future is not None and not attempt.future.done()
    assert worker.evictor.round() == 0  # nothing new seen: not asked again (for a second)
    log = attempt.ctx.journal  # type: ignore[attr-defined]
    log.on_reply(
        pb.DurableReply(
            task_id=1,
            attempt=0,
            entries=[
                pb.DurableEntry(
                    position=5, kind="wait", status="pending", wake_at_ms=1, satisfied_seq=7
                )
            ],
        )
    )
    assert log.seen_seq == 7
    engine.accept = lambda req: req.last_seen_seq == 7
    assert worker.evictor.round() == 1
    await settle_loop()
    assert engine.evicts[-1].last_seen_seq == 7 and worker.evicted == [1]
    await worker.close()


async def test_a_wait_resolved_by_a_reply_unblocks_before_the_body_resumes() -> None:
    engine = Engine()
    worker = Worker(engine, slots=10)
    attempt = await worker.start(1, tasks()["short"], sleeper(60))
    await settle_loop()
    log = attempt.ctx.journal  # type: ignore[attr-defined]
    assert log.blocked
    settled = pb.DurableEntry(
        position=1,
        kind="wait",
        name="sleep",
        fingerprint=fingerprint(EntryKind.WAIT, "sleep", timer=True),
        status="ok",
        satisfied_seq=1,
    )
    log.on_reply(pb.DurableReply(task_id=1, attempt=0, entries=[settled]))
    # Synchronously: not blocked any more, so no eviction is asked, whatever the policy.
    assert not log.blocked and log.seen_seq == 1
    worker.evictor.stopping = True
    assert worker.evictor.round() == 0
    await asyncio.wait_for(attempt.future, 1)  # type: ignore[arg-type]
    await worker.close()


def test_eviction_policies_are_checked_at_declaration() -> None:
    app = Stoker(address="127.0.0.1:1")

    async def body(inp: Any, ctx: DurableContext) -> None:
        return None

    with pytest.raises(DeclarationError, match="ttl"):
        Eviction(ttl="soon")
    with pytest.raises(DeclarationError, match="negative"):
        Eviction(ttl=-1)
    with pytest.raises(DeclarationError, match="on_capacity"):
        Eviction(on_capacity="yes")  # type: ignore[arg-type]
    with pytest.raises(DeclarationError, match="eviction takes an Eviction"):
        app.durable_task(eviction=SimpleNamespace(ttl_s=1))(body)  # type: ignore[arg-type]
    with pytest.raises(DeclarationError, match="timeout must be > 0"):
        app.durable_task(timeout=0)(body)
    with pytest.raises(DeclarationError, match="timeout"):
        app.durable_task(timeout="forever")(body)
    task = app.durable_task(timeout="2h", eviction=Eviction(ttl="5m", on_capacity=False))(body)
    assert isinstance(task, DurableTask)
    assert task.timeout_ms == 7_200_000 and task.eviction == Eviction(300, on_capacity=False)
    assert Eviction().ttl_s == 30 and Eviction().on_capacity
