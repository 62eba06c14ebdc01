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
(``DurableWakes``) and the re-read log (``SYNC``) shows it settled; a wait that looks late on the database
clock re-reads on its own, so a lost hint costs latency, not the wake-up.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

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
from stoker._proto import engine_pb2 as pb
from stoker._sdk.conditions import OrGroup, SleepCondition, UserEventCondition
from stoker._sdk.context import Context
from stoker._sdk.task import Task
from stoker.config import parse_duration
from stoker.errors import (
    DurationError,
    NonDeterminismError,
    OutputSerializationError,
    StokerError,
    WaitTimeoutError,
)

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


class DurableTask(Task[Any, Any]):
    """A task declared with ``@app.durable_task``: an ``async def`` whose steps and sleeps
    are recorded and replayed. Run it like any task."""


class DurableLog:
    """One attempt's view of its durable log, and its requests to the engine.

    ``send`` queues a message on the worker's stream (before task events). Requests whose
    reply was lost with a broken stream are sent again on the next (:meth:`resend`):
    appends are idempotent by position and fingerprint, and a re-sent ``OPEN`` can only
    precede the body's first call.
    """

    def __init__(
        self, task_id: int, attempt: int, send: Callable[[pb.WorkerMessage], None]
    ) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self._send = send
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

    # -- requests -----------------------------------------------------------------------

    def db_now_ms(self) -> float:
        """Now on the database clock (as of the last reply), epoch milliseconds."""
        return time.time() * 1000 + self._offset_ms

    async def request(
        self, op: pb.DurableOp.ValueType, calls: Sequence[pb.DurableCall] = ()
    ) -> pb.DurableReply:
        """Sends a request and waits for its reply; StokerError when the engine refused it."""
        req = pb.DurableRequest(
            task_id=self.task_id,
            attempt=self.attempt,
            request_id=next(_request_ids),
            op=op,
            invocation=self.invocation,
            calls=calls,
        )
        msg = pb.WorkerMessage(durable=req)
        fut: asyncio.Future[pb.DurableReply] = asyncio.get_running_loop().create_future()
        self._requests[req.request_id] = (msg, fut)
        self._send(msg)
        try:
            reply = await fut
        finally:
            self._requests.pop(req.request_id, None)
        if reply.error:
            raise StokerError(f"durable task log: {reply.error}")
        return reply

    def resend(self, still_queued: Callable[[pb.WorkerMessage], bool]) -> None:
        """After a reconnect: sends again the requests written on the broken stream."""
        for msg, fut in list(self._requests.values()):
            if not fut.done() and not still_queued(msg):
                self._send(msg)

    def on_reply(self, reply: pb.DurableReply) -> None:
        """A reply from the engine (to this attempt's request)."""
        if reply.now_ms:
            self._offset_ms = reply.now_ms - time.time() * 1000
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
            await self.request(pb.SYNC)
        except StokerError:
            pass  # the attempt ended; its cancellation follows
        finally:
            self._syncing = False

    def _settle(self, entries: Any) -> None:
        for entry in entries:
            if entry.status == EntryStatus.PENDING:
                continue
            self._settled[entry.position] = entry
            waiter = self._waiters.get(entry.position)
            if waiter is not None and not waiter.done():
                waiter.set_result(entry)

    async def open(self) -> None:
        """Starts this attempt's invocation and loads the log to replay."""
        reply = await self.request(pb.OPEN)
        self.invocation = reply.invocation
        self.recorded = {e.position: e for e in reply.entries}
        self.gate = ReleaseGate(
            {e.satisfied_seq: e.position for e in reply.entries if e.satisfied_seq}
        )

    async def append(self, call: pb.DurableCall) -> pb.DurableEntry:
        """Records one call and returns its entry as the log holds it."""
        reply = await self.request(pb.APPEND, [call])
        return reply.entries[0]

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
            await self.gate.release(entry.satisfied_seq)
        return entry

    async def _wait(self, entry: pb.DurableEntry) -> pb.DurableEntry:
        settled = self._settled.get(entry.position)
        if settled is not None:  # a re-read saw it settled before the call got here
            return settled
        loop = asyncio.get_running_loop()
        waiter = self._waiters.setdefault(entry.position, loop.create_future())
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


class DurableContext(Context):
    """The context of a durable task: a :class:`~stoker.Context` plus the durable calls.

    Each call takes the next position in the task's log when it is made; on a replay
    (after a crash or a retry) recorded calls return their recorded outcome at once, and a
    call that differs from the record raises :class:`~stoker.errors.NonDeterminismError`,
    which fails the run without a retry.
    """

    def __init__(self, *, log: DurableLog, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log = log
        """The attempt's durable log (positions, replay, the engine's replies)."""

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
        position, recorded = self.log.take(EntryKind.WAIT, _SLEEP, _SLEEP_FP)
        call.position, call.kind, call.name = position, str(EntryKind.WAIT), _SLEEP
        call.fingerprint, call.status = _SLEEP_FP, str(EntryStatus.PENDING)
        return self._slept(call, recorded)

    async def _slept(self, call: pb.DurableCall, recorded: pb.DurableEntry | None) -> None:
        entry = recorded
        if entry is None:
            entry = await self.log.append(call)
            self.log.check_appended(entry, EntryKind.WAIT, _SLEEP, _SLEEP_FP)
        await self.log.outcome(entry)

    def step(
        self, fn: Callable[..., T | Awaitable[T]], *args: Any, name: str | None = None
    ) -> Awaitable[T]:
        """Runs ``fn(*args)`` once and records its result, which must be JSON; on a replay
        the recorded result is returned without calling ``fn``. Either way the caller gets
        the result as read back from JSON (a tuple comes back a list), so the first run and
        a replay see the same values. ``fn`` may be sync (run in a thread) or
        async; ``name`` (default: the function's name) identifies the step in the log."""
        step_name = name or getattr(fn, "__name__", None) or repr(fn)
        fp = fingerprint(EntryKind.STEP, step_name)
        position, recorded = self.log.take(EntryKind.STEP, step_name, fp)
        return self._step(position, recorded, fn, args, step_name, fp)

    async def _step(
        self,
        position: int,
        recorded: pb.DurableEntry | None,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        name: str,
        fp: str,
    ) -> Any:
        if recorded is None:
            if inspect.iscoroutinefunction(fn):
                value = await fn(*args)
            else:
                value = await asyncio.to_thread(fn, *args)
                if inspect.isawaitable(value):
                    value = await value
            try:
                raw = json.dumps(value, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise OutputSerializationError(
                    f"durable step {name!r} (position {position}) returned a "
                    f"{type(value).__name__}, which is not JSON: {exc}"
                ) from None
            call = pb.DurableCall(
                position=position,
                kind=str(EntryKind.STEP),
                name=name,
                fingerprint=fp,
                status=str(EntryStatus.OK),
                result=raw.encode(),
            )
            recorded = await self.log.append(call)
            self.log.check_appended(recorded, EntryKind.STEP, name, fp)
        entry = await self.log.outcome(recorded)
        return json.loads(entry.result) if entry.result else None

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
        position, recorded = self.log.take(EntryKind.WAIT, _WAIT_FOR_EVENT, fp)
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
        position, recorded = self.log.take(EntryKind.WAIT, _WAIT_FOR, fp)
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
            entry = await self.log.append(call)
            self.log.check_appended(entry, EntryKind.WAIT, call.name, call.fingerprint)
        entry = await self.log.outcome(entry, deadline_settles=False)
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
    return WaitLeaf(path, "event", key=condition.event_key, expression=condition.expression)


def _wait_call(position: int, name: str, fp: str, request: dict[str, object]) -> pb.DurableCall:
    return pb.DurableCall(
        position=position,
        kind=str(EntryKind.WAIT),
        name=name,
        fingerprint=fp,
        status=str(EntryStatus.PENDING),
        request=json.dumps(request, separators=(",", ":")).encode(),
    )
