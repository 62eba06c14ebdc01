"""The SDK's side of durable replay (stoker._sdk.durable), against a stand-in for the
engine's answers on the stream: recorded calls come back without running, positions
follow call order, a changed call is refused, bad arguments fail at the call."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from stoker import (
    DeclarationError,
    DurableContext,
    NonDeterminismError,
    OutputSerializationError,
    StepError,
    Stoker,
)
from stoker._core.durable import EntryKind, fingerprint
from stoker._proto import engine_pb2 as pb
from stoker._sdk.children import ChildSpec
from stoker._sdk.context import current_context
from stoker._sdk.durable import MAX_BACKOFF_S, DurableLog, StepOptions


class Log:
    """Answers a DurableLog's requests as the engine would: OPEN with ``recorded``,
    APPEND by recording each call (steps settled, sleeps pending with a deadline)."""

    def __init__(self, recorded: list[pb.DurableEntry]) -> None:
        self.entries = {e.position: e for e in recorded}
        self.appended: list[pb.DurableCall] = []
        self.log = DurableLog(1, 0, self.send)
        self.seq = max((e.satisfied_seq for e in recorded), default=0)

    def send(self, msg: pb.WorkerMessage) -> None:
        req = msg.durable
        reply = pb.DurableReply(
            task_id=req.task_id, attempt=req.attempt, request_id=req.request_id, invocation=1
        )
        reply.now_ms = 1_000_000
        if req.op == pb.OPEN:
            reply.entries.extend(self.entries.values())
        for call in req.calls:
            self.appended.append(call)
            self.seq += 1
            entry = pb.DurableEntry(
                position=call.position, kind=call.kind, name=call.name,
                fingerprint=call.fingerprint, status=call.status, result=call.result,
                error=call.error,
                wake_at_ms=reply.now_ms + call.delay_ms if call.kind == "wait" else 0,
                satisfied_seq=self.seq if call.status in ("ok", "error") else 0, inserted=True,
            )  # fmt: skip
            self.entries[call.position] = entry
            reply.entries.append(entry)
        asyncio.get_running_loop().call_soon(self.log.on_reply, reply)

    async def context(self) -> DurableContext:
        await self.log.open()
        return DurableContext(
            log=self.log,
            run_id="r",
            task_name="t",
            attempt=0,
            retry_count=0,
            additional_metadata={},
            worker_id="w",
        )


def step_entry(position: int, name: str, result: Any, seq: int) -> pb.DurableEntry:
    return pb.DurableEntry(
        position=position, kind="step", name=name,
        fingerprint=fingerprint(EntryKind.STEP, name), status="ok",
        result=json.dumps(result).encode(), satisfied_seq=seq,
    )  # fmt: skip


async def test_recorded_steps_return_their_results_without_running() -> None:
    engine = Log([step_entry(1, "charge", {"paid": 5}, 1)])
    ctx = await engine.context()
    calls: list[str] = []

    def charge() -> dict[str, int]:
        calls.append("charge")
        return {"paid": 99}

    async def receipt(paid: int) -> str:
        calls.append("receipt")
        return f"paid {paid}"

    paid = await ctx.step(charge)
    assert paid == {"paid": 5}
    assert await ctx.step(receipt, paid["paid"]) == "paid 5"
    assert calls == ["receipt"]  # the recorded step did not run again
    assert [(c.position, c.name, c.result) for c in engine.appended] == [
        (2, "receipt", b'"paid 5"')
    ]


async def test_positions_follow_the_order_of_the_calls_under_gather() -> None:
    engine = Log([])
    ctx = await engine.context()

    async def slow() -> str:
        await asyncio.sleep(0.01)
        return "slow"

    async def fast() -> str:
        return "fast"

    assert await asyncio.gather(ctx.step(slow), ctx.step(fast)) == ["slow", "fast"]
    assert sorted((c.position, c.name) for c in engine.appended) == [(1, "slow"), (2, "fast")]


async def test_a_changed_call_at_a_recorded_position_is_refused() -> None:
    engine = Log([step_entry(1, "alpha", "a", 1)])
    ctx = await engine.context()
    with pytest.raises(NonDeterminismError, match=r"position 1.*step 'alpha'.*wait 'sleep'"):
        await ctx.sleep(1)
    assert ctx.journal.diverged is not None  # kept, even if the body caught it


async def test_a_sleep_past_its_recorded_deadline_returns_at_once() -> None:
    past = pb.DurableEntry(
        position=1, kind="wait", name="sleep",
        fingerprint=fingerprint(EntryKind.WAIT, "sleep", timer=True), status="pending",
        wake_at_ms=1,
    )  # fmt: skip
    ctx = await Log([past]).context()
    await asyncio.wait_for(ctx.sleep(3600), 5)


async def test_a_step_whose_result_is_not_json_fails_naming_the_type() -> None:
    engine = Log([])
    ctx = await engine.context()
    with pytest.raises(StepError, match=r"'tags'.*OutputSerializationError.*returned a set"):
        await ctx.step(lambda: {"a"}, name="tags")
    [call] = engine.appended  # the failure is recorded, to be raised again on replay
    assert call.status == "error"
    assert json.loads(call.error)["type"] == OutputSerializationError.__name__


async def test_a_step_is_retried_with_backoff_then_its_failure_is_recorded() -> None:
    engine = Log([])
    ctx = await engine.context()
    tries: list[float] = []

    def flaky() -> None:
        tries.append(time.monotonic())
        raise ConnectionError(f"try {len(tries)}")

    with pytest.raises(StepError) as failed:
        await ctx.step(flaky, retries=2, backoff=0.05)
    assert len(tries) == 3
    assert tries[1] - tries[0] >= 0.05 and tries[2] - tries[1] >= 0.1  # doubling
    assert (failed.value.error_type, failed.value.error_message) == ("ConnectionError", "try 3")
    assert isinstance(failed.value.__cause__, ConnectionError)
    [call] = engine.appended
    assert (call.position, call.name, call.status) == (1, "flaky", "error")


async def test_a_recorded_step_failure_is_raised_again_without_running() -> None:
    error = {"type": "ValueError", "message": "declined", "traceback": "tb"}
    recorded = pb.DurableEntry(
        position=1, kind="step", name="charge",
        fingerprint=fingerprint(EntryKind.STEP, "charge"), status="error",
        error=json.dumps(error).encode(), satisfied_seq=1,
    )  # fmt: skip
    engine = Log([recorded])
    ctx = await engine.context()
    ran: list[int] = []

    def charge() -> None:
        ran.append(1)

    with pytest.raises(StepError) as failed:
        await ctx.step(charge)
    assert (failed.value.error_type, failed.value.error_message) == ("ValueError", "declined")
    assert (failed.value.step, failed.value.position) == ("charge", 1)
    assert failed.value.remote_traceback == "tb"
    assert ran == [] and engine.appended == []


async def test_a_try_past_the_step_s_timeout_fails_it() -> None:
    ctx = await Log([]).context()

    async def stuck() -> None:
        await asyncio.sleep(30)

    with pytest.raises(StepError, match=r"StepTimeoutError: step 'stuck' took longer than"):
        await asyncio.wait_for(ctx.step(stuck, timeout=0.05), 5)


async def test_now_uuid_and_random_are_recorded_steps() -> None:
    engine = Log([])
    ctx = await engine.context()
    now, uid, rnd = await ctx.now(), await ctx.uuid(), await ctx.random()
    assert now.tzinfo is not None and isinstance(uid, UUID) and 0 <= rnd < 1
    assert [c.name for c in engine.appended] == ["stoker.now", "stoker.uuid", "stoker.random"]
    # A replay of the same log gets the same values back.
    again = Log(list(engine.entries.values()))
    replay = await again.context()
    assert (await replay.now(), await replay.uuid(), await replay.random()) == (now, uid, rnd)
    assert again.appended == []


async def test_an_app_step_is_recorded_in_a_durable_task_and_plain_elsewhere() -> None:
    app = Stoker(address="127.0.0.1:1")
    ran: list[str] = []

    @app.step(name="greet")
    def greet(who: str) -> str:
        ran.append(who)
        return f"hi {who}"

    assert greet("plain") == "hi plain"  # no durable task: a plain call
    engine = Log([])
    ctx = await engine.context()
    token = current_context.set(ctx)
    try:
        assert await greet("ada") == "hi ada"
    finally:
        current_context.reset(token)
    assert ran == ["plain", "ada"]
    assert [(c.name, c.result) for c in engine.appended] == [("greet", b'"hi ada"')]


def test_bad_step_options_are_refused() -> None:
    app = Stoker(address="127.0.0.1:1")
    with pytest.raises(DeclarationError, match="retries must be an int >= 0"):
        app.step(retries=-1)
    with pytest.raises(DeclarationError, match="backoff must be seconds >= 0"):
        app.step(backoff=-1)
    with pytest.raises(DeclarationError, match="timeout must be seconds > 0"):
        app.step(timeout=0)
    assert StepOptions(backoff=1).delay(1) == 1 and StepOptions(backoff=1).delay(3) == 4
    assert StepOptions(backoff=10).delay(10) == MAX_BACKOFF_S


async def test_bad_sleeps_are_refused_at_the_call() -> None:
    ctx = await Log([]).context()
    with pytest.raises(ValueError, match="duration >= 0"):
        ctx.sleep(-1)
    with pytest.raises(ValueError, match="duration >= 0"):
        ctx.sleep(timedelta(seconds=-5))
    with pytest.raises(ValueError, match="timezone-aware"):
        ctx.sleep_until(datetime(2030, 1, 1))


async def test_a_replay_that_spawns_another_child_is_refused() -> None:
    recorded = pb.DurableEntry(
        position=1, kind="child", name="kid",
        fingerprint=fingerprint(EntryKind.CHILD, "kid"), status="pending",
        child_run_id="00000000-0000-0000-0000-000000000001",
    )  # fmt: skip
    engine = Log([recorded])
    ctx = await engine.context()
    with pytest.raises(NonDeterminismError, match=r"position 1.*child 'kid'.*child 'other'"):
        ctx.spawn([ChildSpec("other", "", b"{}", {})], None, awaited=True)
    # The same child with another key is another call too.
    engine = Log([recorded])
    ctx = await engine.context()
    with pytest.raises(NonDeterminismError, match="position 1"):
        ctx.spawn([ChildSpec("kid", "", b"{}", {"child_key": "k"})], None, awaited=True)


async def test_a_recorded_child_is_found_again_not_spawned() -> None:
    recorded = pb.DurableEntry(
        position=1, kind="child", name="kid",
        fingerprint=fingerprint(EntryKind.CHILD, "kid"), status="ok",
        result=b"42", satisfied_seq=1, child_run_id="00000000-0000-0000-0000-000000000001",
    )  # fmt: skip
    engine = Log([recorded])
    ctx = await engine.context()
    assert await ctx.run_child(ChildSpec("kid", "", b"{}", {}), None) == 42
    refs, done = ctx.spawn([ChildSpec("kid", "", b"{}", {})], None, awaited=False)
    await done
    assert refs[0].run_id != recorded.child_run_id  # position 2: a new child
    [call] = engine.appended
    assert (call.position, call.kind, call.child.task_name) == (2, "child", "kid")
    assert call.child.run_id == refs[0].run_id


async def test_a_step_result_postgres_cannot_store_fails_the_step() -> None:
    engine = Log([])
    ctx = await engine.context()
    with pytest.raises(StepError, match=r"OutputSerializationError.*cannot be stored.*NUL"):
        await ctx.step(lambda: "a\x00b", name="nul")

    def boom() -> None:
        raise ValueError("bad \x00 byte")

    with pytest.raises(StepError) as failed:
        await ctx.step(boom)
    assert failed.value.error_message == "bad \\x00 byte"  # stored as visible text
    assert [c.status for c in engine.appended] == ["error", "error"]


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        (lambda ctx: ctx.wait_for_event("k", "input.total >"), r"invalid CEL expression 'input\.t"),
        (lambda ctx: ctx.wait_for_event("k", lookback=-1), "negative"),
        (lambda ctx: ctx.wait_for_event("k", lookback=timedelta(hours=25)), "longer than 24 h"),
        (lambda ctx: ctx.wait_for_event(""), "event key"),
        (lambda ctx: ctx.wait_for(), "at least one condition"),
    ],
)  # fmt: skip
async def test_a_bad_wait_is_refused_at_the_call_before_anything_is_recorded(
    call: Any, problem: str
) -> None:
    engine = Log([])
    ctx = await engine.context()
    with pytest.raises(ValueError, match=problem):
        call(ctx)
    assert engine.appended == []


async def test_a_replayed_wait_returns_its_recorded_payload_and_what_fired() -> None:
    from stoker import SleepCondition, UserEventCondition, or_

    keys = fingerprint(EntryKind.WAIT, "wait_for", event_keys=["paid"], timer=True)
    engine = Log(
        [
            pb.DurableEntry(
                position=1, kind="wait", name="wait_for", fingerprint=keys, status="ok",
                result=b'{"fired": "0.1", "payload": {"n": 1}}', satisfied_seq=1,
            )
        ]
    )  # fmt: skip
    ctx = await engine.context()
    event = UserEventCondition("paid")
    got = await ctx.wait_for(or_(SleepCondition(60), event))
    assert (got.fired, got.payload) == (event, {"n": 1})
    assert engine.appended == []
