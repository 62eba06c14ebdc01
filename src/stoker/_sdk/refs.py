"""References to runs, and waiting for their results.

:class:`RunRef` waits with the engine's ``AwaitRuns`` long-poll, in chunks of at most
``_AWAIT_CHUNK_MS`` so a lost connection is noticed, until the run is finished or the
caller's timeout passes. A completed run's output is decoded by the task (or workflow)
that made it; a failed or cancelled one raises :class:`~stoker.TaskRunError` /
:class:`~stoker.RunCancelledError`.

``aio_result`` calls made in the same turn of an event loop (``asyncio.gather`` of a
thousand) are asked together: one ``AwaitRuns`` for all their ids (:class:`_Poller`), each
caller still waiting, timing out and being cancelled on its own. ``app.runs.results`` asks
for many runs itself (:func:`collect` / :func:`aio_collect`). Answers are *compact*:
completed runs come as two parallel lists of ids and outputs, not a message per run.
"""

from __future__ import annotations

import asyncio
import re
import time
import typing
import uuid
import weakref
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from stoker._core.wire import load_json
from stoker._proto import engine_pb2 as pb
from stoker.errors import NotFoundError, RunCancelledError, TaskRunError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from stoker._sdk.calls import Connection
    from stoker._sdk.observe import RunEvent

O = TypeVar("O")  # noqa: E741 - the output type
O_co = TypeVar("O_co", covariant=True)

# How long one AwaitRuns long-poll may wait on the engine.
_AWAIT_CHUNK_MS = 20_000
# Run ids per AwaitRuns request (about 380 kB of ids, well under any message limit).
_IDS_PER_CALL = 10_000
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

Outcome = bytes | pb.RunResult
"""A finished run as the engine answered: a completed run's output JSON, or its result."""


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
            req = pb.AwaitRunsRequest(
                run_ids=[self.run_id], timeout_ms=_wait_ms(deadline), compact=True
            )
            resp = self.connection.calls.await_runs(req)
            for _, outcome in outcomes(resp):
                return self.decode(outcome)
            if resp.unknown_run_ids:
                raise NotFoundError(f"no run with id {self.run_id}")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {self.run_id} did not finish within {timeout}s")

    async def aio_result(self, timeout: float | None = None) -> O:
        loop = asyncio.get_running_loop()
        future = _poller(self.connection, loop).add(self.run_id, timeout)
        try:
            outcome = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"run {self.run_id} did not finish within {timeout}s") from None
        return self.decode(outcome)

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

    def decode(self, outcome: Outcome) -> O:
        """The run's output, decoded by its task; TaskRunError / RunCancelledError for a run
        that did not complete."""
        if isinstance(outcome, bytes):
            if self.task is not None:
                return self.task.decode_output(outcome)
            return typing.cast(O, load_json(outcome) if outcome else None)
        if outcome.status == "COMPLETED":
            return self.decode(outcome.output)
        cls = RunCancelledError if outcome.status == "CANCELLED" else TaskRunError
        raise cls(
            outcome.run_id,
            outcome.error.type or outcome.status,
            outcome.error.message,
            outcome.error.traceback,
            status=outcome.status,
        )


def outcomes(resp: pb.AwaitRunsResponse) -> Iterable[tuple[str, Outcome]]:
    """The finished runs of an ``AwaitRuns`` answer, compact or not, by run id."""
    yield from zip(resp.completed_run_ids, resp.completed_outputs, strict=True)
    for r in resp.results:
        yield r.run_id, r


def request_id(run_id: str) -> str:
    """A run id as the engine writes it, or NotFoundError: the engine answers ids in their
    canonical text, so that is what is asked (and matched)."""
    if _CANONICAL.fullmatch(run_id):
        return run_id
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        raise NotFoundError(f"not a run id: {run_id!r}") from None


class _Poller:
    """The ``aio_result`` calls of one connection on one event loop, asked together.

    Ids added in the same turn of the loop form a group, polled by one task with one
    ``AwaitRuns`` per ``_IDS_PER_CALL`` ids until every caller of the group has its run or
    has gone (timed out or cancelled: its future is done); the poll's wait is the longest
    one the group's callers still have. Each caller has a future of its own.
    """

    def __init__(self, connection: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self._connection = connection
        self._loop = loop
        self._new: dict[str, list[tuple[asyncio.Future[Outcome], float | None]]] = {}

    def add(self, run_id: str, timeout: float | None) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = self._loop.create_future()
        try:
            key = request_id(run_id)
        except NotFoundError as exc:
            future.set_exception(exc)
            return future
        if not self._new:
            self._loop.call_soon(self._start)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._new.setdefault(key, []).append((future, deadline))
        return future

    def _start(self) -> None:
        group, self._new = self._new, {}
        task = self._loop.create_task(self._poll(group), name="stoker-await-runs")
        _polls.add(task)
        task.add_done_callback(_polls.discard)
        # When every caller has gone, the poll (and its call to the engine) goes too.
        futures = [f for waiters in group.values() for f, _ in waiters]
        left = [len(futures)]

        def gone(_: object) -> None:
            left[0] -= 1
            if not left[0] and not task.done():
                task.cancel()

        for future in futures:
            future.add_done_callback(gone)

    async def _poll(
        self, group: dict[str, list[tuple[asyncio.Future[Outcome], float | None]]]
    ) -> None:
        calls = self._connection.calls
        while True:
            group = {k: [w for w in ws if not w[0].done()] for k, ws in group.items()}
            group = {k: ws for k, ws in group.items() if ws}
            if not group:
                return
            deadlines = [d for ws in group.values() for _, d in ws]
            deadline = None if None in deadlines else max(d for d in deadlines if d is not None)
            ids = list(group)
            requests = [
                pb.AwaitRunsRequest(
                    run_ids=ids[i : i + _IDS_PER_CALL], timeout_ms=_wait_ms(deadline), compact=True
                )
                for i in range(0, len(ids), _IDS_PER_CALL)
            ]
            answers = await asyncio.gather(
                *(calls.aio_await_runs(r) for r in requests), return_exceptions=True
            )
            for req, answer in zip(requests, answers, strict=True):
                if isinstance(answer, BaseException):
                    for run_id in req.run_ids:
                        exc = (
                            NotFoundError(f"no run with id {run_id}")
                            if isinstance(answer, NotFoundError)
                            else answer
                        )
                        for future, _ in group.pop(run_id, ()):
                            if not future.done():
                                future.set_exception(exc)
                    continue
                for run_id, outcome in outcomes(answer):
                    for future, _ in group.pop(run_id, ()):
                        if not future.done():
                            future.set_result(outcome)
                for run_id in answer.unknown_run_ids:
                    for future, _ in group.pop(run_id, ()):
                        if not future.done():
                            future.set_exception(NotFoundError(f"no run with id {run_id}"))
            if deadline is not None and time.monotonic() >= deadline:
                return  # every caller left has timed out on its own by now


# Poll tasks are kept referenced until done (the loop holds tasks only weakly).
_polls: set[asyncio.Task[None]] = set()
_pollers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.WeakKeyDictionary[Connection, _Poller]
] = weakref.WeakKeyDictionary()


def _poller(connection: Connection, loop: asyncio.AbstractEventLoop) -> _Poller:
    per_loop = _pollers.get(loop)
    if per_loop is None:
        per_loop = _pollers[loop] = weakref.WeakKeyDictionary()
    poller = per_loop.get(connection)
    if poller is None:
        poller = per_loop[connection] = _Poller(connection, loop)
    return poller


def _ordered(refs: Sequence[RunRef[Any] | str], connection: Connection) -> list[RunRef[Any]]:
    return [r if isinstance(r, RunRef) else RunRef(connection, r, None) for r in refs]


def _take(
    answer: pb.AwaitRunsResponse | BaseException,
    asked: Sequence[str],
    found: dict[str, Outcome],
    missing: dict[str, NotFoundError],
) -> None:
    if isinstance(answer, NotFoundError):
        for run_id in asked:
            missing[run_id] = NotFoundError(f"no run with id {run_id}")
        return
    if isinstance(answer, BaseException):
        raise answer
    found.update(outcomes(answer))
    for run_id in answer.unknown_run_ids:
        missing[run_id] = NotFoundError(f"no run with id {run_id}")


def _settle(
    refs: list[RunRef[Any]],
    keys: list[str],
    found: dict[str, Outcome],
    missing: dict[str, NotFoundError],
    return_exceptions: bool,
) -> list[Any]:
    if missing and not return_exceptions:
        raise next(iter(missing.values()))
    out: list[Any] = []
    for ref, key in zip(refs, keys, strict=True):
        if key in missing:
            out.append(missing[key])
            continue
        try:
            out.append(ref.decode(found[key]))
        except (TaskRunError, RunCancelledError) as exc:
            if not return_exceptions:
                raise
            out.append(exc)
    return out


def _pending(ids: list[str], found: dict[str, Outcome], missing: dict[str, Any]) -> list[str]:
    return [i for i in ids if i not in found and i not in missing]


def _timed_out(left: list[str], timeout: float | None) -> TimeoutError:
    return TimeoutError(f"{len(left)} runs did not finish within {timeout}s (first: {left[0]})")


def collect(
    connection: Connection,
    refs: Sequence[RunRef[Any] | str],
    timeout: float | None,
    return_exceptions: bool,
) -> list[Any]:
    """The results of many runs, in the order given (``app.runs.results``)."""
    ordered = _ordered(refs, connection)
    keys = [request_id(r.run_id) for r in ordered]
    ids = list(dict.fromkeys(keys))
    deadline = None if timeout is None else time.monotonic() + timeout
    found: dict[str, Outcome] = {}
    missing: dict[str, NotFoundError] = {}
    while left := _pending(ids, found, missing):
        for i in range(0, len(left), _IDS_PER_CALL):
            asked = left[i : i + _IDS_PER_CALL]
            req = pb.AwaitRunsRequest(run_ids=asked, timeout_ms=_wait_ms(deadline), compact=True)
            answer: pb.AwaitRunsResponse | BaseException
            try:
                answer = connection.calls.await_runs(req)
            except NotFoundError as exc:
                answer = exc
            _take(answer, asked, found, missing)
        left = _pending(ids, found, missing)
        if left and deadline is not None and time.monotonic() >= deadline:
            raise _timed_out(left, timeout)
    return _settle(ordered, keys, found, missing, return_exceptions)


async def aio_collect(
    connection: Connection,
    refs: Sequence[RunRef[Any] | str],
    timeout: float | None,
    return_exceptions: bool,
) -> list[Any]:
    """:func:`collect` for asyncio: the requests of a round are sent side by side."""
    ordered = _ordered(refs, connection)
    keys = [request_id(r.run_id) for r in ordered]
    ids = list(dict.fromkeys(keys))
    deadline = None if timeout is None else time.monotonic() + timeout
    found: dict[str, Outcome] = {}
    missing: dict[str, NotFoundError] = {}
    while left := _pending(ids, found, missing):
        chunks = [left[i : i + _IDS_PER_CALL] for i in range(0, len(left), _IDS_PER_CALL)]
        answers = await asyncio.gather(
            *(
                connection.calls.aio_await_runs(
                    pb.AwaitRunsRequest(run_ids=c, timeout_ms=_wait_ms(deadline), compact=True)
                )
                for c in chunks
            ),
            return_exceptions=True,
        )
        for asked, answer in zip(chunks, answers, strict=True):
            _take(answer, asked, found, missing)
        left = _pending(ids, found, missing)
        if left and deadline is not None and time.monotonic() >= deadline:
            raise _timed_out(left, timeout)
    return _settle(ordered, keys, found, missing, return_exceptions)


def _wait_ms(deadline: float | None) -> int:
    if deadline is None:
        return _AWAIT_CHUNK_MS
    return max(0, min(_AWAIT_CHUNK_MS, int((deadline - time.monotonic()) * 1000)))


__all__ = ["OutputDecoder", "RunRef"]
