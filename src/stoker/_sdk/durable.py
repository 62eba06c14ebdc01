"""Durable tasks in the SDK (docs/durable.md): :class:`DurableTask`, the
:class:`DurableContext` its body receives, and :class:`DurableLog`, the attempt's view of
its log in the engine.

A durable body's calls — ``ctx.step``, ``ctx.sleep``, ``ctx.sleep_until`` — each take the
next position *when called* (before any ``await``), so numbering follows program order.
When the attempt starts, the log is opened (a new invocation; the engine fences off older
ones) and its visible entries come back; a call whose position is recorded is checked
against the record (:func:`stoker._core.durable.check_call`) and returns its recorded
outcome at once, through the :class:`~stoker._core.durable.ReleaseGate` so completions
come back in their original order. A new call is appended over the worker's stream and
acknowledged before the body continues: a step after it ran (so a completed step never
runs again, a step in flight during a crash runs again), a sleep with its deadline
computed by the engine from the database clock (so it never moves).

A pending wait is resolved when the engine sends its settled entry (an event's
settlement: a ``DurableReply`` no request asked for), or hints that the log changed
(``DurableWakes``) and the re-read log (``SYNC``) shows it settled; a wait that looks late
on the database clock re-reads on its own, so a lost hint costs latency, not the wake-up.

The log also knows when the body is *blocked*: it awaits pending waits and nothing else
durable is in flight (no step running, no append or replay gate outstanding). While
blocked, the attempt's execution deadline is paused, and the worker may evict it
(:class:`Eviction`, ``EVICT``): the request is built at the instant of the decision with
the highest settlement sequence seen so far, so the engine refuses it when anything was
settled since, and the body is cancelled only once the engine accepted.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import itertools
import json
import logging
import random
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar, overload
from uuid import UUID, uuid4

from pydantic import BaseModel

from stoker._core.cel import compile_expression
from stoker._core.durable import (
    MAX_LOOKBACK_MS,
    EntryKind,
    EntryStatus,
    Operation,
    ReleaseGate,
    WaitLeaf,
    check_call,
    fingerprint,
    wait_request,
)
from stoker._core.wire import encode_json, json_problem, storable_text
from stoker._proto import engine_pb2 as pb
from stoker._sdk.children import ChildSpec
from stoker._sdk.conditions import OrGroup, SleepCondition, UserEventCondition
from stoker._sdk.context import Context, current_context
from stoker._sdk.refs import OutputDecoder, RunRef
from stoker._sdk.task import Task
from stoker.config import parse_duration
from stoker.errors import (
    DeclarationError,
    DurationError,
    NonDeterminismError,
    OutputSerializationError,
    RunCancelledError,
    StepError,
    StepTimeoutError,
    StokerError,
    TaskRunError,
    WaitTimeoutError,
)

log = logging.getLogger("stoker.worker")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

LATE_S = 1.0
"""How long past its deadline (on the database clock) a sleep waits for the engine's hint
before it re-reads its log itself."""

RESYNC_S = 5.0
"""Then how often it re-reads while still pending."""

_request_ids = itertools.count(1)

_SLEEP = "sleep"
_SLEEP_FP = fingerprint(EntryKind.WAIT, _SLEEP, timer=True)
_WAIT_FOR_EVENT = "wait_for_event"
_WAIT_FOR = "wait_for"


@dataclass(frozen=True)
class WaitResult:
    """What ended a ``ctx.wait_for``: the condition that fired (one of those passed, or one
    inside an ``or_()`` group; with several items, the one that completed the wait) and the
    payload of its event (``None`` for a sleep)."""

    fired: SleepCondition | UserEventCondition
    payload: Any


def _duration(value: str | float | timedelta | None, what: str) -> timedelta | None:
    """A call's duration option; ValueError naming it when negative or not a duration."""
    try:
        return parse_duration(value, what)
    except DurationError as exc:
        raise ValueError(str(exc)) from None


@dataclass(frozen=True, slots=True, init=False)
class Eviction:
    """When a worker evicts a blocked durable task (docs/durable.md, "Slots, eviction and
    restore"): it frees the task's durable slot, and the engine queues the task again when
    what it waits for happens; the new attempt replays the log and continues.

    ``ttl``: evict a task blocked this long (a duration: ``"30s"``, seconds, a timedelta),
    and at once one whose waits are all timers further away than ``ttl``.
    ``on_capacity``: also evict, longest-blocked first, while the worker's blocked durable
    tasks are as many as its durable slots. Pass ``eviction=None`` to
    ``@app.durable_task`` to never evict (a worker that stops still evicts).
    """

    ttl_s: float
    on_capacity: bool

    def __init__(self, ttl: str | float | timedelta = "30s", on_capacity: bool = True) -> None:
        delta = parse_duration(ttl, "Eviction(ttl=...)")
        assert delta is not None
        if not isinstance(on_capacity, bool):
            raise DeclarationError(f"Eviction(on_capacity=...) takes a bool, got {on_capacity!r}")
        object.__setattr__(self, "ttl_s", delta.total_seconds())
        object.__setattr__(self, "on_capacity", on_capacity)


DEFAULT_EVICTION = Eviction()
"""The eviction policy of a durable task that does not choose one."""


STEP_CHILD_INDEX_BASE = -1_000_000_000
"""The first child index of the runs a durable task starts from inside its steps."""


class DurableTask(Task[Any, Any]):
    """A task declared with ``@app.durable_task``: an ``async def`` whose steps and sleeps
    are recorded and replayed. Run it like any task.

    ``eviction`` is its :class:`Eviction` policy (``None``: never evicted); ``timeout_ms``
    bounds the run's whole wall-clock life, evictions included (0: no bound)."""

    eviction: Eviction | None = DEFAULT_EVICTION
    timeout_ms: int = 0


class DurableLog:
    """One attempt's view of its durable log, and its requests to the engine.

    ``send`` queues a message on the worker's stream (before task events). Requests whose
    reply was lost with a broken stream are sent again on the next (:meth:`resend`):
    appends are idempotent by position and fingerprint, and a re-sent ``OPEN`` can only
    precede the body's first call.
    """

    def __init__(
        self,
        task_id: int,
        attempt: int,
        send: Callable[[pb.WorkerMessage], None],
        *,
        run_timeout_ms: int = 0,
        on_blocked: Callable[[bool], None] = lambda _: None,
        on_evicted: Callable[[], None] = lambda: None,
    ) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self._send = send
        self._run_timeout_ms = run_timeout_ms
        self._on_blocked = on_blocked
        self._on_evicted = on_evicted
        self.seen_seq = 0
        """The highest settlement sequence seen in the engine's replies."""
        self.waiting: dict[int, pb.DurableEntry] = {}
        """Pending entries the body awaits now, by position (none resolved yet)."""
        self._busy = 0  # durable work in flight: a step, an append, a gate turn
        self.blocked = False
        """The body awaits pending waits and nothing else durable is in flight."""
        self.blocked_since = 0.0
        """When it became blocked (``time.monotonic()``)."""
        self.evicting = False
        """An EVICT request is outstanding."""
        self.refused_at_seq: int | None = None
        """``seen_seq`` when the last eviction was refused (not asked again until it moves)."""
        self.refused_at = 0.0
        self.invocation = 0
        self.recorded: dict[int, pb.DurableEntry] = {}
        self.gate = ReleaseGate({})
        self._next = 1
        self._offset_ms = 0.0  # database clock minus this machine's
        self._requests: dict[int, tuple[pb.WorkerMessage, asyncio.Future[pb.DurableReply]]] = {}
        self._waiters: dict[int, asyncio.Future[pb.DurableEntry]] = {}
        self._settled: dict[int, pb.DurableEntry] = {}  # settlements seen on re-reads
        self._syncing = False
        self._sync_task: asyncio.Task[None] | None = None
        self.diverged: NonDeterminismError | None = None
        """The divergence found, kept even if the body caught it: the run fails with it."""
        self.failed: BaseException | None = None
        """What background recording raised (a child spawn refused): the attempt fails."""
        self._background: set[asyncio.Task[Any]] = set()
        self._draining: set[asyncio.Task[Any]] = set()

    # -- positions ----------------------------------------------------------------------

    def take(self, kind: EntryKind, name: str, fp: str) -> tuple[int, pb.DurableEntry | None]:
        """The next position and what it recorded; NonDeterminismError if another call."""
        position = self._next
        self._next += 1
        recorded = self.recorded.get(position)
        if recorded is not None:
            try:
                check_call(
                    position,
                    Operation(recorded.kind, recorded.name, recorded.fingerprint),
                    Operation(str(kind), name, fp),
                )
            except NonDeterminismError as exc:
                self.diverged = exc
                raise
        return position, recorded

    def check_appended(self, entry: pb.DurableEntry, kind: EntryKind, name: str, fp: str) -> None:
        """An append answered with an entry recorded before (a re-send): it must be ours."""
        if entry.inserted:
            return
        try:
            check_call(
                entry.position,
                Operation(entry.kind, entry.name, entry.fingerprint),
                Operation(str(kind), name, fp),
            )
        except NonDeterminismError as exc:
            self.diverged = exc
            raise

    # -- blocked or not -----------------------------------------------------------------

    def _recheck(self) -> None:
        blocked = bool(self.waiting) and self._busy == 0
        if blocked != self.blocked:
            self.blocked = blocked
            if blocked:
                self.blocked_since = time.monotonic()
            self._on_blocked(blocked)

    @contextmanager
    def busy(self) -> Iterator[None]:
        """Marks durable work in flight (the body is not blocked meanwhile)."""
        self._busy += 1
        self._recheck()
        try:
            yield
        finally:
            self._busy -= 1
            self._recheck()

    def only_timers_beyond(self, seconds: float) -> bool:
        """Every wait the body awaits is a sleep ending more than ``seconds`` from now."""
        if not self.waiting:
            return False
        now = self.db_now_ms()
        return all(
            e.name == _SLEEP and e.wake_at_ms and e.wake_at_ms - now > seconds * 1000
            for e in self.waiting.values()
        )

    def evict(self) -> asyncio.Future[pb.DurableReply]:
        """Asks the engine to evict this attempt, *now*: the request carries what was seen
        at this instant (a later settlement makes the engine refuse it). The reply's
        ``evicted`` says whether it was accepted; then ``on_evicted`` has already run."""
        self.evicting = True
        fut = self._send_request(pb.EVICT, (), last_seen_seq=self.seen_seq)

        def done(f: asyncio.Future[pb.DurableReply]) -> None:
            self.evicting = False
            if f.cancelled() or f.exception() is not None or not f.result().evicted:
                self.refused_at_seq = self.seen_seq
                self.refused_at = time.monotonic()

        fut.add_done_callback(done)
        return fut

    # -- requests -----------------------------------------------------------------------

    def db_now_ms(self) -> float:
        """Now on the database clock (as of the last reply), epoch milliseconds."""
        return time.time() * 1000 + self._offset_ms

    async def request(
        self, op: pb.DurableOp.ValueType, calls: Sequence[pb.DurableCall] = (), **fields: Any
    ) -> pb.DurableReply:
        """Sends a request and waits for its reply; StokerError when the engine refused it."""
        reply = await self._send_request(op, calls, **fields)
        if reply.error:
            raise StokerError(f"durable task log: {reply.error}")
        return reply

    def _send_request(
        self, op: pb.DurableOp.ValueType, calls: Sequence[pb.DurableCall], **fields: Any
    ) -> asyncio.Future[pb.DurableReply]:
        """Queues a request on the stream at once; the future gets its reply."""
        req = pb.DurableRequest(
            task_id=self.task_id,
            attempt=self.attempt,
            request_id=next(_request_ids),
            op=op,
            invocation=self.invocation,
            calls=calls,
            **fields,
        )
        msg = pb.WorkerMessage(durable=req)
        fut: asyncio.Future[pb.DurableReply] = asyncio.get_running_loop().create_future()
        self._requests[req.request_id] = (msg, fut)
        fut.add_done_callback(lambda _: self._requests.pop(req.request_id, None))
        self._send(msg)
        return fut

    def resend(self, still_queued: Callable[[pb.WorkerMessage], bool]) -> None:
        """After a reconnect: sends again the requests written on the broken stream."""
        for msg, fut in list(self._requests.values()):
            if not fut.done() and not still_queued(msg):
                self._send(msg)

    def on_reply(self, reply: pb.DurableReply) -> None:
        """A reply from the engine (to this attempt's request)."""
        if reply.now_ms:
            self._offset_ms = reply.now_ms - time.time() * 1000
        if reply.evicted:
            self._on_evicted()  # before anything else runs: the attempt is over here
        pending = self._requests.get(reply.request_id)
        if pending is not None and not pending[1].done():
            pending[1].set_result(reply)
        if not reply.error:
            self._settle(reply.entries)

    def on_wake(self) -> None:
        """The engine settled something in this log: re-read it (once at a time)."""
        if not self._syncing:
            self._sync_task = asyncio.get_running_loop().create_task(self.sync())

    async def sync(self) -> None:
        """Re-reads the visible log; settled entries resolve their waits."""
        if self._syncing:
            return
        self._syncing = True
        try:
            reply = await self.request(pb.SYNC)
            while reply.more and reply.entries:  # the next pages of a long log
                reply = await self.request(pb.SYNC, after_position=reply.entries[-1].position)
        except StokerError:
            pass  # the attempt ended; its cancellation follows
        finally:
            self._syncing = False

    def _settle(self, entries: Any) -> None:
        for entry in entries:
            if entry.satisfied_seq > self.seen_seq:
                self.seen_seq = entry.satisfied_seq
            if entry.status == EntryStatus.PENDING:
                continue
            self._settled[entry.position] = entry
            waiter = self._waiters.get(entry.position)
            if waiter is not None and not waiter.done():
                waiter.set_result(entry)
            # Resolved: no longer blocked on it, even before the body resumes (an
            # eviction asked from now on carries this settlement's sequence).
            if self.waiting.pop(entry.position, None) is not None:
                self._recheck()

    async def open(self) -> None:
        """Starts this attempt's invocation and loads the log to replay."""
        with self.busy():
            reply = await self.request(pb.OPEN, run_timeout_ms=self._run_timeout_ms)
            self.invocation = reply.invocation
            entries = list(reply.entries)
            # A long log comes in pages (the stream's messages have a size limit).
            while reply.more and reply.entries:
                reply = await self.request(pb.SYNC, after_position=entries[-1].position)
                entries.extend(reply.entries)
        # A settlement delivered while the pages came in is newer than its page's copy.
        self.recorded = {e.position: self._settled.get(e.position, e) for e in entries}
        self.gate = ReleaseGate(
            {e.satisfied_seq: e.position for e in self.recorded.values() if e.satisfied_seq}
        )

    async def append(self, call: pb.DurableCall) -> pb.DurableEntry:
        """Records one call and returns its entry as the log holds it."""
        with self.busy():
            reply = await self.request(pb.APPEND, [call])
        return reply.entries[0]

    def append_many(self, calls: Sequence[pb.DurableCall]) -> Awaitable[list[pb.DurableEntry]]:
        """Records calls in one request, sent now (so it keeps its place in the stream
        before later calls); their entries, in position order."""
        return self._appended(self._send_request(pb.APPEND, calls))

    @staticmethod
    async def _appended(fut: asyncio.Future[pb.DurableReply]) -> list[pb.DurableEntry]:
        reply = await fut
        if reply.error:
            raise StokerError(f"durable task log: {reply.error}")
        return sorted(reply.entries, key=lambda e: e.position)

    def background(self, work: Coroutine[Any, Any, T], *, drain: bool = True) -> asyncio.Task[T]:
        """Runs ``work`` on its own (a sync ``run_no_wait`` cannot await its recording);
        what it raises fails the attempt once the body returns (:attr:`failed`).
        ``drain``: the attempt waits for it before it reports its outcome (:meth:`drain`)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        if drain:
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)

        def done(t: asyncio.Task[T]) -> None:
            self._background.discard(t)
            if not t.cancelled() and (exc := t.exception()) is not None and self.failed is None:
                self.failed = exc

        task.add_done_callback(done)
        return task

    def release_later(self, seq: int) -> None:
        """Releases a recorded completion nobody awaits (a child not awaited through the
        log) in its turn, so later ones are not held back by it."""

        async def release() -> None:
            try:
                await self.gate.release(seq)
            except NonDeterminismError as exc:
                self.diverged = self.diverged or exc

        self.background(release(), drain=False)

    async def drain(self) -> None:
        """Waits for the recordings still in flight (the body returned before them)."""
        while self._draining:
            await asyncio.gather(*list(self._draining), return_exceptions=True)

    # -- outcomes -----------------------------------------------------------------------

    async def outcome(
        self, entry: pb.DurableEntry, *, deadline_settles: bool = True
    ) -> pb.DurableEntry:
        """Waits until ``entry`` is settled (a sleep past its deadline counts as settled,
        unless ``deadline_settles`` is false: a wait with conditions, whose ``wake_at`` is
        only its next sleep condition) and its turn in the release gate came; returns the
        settled entry."""
        if entry.status == EntryStatus.PENDING:
            if deadline_settles and entry.wake_at_ms and entry.wake_at_ms <= self.db_now_ms():
                return entry
            entry = await self._wait(entry)
        if entry.satisfied_seq:
            with self.busy():
                await self.gate.release(entry.satisfied_seq)
        return entry

    async def _wait(self, entry: pb.DurableEntry) -> pb.DurableEntry:
        settled = self._settled.get(entry.position)
        if settled is not None:  # a re-read saw it settled before the call got here
            return settled
        loop = asyncio.get_running_loop()
        waiter = self._waiters.setdefault(entry.position, loop.create_future())
        self.waiting[entry.position] = entry
        self._recheck()
        try:
            # An event wait is resolved by the engine's hint; re-reading on our own is only
            # the backstop for a lost one.
            timeout = LATE_S if entry.wake_at_ms else RESYNC_S
            if entry.wake_at_ms:
                timeout += max(0.0, (entry.wake_at_ms - self.db_now_ms()) / 1000)
            while True:
                try:
                    return await asyncio.wait_for(asyncio.shield(waiter), timeout)
                except TimeoutError:
                    await self.sync()  # a lost hint: look for ourselves
                    timeout = RESYNC_S
        finally:
            self._waiters.pop(entry.position, None)
            if self.waiting.pop(entry.position, None) is not None:
                self._recheck()


class DurableContext(Context):
    """The context of a durable task: a :class:`~stoker.Context` plus the durable calls.

    Each call takes the next position in the task's log when it is made; on a replay
    (after a crash or a retry) recorded calls return their recorded outcome at once, and a
    call that differs from the record raises :class:`~stoker.errors.NonDeterminismError`,
    which fails the run without a retry.
    """

    def __init__(self, *, log: DurableLog, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.journal = log
        """The attempt's durable log (positions, replay, the engine's replies)."""
        # Runs started from inside a step are ordinary children of the attempt (not
        # recorded: the step is), indexed apart from the recorded children, whose index
        # is their position (1, 2, ...).
        self.state.index_children_from(STEP_CHILD_INDEX_BASE)

    def sleep(self, duration: float | timedelta) -> Awaitable[None]:
        """Sleeps ``duration`` (seconds or a timedelta). The deadline is computed once, by
        the engine from the database clock, and never moves across crashes and retries."""
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError(f"ctx.sleep needs a duration >= 0, got {duration!r}")
        return self._sleep(pb.DurableCall(delay_ms=round(seconds * 1000)))

    def sleep_until(self, when: datetime) -> Awaitable[None]:
        """Sleeps until ``when`` (a timezone-aware datetime); at once if it has passed."""
        if not isinstance(when, datetime) or when.tzinfo is None:
            raise ValueError(f"ctx.sleep_until needs a timezone-aware datetime, got {when!r}")
        return self._sleep(pb.DurableCall(wake_at_ms=max(1, round(when.timestamp() * 1000))))

    def _sleep(self, call: pb.DurableCall) -> Awaitable[None]:
        position, recorded = self.journal.take(EntryKind.WAIT, _SLEEP, _SLEEP_FP)
        call.position, call.kind, call.name = position, str(EntryKind.WAIT), _SLEEP
        call.fingerprint, call.status = _SLEEP_FP, str(EntryStatus.PENDING)
        return self._slept(call, recorded)

    async def _slept(self, call: pb.DurableCall, recorded: pb.DurableEntry | None) -> None:
        entry = recorded
        if entry is None:
            entry = await self.journal.append(call)
            self.journal.check_appended(entry, EntryKind.WAIT, _SLEEP, _SLEEP_FP)
        await self.journal.outcome(entry)

    # -- memoized steps -----------------------------------------------------------------

    def step(
        self,
        fn: Callable[..., T | Awaitable[T]],
        *args: Any,
        name: str | None = None,
        retries: int = 0,
        backoff: float = 1.0,
        timeout: float | timedelta | None = None,
    ) -> Awaitable[T]:
        """Runs ``fn(*args)`` once and records its result, which must be JSON; on a replay
        the recorded result is returned without calling ``fn``. Either way the caller gets
        the result as read back from JSON (a tuple comes back a list), so the first run and
        a replay see the same values. ``fn`` may be sync (run in a thread) or async;
        ``name`` (default: the function's name) identifies the step in the log.

        ``retries``: how many more times ``fn`` is tried when it raises, waiting
        ``backoff`` seconds before the first retry and twice as long before each next one
        (at most a minute); ``timeout``: how long one try may take. When the last try
        fails (or its result is not JSON), the failure is recorded and
        :class:`~stoker.StepError` raised — now and on every replay, without running
        ``fn`` again."""
        options = StepOptions.checked(retries, backoff, timeout, "ctx.step")
        step_name = name or getattr(fn, "__name__", None) or repr(fn)
        return self.call_step(fn, args, {}, step_name, options)

    def call_step(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str,
        options: StepOptions,
    ) -> Awaitable[Any]:
        """A step call: takes its position now; the awaitable runs or replays it."""
        fp = fingerprint(EntryKind.STEP, name)
        position, recorded = self.journal.take(EntryKind.STEP, name, fp)
        return self._step(position, recorded, fn, args, kwargs, name, fp, options)

    async def _step(
        self,
        position: int,
        recorded: pb.DurableEntry | None,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        name: str,
        fp: str,
        options: StepOptions,
    ) -> Any:
        cause: BaseException | None = None
        if recorded is None:
            call = pb.DurableCall(position=position, kind=str(EntryKind.STEP), name=name)
            call.fingerprint = fp
            try:
                with self.journal.busy():  # running, not blocked: no eviction, the clock runs
                    value = await _run_step(fn, args, kwargs, name, options)
                try:
                    raw = json.dumps(value, separators=(",", ":"), allow_nan=False)
                except (TypeError, ValueError) as exc:
                    raise OutputSerializationError(
                        f"step {name!r} returned a {type(value).__name__}, which is not JSON: {exc}"
                    ) from None
                if (problem := json_problem(raw.encode(), serialized=True)) is not None:
                    raise OutputSerializationError(
                        f"step {name!r} returned a {type(value).__name__} that cannot be "
                        f"stored: {problem}"
                    )
                call.status, call.result = str(EntryStatus.OK), raw.encode()
            except Exception as exc:
                cause = exc
                call.status, call.error = str(EntryStatus.ERROR), _error_doc(exc)
            recorded = await self.journal.append(call)
            self.journal.check_appended(recorded, EntryKind.STEP, name, fp)
        entry = await self.journal.outcome(recorded)
        if entry.status == EntryStatus.ERROR:
            doc = json.loads(entry.error) if entry.error else {}
            raise StepError(
                name,
                position,
                str(doc.get("type") or "Exception"),
                str(doc.get("message") or ""),
                str(doc.get("traceback") or ""),
            ) from cause
        return json.loads(entry.result) if entry.result else None

    # -- determinism helpers ------------------------------------------------------------

    def now(self) -> Awaitable[datetime]:
        """The current time (UTC), recorded: a replay gets the same value back."""
        aw = self.call_step(_now, (), {}, "stoker.now", StepOptions())
        return _mapped(aw, datetime.fromisoformat)

    def uuid(self) -> Awaitable[UUID]:
        """A random UUID (version 4), recorded: a replay gets the same value back."""
        aw = self.call_step(_uuid, (), {}, "stoker.uuid", StepOptions())
        return _mapped(aw, UUID)

    def random(self) -> Awaitable[float]:
        """A random float in [0, 1), recorded: a replay gets the same value back."""
        aw = self.call_step(random.random, (), {}, "stoker.random", StepOptions())
        return _mapped(aw, float)

    # -- children -----------------------------------------------------------------------

    def spawn(
        self,
        children: Sequence[ChildSpec],
        decoder: OutputDecoder[Any] | None,
        *,
        awaited: bool,
        detached: bool = False,
    ) -> tuple[list[RunRef[Any]], Awaitable[list[pb.DurableEntry]]]:
        """Child runs, recorded: each takes the next position now, and the new ones are
        sent to the engine now. Returns their refs at once (a new child's run id is chosen
        here, so the refs exist before the engine answers) and an awaitable of their
        entries once recorded. A recorded child is found again, never spawned twice.
        ``awaited``: the caller awaits the children's outcomes through the log
        (``aio_run``); otherwise their recorded completions are released in the
        background, so they never hold up the release gate. ``detached``: nobody awaits
        the recording (a sync ``run_no_wait``): it completes in the background, before the
        attempt reports, and a refusal fails the attempt."""
        connection = _connection(decoder)
        refs: list[RunRef[Any]] = []
        known: list[pb.DurableEntry] = []
        calls: list[pb.DurableCall] = []
        checks: list[tuple[str, str]] = []
        for child in children:
            target = child.task_name or child.workflow_name
            key = str(child.options.get("child_key") or "")
            fp = fingerprint(EntryKind.CHILD, target, child_key=key or None)
            position, recorded = self.journal.take(EntryKind.CHILD, target, fp)
            if recorded is not None:
                known.append(recorded)
                refs.append(RunRef(connection, recorded.child_run_id, decoder))
                if not awaited and recorded.satisfied_seq:
                    self.journal.release_later(recorded.satisfied_seq)
                continue
            metadata = {
                **self.additional_metadata,
                **(child.options.get("additional_metadata") or {}),
            }
            run_id = str(uuid4())
            call = pb.DurableCall(
                position=position,
                kind=str(EntryKind.CHILD),
                name=target,
                fingerprint=fp,
                status=str(EntryStatus.PENDING),
                request=json.dumps(
                    {"task" if child.task_name else "workflow": target, "child_key": key or None}
                ).encode(),
                child=pb.DurableChild(
                    task_name=child.task_name,
                    workflow_name=child.workflow_name,
                    input=child.input,
                    additional_metadata=encode_json(metadata, f"child {target!r}: metadata"),
                    priority=int(child.options.get("priority") or 0),
                    child_key=key,
                    run_id=run_id,
                ),
            )
            calls.append(call)
            checks.append((target, fp))
            refs.append(RunRef(connection, run_id, decoder))
        done = self._record_children(refs, known, calls, checks, awaited)
        if detached:
            return refs, self.journal.background(done)
        return refs, done

    def _record_children(
        self,
        refs: list[RunRef[Any]],
        known: list[pb.DurableEntry],
        calls: list[pb.DurableCall],
        checks: list[tuple[str, str]],
        awaited: bool,
    ) -> Coroutine[Any, Any, list[pb.DurableEntry]]:
        # Sent now, in call order, whenever the recording is awaited.
        sent = self.journal.append_many(calls) if calls else None

        async def record() -> list[pb.DurableEntry]:
            entries = {e.position: e for e in known}
            if sent is not None:
                got = await sent
                for call, (target, fp), entry in zip(calls, checks, got, strict=True):
                    self.journal.check_appended(entry, EntryKind.CHILD, target, fp)
                    entries[call.position] = entry
            ordered = [entries[p] for p in sorted(entries)]
            for ref, entry in zip(refs, ordered, strict=True):
                ref.run_id = entry.child_run_id or ref.run_id  # a keyed child keeps its id
            if not awaited:
                for call in calls:
                    e = entries[call.position]
                    if e.satisfied_seq and not e.inserted:
                        self.journal.release_later(e.satisfied_seq)
            return ordered

        return record()

    async def run_child(self, child: ChildSpec, decoder: OutputDecoder[Any] | None) -> Any:
        """``await child.aio_run(...)`` in a durable task: spawns (or finds) the child and
        returns its output, or raises its failure, as recorded in the log."""
        _, done = self.spawn([child], decoder, awaited=True)
        (entry,) = await done
        entry = await self.journal.outcome(entry)
        if entry.status == EntryStatus.OK:
            raw = entry.result or b"null"
            if decoder is not None:
                return decoder.decode_output(raw)
            return json.loads(raw)
        doc = json.loads(entry.error) if entry.error else {}
        status = str(doc.get("status") or "FAILED")
        cls = RunCancelledError if status == "CANCELLED" else TaskRunError
        raise cls(
            entry.child_run_id,
            str(doc.get("type") or status),
            str(doc.get("message") or ""),
            str(doc.get("traceback") or ""),
            status=status,
        )

    # -- waits --------------------------------------------------------------------------

    @overload
    def wait_for_event(
        self,
        key: str,
        expression: str | None = None,
        *,
        scope: str | None = None,
        lookback: str | float | timedelta | None = None,
        timeout: str | float | timedelta | None = None,
        model: None = None,
    ) -> Awaitable[Any]: ...

    @overload
    def wait_for_event(
        self,
        key: str,
        expression: str | None = None,
        *,
        scope: str | None = None,
        lookback: str | float | timedelta | None = None,
        timeout: str | float | timedelta | None = None,
        model: type[M],
    ) -> Awaitable[M]: ...

    def wait_for_event(
        self,
        key: str,
        expression: str | None = None,
        *,
        scope: str | None = None,
        lookback: str | float | timedelta | None = None,
        timeout: str | float | timedelta | None = None,
        model: type[BaseModel] | None = None,
    ) -> Awaitable[Any]:
        """Waits for an event pushed with ``app.events.push(key, ...)`` and returns its
        payload (validated into ``model``, a pydantic model, when given).

        ``expression`` (CEL) must be true for the event; it sees ``input`` (the event's
        payload), ``additional_metadata`` (the event's), ``run_input`` and ``run_metadata``
        (this run's). ``scope``: only events pushed with that scope count. ``lookback``
        (at most 24 h): an event pushed up to that long before the wait counts too — the
        earliest one this task has not used. ``timeout``: raise
        :class:`~stoker.errors.WaitTimeoutError` when nothing came by then. One event
        satisfies at most one wait of a task (its lowest position), and the waits of every
        task waiting for it. The wait survives crashes and replays like a sleep: on a
        replay the recorded event's payload comes back at once.
        """
        if not isinstance(key, str) or not key or len(key) > 500:
            raise ValueError(
                f"ctx.wait_for_event needs an event key of 1-500 characters, got {key!r}"
            )
        what = f"ctx.wait_for_event({key!r})"
        if expression is not None:
            _check_cel(expression, what)
        if scope is not None and (not isinstance(scope, str) or not scope):
            raise ValueError(f"{what}: scope must be a non-empty string, got {scope!r}")
        back = _duration(lookback, f"{what}: lookback")
        if back is not None and back > timedelta(milliseconds=MAX_LOOKBACK_MS):
            raise ValueError(f"{what}: lookback {back} is longer than 24 h")
        limit = _duration(timeout, f"{what}: timeout")
        if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ValueError(f"{what}: model must be a pydantic model class, got {model!r}")
        event = WaitLeaf(
            "0.0" if limit is not None else "0",
            "event",
            key=key,
            expression=expression or "",
            scope=scope or "",
            lookback_ms=_ms(back) if back is not None else 0,
        )
        items: list[WaitLeaf | list[WaitLeaf]] = [event]
        if limit is not None:
            items = [[event, WaitLeaf("0.1", "sleep", ms=_ms(limit))]]
        fp = fingerprint(EntryKind.WAIT, _WAIT_FOR_EVENT, event_keys=[key], timer=limit is not None)
        position, recorded = self.journal.take(EntryKind.WAIT, _WAIT_FOR_EVENT, fp)
        call = _wait_call(position, _WAIT_FOR_EVENT, fp, wait_request(items))
        return self._waited_event(call, recorded, what, limit, model)

    async def _waited_event(
        self,
        call: pb.DurableCall,
        recorded: pb.DurableEntry | None,
        what: str,
        limit: timedelta | None,
        model: type[BaseModel] | None,
    ) -> Any:
        fired, payload = await self._waited(call, recorded)
        if fired != "0" and fired != "0.0":
            raise WaitTimeoutError(
                f"{what} timed out after {limit}: no matching event came (position {call.position})"
            )
        return payload if model is None else model.model_validate(payload)

    def wait_for(
        self, *conditions: SleepCondition | UserEventCondition | OrGroup
    ) -> Awaitable[WaitResult]:
        """Waits until every item holds — a :class:`~stoker.SleepCondition` (that long
        after the call), a :class:`~stoker.UserEventCondition` (an event pushed after the
        call whose expression holds), or an ``or_()`` group of them, which holds when any
        of its conditions does — and returns which condition fired and its event's payload
        (:class:`WaitResult`). The wait is recorded like ``wait_for_event``: it survives
        crashes and replays, and a replay gets the recorded result back."""
        if not conditions:
            raise ValueError("ctx.wait_for needs at least one condition")
        items: list[WaitLeaf | list[WaitLeaf]] = []
        objects: dict[str, SleepCondition | UserEventCondition] = {}
        for i, item in enumerate(conditions):
            if isinstance(item, OrGroup):
                group: list[WaitLeaf] = []
                for j, sub in enumerate(item.conditions):
                    if not isinstance(sub, SleepCondition | UserEventCondition):
                        raise ValueError(
                            f"ctx.wait_for takes sleep and event conditions, got {sub!r} in or_()"
                        )
                    group.append(_leaf(f"{i}.{j}", sub))
                    objects[f"{i}.{j}"] = sub
                items.append(group)
            elif isinstance(item, SleepCondition | UserEventCondition):
                items.append(_leaf(str(i), item))
                objects[str(i)] = item
            else:
                raise ValueError(
                    "ctx.wait_for takes SleepCondition, UserEventCondition or or_(...), got "
                    f"{item!r}"
                )
        keys = [c.event_key for c in objects.values() if isinstance(c, UserEventCondition)]
        timer = any(isinstance(c, SleepCondition) for c in objects.values())
        fp = fingerprint(EntryKind.WAIT, _WAIT_FOR, event_keys=keys, timer=timer)
        position, recorded = self.journal.take(EntryKind.WAIT, _WAIT_FOR, fp)
        call = _wait_call(position, _WAIT_FOR, fp, wait_request(items))
        return self._waited_for(call, recorded, objects)

    async def _waited_for(
        self,
        call: pb.DurableCall,
        recorded: pb.DurableEntry | None,
        objects: dict[str, SleepCondition | UserEventCondition],
    ) -> WaitResult:
        fired, payload = await self._waited(call, recorded)
        condition = objects.get(fired)
        if condition is None:  # a recorded wait whose conditions changed shape
            raise NonDeterminismError(
                f"replay diverged at position {call.position}: the recorded wait fired "
                f"condition {fired!r}, which the code's ctx.wait_for does not have",
                position=call.position,
            )
        return WaitResult(condition, payload)

    async def _waited(
        self, call: pb.DurableCall, recorded: pb.DurableEntry | None
    ) -> tuple[str, Any]:
        """Records a wait (unless replayed) and waits for its outcome: the path of the
        condition that fired and its event's payload."""
        entry = recorded
        if entry is None:
            entry = await self.journal.append(call)
            self.journal.check_appended(entry, EntryKind.WAIT, call.name, call.fingerprint)
        entry = await self.journal.outcome(entry, deadline_settles=False)
        done = json.loads(entry.result) if entry.result else {}
        return str(done.get("fired", "")), done.get("payload")


def _ms(delta: timedelta) -> int:
    return round(delta.total_seconds() * 1000)


def _check_cel(expression: str, what: str) -> None:
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError(f"{what}: the CEL expression must be a non-empty string")
    try:
        compile_expression(expression)
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"{what}: invalid CEL expression {expression!r}: {exc}") from None


def _leaf(path: str, condition: SleepCondition | UserEventCondition) -> WaitLeaf:
    if isinstance(condition, SleepCondition):
        return WaitLeaf(path, "sleep", ms=_ms(condition.duration))
    return WaitLeaf(
        path,
        "event",
        key=condition.event_key,
        expression=condition.expression,
        scope=condition.scope or "",
        lookback_ms=_ms(condition.lookback) if condition.lookback is not None else 0,
    )


def _wait_call(position: int, name: str, fp: str, request: dict[str, object]) -> pb.DurableCall:
    return pb.DurableCall(
        position=position,
        kind=str(EntryKind.WAIT),
        name=name,
        fingerprint=fp,
        status=str(EntryStatus.PENDING),
        request=json.dumps(request, separators=(",", ":")).encode(),
    )


# -- steps ------------------------------------------------------------------------------

MAX_BACKOFF_S = 60.0
"""The longest wait between two tries of a step."""

_in_step: contextvars.ContextVar[bool] = contextvars.ContextVar("stoker_in_step", default=False)
"""True while a step's function runs: a step called from inside a step is a plain call."""


@dataclass(frozen=True, slots=True)
class StepOptions:
    """A step's tries: ``retries`` more after the first, ``backoff`` seconds before the
    first retry (doubling, at most :data:`MAX_BACKOFF_S`), ``timeout`` seconds per try."""

    retries: int = 0
    backoff: float = 1.0
    timeout: float | None = None

    @classmethod
    def checked(cls, retries: Any, backoff: Any, timeout: Any, what: str) -> StepOptions:
        """The options, or ValueError naming what is wrong."""
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"{what}: retries must be an int >= 0, got {retries!r}")
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) or backoff < 0:
            raise ValueError(f"{what}: backoff must be seconds >= 0, got {backoff!r}")
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        if seconds is not None and (
            isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0
        ):
            raise ValueError(f"{what}: timeout must be seconds > 0 or None, got {timeout!r}")
        return cls(retries, float(backoff), float(seconds) if seconds is not None else None)

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        return float(min(MAX_BACKOFF_S, self.backoff * 2 ** (retry - 1)))


class _StepTimedOut(Exception):
    pass


async def _run_step(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    name: str,
    options: StepOptions,
) -> Any:
    """Calls ``fn`` with its retries and timeout; the last try's exception when all fail
    (a timeout as :class:`StepTimeoutError`)."""
    tries = options.retries + 1
    for n in range(1, tries + 1):
        try:
            return await _try_step(fn, args, kwargs, options.timeout)
        except _StepTimedOut:
            exc: Exception = StepTimeoutError(
                f"step {name!r} took longer than its timeout of {options.timeout or 0:g}s"
            )
        except Exception as caught:
            exc = caught
        if n == tries:
            raise exc
        log.info("step %r failed (try %d of %d): %s", name, n, tries, exc)
        await asyncio.sleep(options.delay(n))
    raise AssertionError("unreachable")


async def _try_step(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float | None
) -> Any:
    """One try, in a copy of the context marked as inside a step."""
    cv = contextvars.copy_context()
    cv.run(_in_step.set, True)
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Any]
    if inspect.iscoroutinefunction(fn):
        fut = loop.create_task(fn(*args, **kwargs), context=cv)
    else:
        fut = loop.run_in_executor(None, functools.partial(cv.run, fn, *args, **kwargs))
    done, _ = await asyncio.wait({fut}, timeout=timeout)
    if not done:
        fut.cancel()  # an async step stops; a thread cannot be stopped and is left to finish
        raise _StepTimedOut
    value = fut.result()
    if inspect.isawaitable(value):
        value = await value
    return value


def _error_doc(exc: BaseException) -> bytes:
    doc = {
        "type": type(exc).__name__,
        "message": storable_text(str(exc)),
        "traceback": storable_text("".join(traceback.format_exception(exc))),
    }
    return json.dumps(doc).encode()


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _uuid() -> str:
    return str(uuid4())


async def _mapped(aw: Awaitable[Any], f: Callable[[Any], T]) -> T:
    return f(await aw)


def _connection(decoder: Any) -> Any:
    app = getattr(decoder, "app", None)
    return app.connection if app is not None else None


class Step(Generic[T]):
    """A function declared with ``@app.step``: inside a durable task, calling it runs it
    as a memoized step (await the call); anywhere else it is a plain call."""

    def __init__(self, fn: Callable[..., Any], name: str, options: StepOptions) -> None:
        self.fn = fn
        self.name = name
        self.options = options
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<Step {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ctx = current_context.get()
        if isinstance(ctx, DurableContext) and not _in_step.get():
            return ctx.call_step(self.fn, args, kwargs, self.name, self.options)
        return self.fn(*args, **kwargs)


def recording_context(ctx: Context | None) -> DurableContext | None:
    """The durable context whose log records calls made now: the running durable task's,
    except inside one of its steps (there, calls are plain)."""
    if isinstance(ctx, DurableContext) and not _in_step.get():
        return ctx
    return None


def refuse_blocking(what: str) -> None:
    """A blocking wait inside a durable task would stall the loop its log runs on."""
    if recording_context(current_context.get()) is not None:
        raise StokerError(
            f"{what} blocks, which a durable task cannot do (its log is recorded on the "
            f"same event loop): use `await ....aio_run(...)` instead"
        )
