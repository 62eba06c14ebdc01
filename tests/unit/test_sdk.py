"""Pure parts of the SDK: the call seam's interceptor chain, the one channel owner's
close, a context's runtime state, and request batching."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from stoker import Context
from stoker._core.envelope import wrap_root
from stoker._core.wire import message_limit, split_batches
from stoker._proto import engine_pb2 as pb
from stoker._sdk import transport as transport_module
from stoker._sdk.calls import Interceptor, chain
from stoker._sdk.context import AttemptState
from stoker._sdk.task import trigger_item
from stoker._sdk.transport import Transport
from stoker.config import ClientSettings


class Innermost(Interceptor):
    def __init__(self, seen: list[str]) -> None:  # the end of the chain has no next
        self.seen = seen

    def trigger(self, request: pb.TriggerRequest) -> pb.TriggerResponse:
        self.seen.append("sent")
        return pb.TriggerResponse(run_ids=["r1"])

    async def aio_trigger(self, request: pb.TriggerRequest) -> pb.TriggerResponse:
        self.seen.append("sent")
        return pb.TriggerResponse(run_ids=["r2"])


def tagging(tag: str, seen: list[str]) -> type[Interceptor]:
    class Tag(Interceptor):
        def trigger(self, request: pb.TriggerRequest) -> pb.TriggerResponse:
            seen.append(tag)
            return self.next.trigger(request)

        async def aio_trigger(self, request: pb.TriggerRequest) -> pb.TriggerResponse:
            seen.append(tag)
            return await self.next.aio_trigger(request)

    return Tag


def test_interceptors_wrap_calls_first_outermost() -> None:
    seen: list[str] = []
    calls = chain(Innermost(seen), [tagging("a", seen), tagging("b", seen)])
    assert list(calls.trigger(pb.TriggerRequest()).run_ids) == ["r1"]
    assert seen == ["a", "b", "sent"]
    seen.clear()
    assert list(asyncio.run(calls.aio_trigger(pb.TriggerRequest())).run_ids) == ["r2"]
    assert seen == ["a", "b", "sent"]


def test_the_base_interceptor_passes_every_call_through() -> None:
    seen: list[str] = []
    calls = chain(Innermost(seen), [Interceptor])
    assert list(calls.trigger(pb.TriggerRequest()).run_ids) == ["r1"]
    assert seen == ["sent"]


def test_an_interceptor_factory_must_make_an_interceptor() -> None:
    with pytest.raises(TypeError, match="not an Interceptor"):
        chain(Innermost([]), [lambda _next: object()])  # type: ignore[list-item,return-value]


class FakeChannel:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return None

    unary_stream = stream_unary = stream_stream = unary_unary


def test_close_closes_the_asyncio_channel_of_every_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[FakeChannel] = []

    def fake_open(settings: Any, address: Any = None) -> FakeChannel:
        opened.append(FakeChannel())
        return opened[-1]

    monkeypatch.setattr(transport_module, "open_aio_channel", fake_open)
    transport = Transport(ClientSettings.load(address="127.0.0.1:1", token="t"))

    async def use() -> None:
        transport.aio_stubs()
        transport.aio_stubs()  # the same loop reuses its channel

    # One loop that stays open (idle), one running in another thread.
    idle = asyncio.new_event_loop()
    idle.run_until_complete(use())
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(use(), other).result(5)
    assert len(opened) == 2

    transport.close()
    assert opened[0].closed
    done = asyncio.run_coroutine_threadsafe(asyncio.sleep(0.05), other)
    done.result(5)
    assert opened[1].closed
    other.call_soon_threadsafe(other.stop)
    thread.join(5)
    other.close()
    idle.close()


def test_a_context_reads_its_attempt_state() -> None:
    refreshed: list[float] = []
    released: list[bool] = []
    state = AttemptState(
        execution_timeout_s=10,
        on_refresh=refreshed.append,
        on_release_slot=lambda: released.append(True),
    )
    ctx = Context(
        run_id="r",
        task_name="t",
        attempt=1,
        retry_count=0,
        additional_metadata={},
        worker_id="w",
        state=state,
    )
    assert ctx.deadline == state.deadline and not ctx.is_cancelled
    ctx.refresh_timeout("30s")
    assert refreshed == [30.0]
    ctx.release_slot()
    ctx.release_slot()
    assert released == [True] and state.slot_released
    state.cancel("execution timeout")
    assert ctx.is_cancelled and ctx.cancelled.is_set()
    assert ctx.cancel_reason == "execution timeout"
    assert state.take_child_indexes(3) == 0 and state.take_child_indexes(1) == 3
    assert ctx.spawned_children == 4


def test_a_step_context_sees_its_parents_outcomes() -> None:
    state = AttemptState()
    raw = b'{"input": {"n": 1}, "parents": {"a": 2}, "skipped": ["b"], "errors": {}}'
    assert state.bind_input(raw, is_step=True) == b'{"n": 1}'
    assert state.bind_input(wrap_root(b"[1]"), is_step=True) == b"[1]"
    assert state.bind_input(b'{"x": 1}', is_step=False) == b'{"x": 1}'
    ctx = Context(
        run_id="r",
        task_name="t",
        attempt=1,
        retry_count=0,
        additional_metadata={},
        worker_id="w",
    )
    assert ctx.task_run_errors == {} and not ctx.is_cancelled


def test_split_batches_respects_the_item_count_and_the_size_limit() -> None:
    items = [trigger_item("t", b'{"n": %d}' % i, {}) for i in range(25)]
    assert [len(b) for b in split_batches(items, 1 << 20, 10)] == [10, 10, 5]
    one = items[0].ByteSize() + 10
    batches = split_batches(items, 1024 + 3 * one, 100)
    assert sum(len(b) for b in batches) == 25 and len(batches) > 1
    assert [i for b in batches for i in b] == items
    big = trigger_item("t", b'"' + b"x" * 5000 + b'"', {})
    assert split_batches([big, items[0]], 2048, 100) == [[big], [items[0]]]
    assert split_batches([], message_limit(1024), 10) == []
