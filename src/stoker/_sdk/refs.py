"""References to runs, and waiting for their results.

:class:`RunRef` waits with the engine's ``AwaitRuns`` long-poll, in chunks of at most
``_AWAIT_CHUNK_MS`` so a lost connection is noticed, until the run is finished or the
caller's timeout passes. A completed run's output is decoded by the task (or workflow)
that made it; a failed or cancelled one raises :class:`~stoker.TaskRunError` /
:class:`~stoker.RunCancelledError`.
"""

from __future__ import annotations

import json
import time
import typing
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from stoker._proto import engine_pb2 as pb
from stoker.errors import RunCancelledError, TaskRunError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from stoker._sdk.calls import Connection
    from stoker._sdk.observe import RunEvent

O = TypeVar("O")  # noqa: E741 - the output type
O_co = TypeVar("O_co", covariant=True)

# How long one AwaitRuns long-poll may wait on the engine.
_AWAIT_CHUNK_MS = 20_000


class OutputDecoder(Protocol[O_co]):
    """What decodes a completed run's output: a task, or a workflow."""

    def decode_output(self, raw: bytes) -> O_co: ...


class RunRef(Generic[O]):
    """A reference to one run: wait for it with ``result()`` or ``await aio_result()``."""

    def __init__(
        self,
        connection: Connection,
        run_id: str,
        task: OutputDecoder[O] | None,
        *,
        deduplicated: bool = False,
    ) -> None:
        self.connection = connection
        self.run_id = run_id
        self.task = task
        self.deduplicated = deduplicated
        """True when the trigger's idempotency key named a live run: this is that run, and
        no new one was created."""

    def __repr__(self) -> str:
        return f"<RunRef {self.run_id}{' deduplicated' if self.deduplicated else ''}>"

    def result(self, timeout: float | None = None) -> O:
        """Blocks until the run finishes; its output, or TaskRunError / RunCancelledError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            req = pb.AwaitRunsRequest(run_ids=[self.run_id], timeout_ms=_wait_ms(deadline))
            results = self.connection.calls.await_runs(req).results
            if results:
                return self._outcome(results[0])
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {self.run_id} did not finish within {timeout}s")

    async def aio_result(self, timeout: float | None = None) -> O:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            req = pb.AwaitRunsRequest(run_ids=[self.run_id], timeout_ms=_wait_ms(deadline))
            results = (await self.connection.calls.aio_await_runs(req)).results
            if results:
                return self._outcome(results[0])
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {self.run_id} did not finish within {timeout}s")

    def stream(self, attempt: int = 0) -> AsyncIterator[str | bytes]:
        """``async for chunk in ref.stream()``: the chunks the run's task publishes with
        ``ctx.put_stream``, in order, from the first (joining late misses nothing the
        engine still keeps), live until the attempt ends; str chunks come back as str.
        ``attempt``: read that attempt's stream instead of the latest one's."""
        from stoker._sdk.observe import read_stream

        return read_stream(self.connection, self.run_id, attempt)

    def events(self) -> AsyncIterator[RunEvent]:
        """``async for event in ref.events()``: queued, assigned, started, retrying and
        finished, from the run's first event, until it finishes (see
        :class:`~stoker.RunEvent`)."""
        from stoker._sdk.observe import watch_runs

        return watch_runs(self.connection, run_id=self.run_id)

    def _outcome(self, result: pb.RunResult) -> O:
        if result.status == "COMPLETED":
            if self.task is not None:
                return self.task.decode_output(result.output)
            return typing.cast(O, json.loads(result.output) if result.output else None)
        cls = RunCancelledError if result.status == "CANCELLED" else TaskRunError
        raise cls(
            result.run_id,
            result.error.type or result.status,
            result.error.message,
            result.error.traceback,
            status=result.status,
        )


def _wait_ms(deadline: float | None) -> int:
    if deadline is None:
        return _AWAIT_CHUNK_MS
    return max(0, min(_AWAIT_CHUNK_MS, int((deadline - time.monotonic()) * 1000)))


__all__ = ["OutputDecoder", "RunRef"]
