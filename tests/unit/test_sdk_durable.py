"""The SDK's side of durable replay (stoker._sdk.durable), against a stand-in for the
engine's answers on the stream: recorded calls come back without running, positions
follow call order, a changed call is refused, bad arguments fail at the call."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from stoker import DurableContext, NonDeterminismError, OutputSerializationError
from stoker._core.durable import EntryKind, fingerprint
from stoker._proto import engine_pb2 as pb
from stoker._sdk.durable import DurableLog


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
                wake_at_ms=reply.now_ms + call.delay_ms if call.kind == "wait" else 0,
                satisfied_seq=self.seq if call.status == "ok" else 0, inserted=True,
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
    assert ctx.log.diverged is not None  # kept, even if the body caught it


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
    with pytest.raises(OutputSerializationError, match=r"'tags'.*returned a set"):
        await ctx.step(lambda: {"a"}, name="tags")
    assert engine.appended == []


async def test_bad_sleeps_are_refused_at_the_call() -> None:
    ctx = await Log([]).context()
    with pytest.raises(ValueError, match="duration >= 0"):
        ctx.sleep(-1)
    with pytest.raises(ValueError, match="duration >= 0"):
        ctx.sleep(timedelta(seconds=-5))
    with pytest.raises(ValueError, match="timezone-aware"):
        ctx.sleep_until(datetime(2030, 1, 1))


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
