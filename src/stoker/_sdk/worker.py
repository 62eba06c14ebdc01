"""The worker runtime: one gRPC stream to the engine, tasks run as they are assigned.

* The stream carries assignments and cancellations in, and batches of task events out. It
  reconnects with backoff when the stream breaks, moving on to the next engine address
  when ``STOKER_ADDRESS`` lists several replicas; running tasks keep running, their events
  wait in the outbox, and the new registration lists the attempts still running so the
  engine neither loses nor duplicates them (it cancels those that are no longer ours).
* Heartbeats go from a dedicated thread over a separate synchronous channel, so a task that
  blocks the event loop cannot make a healthy worker look dead; they too move on to the
  next address when one does not answer. When the engine answers that it no longer knows
  the worker (it was declared dead), the stream is re-opened.
* Async tasks run on the worker's loop; sync tasks run in a thread pool of ``slots``
  threads. The execution timeout is enforced here (and, as a backstop, by the engine):
  an async task is cancelled; a sync task cannot be interrupted, so its attempt is reported
  failed, ``ctx.is_cancelled`` turns true, and its eventual result is discarded.
* ``stop()`` (or SIGINT/SIGTERM) drains: the engine is told to assign nothing more,
  running tasks get ``grace`` seconds to finish and report (the console says what is
  awaited), then what is still running is cancelled here and handed back: the stream is
  closed cleanly and the engine requeues those attempts at once without using up a retry.
  A second stop request (Ctrl-C again) skips the wait and hands back at once. A sync task
  cannot be interrupted: ``ctx.is_cancelled`` turns true and its result is discarded; the
  blocking ``start()`` then exits without waiting for its thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import pydantic_core
from pydantic import ValidationError

from stoker._core.wire import message_limit, split_batches
from stoker._proto import engine_pb2 as pb
from stoker._sdk.context import Context, current_context
from stoker._sdk.task import Task
from stoker._sdk.transport import open_aio_channel, open_channel, to_stoker_error
from stoker.errors import (
    AuthenticationError,
    DeclarationError,
    NonRetryableError,
    RetryAfter,
    TaskTimeoutError,
)

if TYPE_CHECKING:
    from stoker._sdk.app import Stoker

log = logging.getLogger("stoker.worker")

# Results sent this recently on a stream that then broke are sent again on the next one:
# the replica may have died before storing them (it stores within milliseconds).
RESEND_WINDOW_S = 10.0


@dataclass(eq=False)
class _Attempt:
    task: Task[Any, Any]
    assignment: pb.Assignment
    ctx: Context
    future: asyncio.Task[None] | None = None
    reported: bool = False


@dataclass
class _Outbox:
    """Task events waiting to be sent; kept across reconnects."""

    events: list[pb.TaskEvent] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, event: pb.TaskEvent) -> None:
        self.events.append(event)
        self.wake.set()


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Worker:
    """Runs an app's tasks as the engine assigns them."""

    def __init__(
        self,
        app: Stoker,
        name: str,
        *,
        slots: int = 100,
        durable_slots: int = 0,
        labels: dict[str, str | int] | None = None,
        tasks: list[Task[Any, Any]] | None = None,
        grace: float = 30.0,
    ) -> None:
        if slots <= 0:
            raise DeclarationError(f"worker {name!r}: slots must be at least 1, got {slots}")
        if durable_slots < 0:
            raise DeclarationError(f"worker {name!r}: durable_slots must be >= 0")
        chosen = tasks if tasks is not None else list(app.tasks.values())
        if not chosen:
            raise DeclarationError(f"worker {name!r} has no tasks: declare some with @app.task")
        self.app = app
        self.name = name
        self.slots = slots
        self.durable_slots = durable_slots
        self.labels = _check_labels(name, labels or {})
        self.grace = grace
        self.tasks = {t.name: t for t in chosen}
        self.worker_id = str(uuid.uuid4())
        self.running: dict[int, _Attempt] = {}
        self.connected = asyncio.Event() if _has_loop() else None
        self._outbox: _Outbox | None = None
        self._stopping: asyncio.Event | None = None
        self._reconnect: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = ThreadPoolExecutor(
            max_workers=slots + durable_slots, thread_name_prefix=f"stoker-{name}"
        )
        self._heartbeat_stop = threading.Event()
        self._changed = asyncio.Event()
        self._control: list[pb.WorkerMessage] = []
        self._warned_parents = False
        # Results (COMPLETED/FAILED events) recently written to the stream, by task id.
        self._sent: OrderedDict[int, tuple[float, pb.TaskEvent]] = OrderedDict()
        self._force = threading.Event()  # a second stop request: hand back without waiting
        self._stop_deadline: float | None = None
        self._in_threads = 0  # sync task functions running in the pool right now
        self._threads_lock = threading.Lock()
        self._handed_back = 0

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Runs the worker until SIGINT/SIGTERM (blocking), then drains and returns.

        A second signal stops at once, handing back what still runs. If sync tasks that
        were handed back still hold threads, the process exits without waiting for them.
        """

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_stop)
            await self.async_start()

        asyncio.run(main())
        if self._in_threads:
            log.warning(
                "worker %s: exiting without waiting for %d sync task(s) still running in "
                "threads (they were handed back)",
                self.name,
                self._in_threads,
            )
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    def request_stop(self) -> None:
        """Asks a running worker to drain and stop; asked again, it stops without waiting
        for running tasks (they are handed back). Safe from signal handlers and threads."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stop_requested)

    def _stop_requested(self) -> None:
        assert self._stopping is not None
        if self._stopping.is_set():
            if not self._force.is_set():
                self._force.set()
                log.warning("worker %s: stopping now, handing back what still runs", self.name)
            self._changed.set()
        self._stopping.set()

    async def stop(self, *, wait: bool = True) -> None:
        """Drains and stops (``wait=False``: hands back running tasks without waiting)."""
        if self._stopping is not None:
            if not wait:
                self._force.set()
                self._changed.set()
            self._stopping.set()

    async def async_start(self) -> None:
        """Runs the worker on the current loop until :meth:`stop`; then drains."""
        self._loop = asyncio.get_running_loop()
        self._outbox = _Outbox()
        self._stopping = asyncio.Event()
        self._reconnect = asyncio.Event()
        self._changed = asyncio.Event()
        self.connected = asyncio.Event()
        await self.app.aio_register(list(self.tasks.values()))
        heartbeat = threading.Thread(
            target=self._heartbeat_loop, name="stoker-heartbeat", daemon=True
        )
        heartbeat.start()
        try:
            await self._connection_loop()
        finally:
            self._heartbeat_stop.set()
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _connection_loop(self) -> None:
        assert self._stopping is not None and self._reconnect is not None
        delay = 0.1
        settings = self.app.settings
        addresses = settings.addresses or [settings.address]
        turn = 0
        while True:
            address = addresses[turn % len(addresses)]
            channel = open_aio_channel(settings, address)
            registered = asyncio.Event()
            try:
                if await self._session(channel, registered):
                    return
            except AuthenticationError:
                raise
            except grpc.RpcError as exc:
                err = to_stoker_error(exc, address)
                if isinstance(err, AuthenticationError):
                    raise err from None
                log.warning(
                    "worker %s: stream to the engine at %s lost (%s); reconnecting",
                    self.name,
                    address,
                    err,
                )
            except ConnectionError as exc:
                log.warning("worker %s: %s (%s); reconnecting", self.name, exc, address)
            finally:
                if self.connected is not None:
                    self.connected.clear()
                await channel.close()
            if self._stopping.is_set() and (
                self._force.is_set() or not (self.running or self._outbox_busy())
            ):
                # Stopping with nothing left to report, or told to stop now while no engine
                # answers (then the dead-worker timeout requeues what it held).
                return
            # A stream that was up broke: try again at once, on the next replica if any.
            # Otherwise back off, once per round over every address.
            turn += 1
            if registered.is_set():
                delay = 0.1
            elif turn % len(addresses) == 0:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _outbox_busy(self) -> bool:
        return self._outbox is not None and bool(self._outbox.events)

    async def _session(self, channel: grpc.aio.Channel, registered: asyncio.Event) -> bool:
        """One stream's life; True when the worker finished draining."""
        from stoker._proto import engine_pb2_grpc as pb_grpc

        assert (
            self._outbox is not None and self._stopping is not None and self._reconnect is not None
        )
        stub = pb_grpc.EngineStub(channel)
        call = stub.Connect(metadata=self.app.transport.metadata)
        running = [
            pb.TaskRef(
                task_id=a.assignment.task_id,
                attempt=a.assignment.attempt,
                slot_cost=0 if a.ctx._slot_released else a.assignment.slot_cost,
                durable=a.assignment.durable,
            )
            for a in self.running.values()
        ]
        # Results sent on the last stream just before it broke may be lost with it: send
        # them again (duplicates are ignored). Claim as finished every attempt whose result
        # is about to go out, so the engine keeps them instead of requeueing them as lost.
        cutoff = time.monotonic() - RESEND_WINDOW_S
        resend = [ev for at, ev in self._sent.values() if at >= cutoff]
        self._sent.clear()
        if resend:
            self._outbox.events[:0] = resend
        running += [
            pb.TaskRef(task_id=ev.task_id, attempt=ev.attempt, finished=True)
            for ev in self._outbox.events
            if ev.kind in (pb.COMPLETED, pb.FAILED)
        ]
        await call.write(
            pb.WorkerMessage(
                register=pb.WorkerRegistration(
                    worker_id=self.worker_id,
                    name=self.name,
                    slots=self.slots,
                    task_names=sorted(self.tasks),
                    running=running,
                    labels=json.dumps(self.labels).encode(),
                    durable_slots=self.durable_slots,
                )
            )
        )
        first = await call.read()
        if first is grpc.aio.EOF or first.WhichOneof("msg") != "registered":
            raise ConnectionResetError("the engine closed the stream during registration")
        self._reconnect.clear()
        registered.set()
        assert self.connected is not None
        self.connected.set()
        log.info("worker %s connected (%s, %d slots)", self.name, self.worker_id, self.slots)
        sender = asyncio.create_task(self._send_loop(call))
        reader = asyncio.create_task(self._read_loop(call))
        stopping = asyncio.create_task(self._stopping.wait())
        reconnect = asyncio.create_task(self._reconnect.wait())
        try:
            done, _ = await asyncio.wait(
                {reader, stopping, reconnect, sender}, return_when=asyncio.FIRST_COMPLETED
            )
            if reader in done or sender in done:
                for t in (reader, sender):
                    exc = t.exception() if t.done() else None
                    if isinstance(exc, grpc.RpcError):
                        raise exc
                    if exc is not None:
                        raise ConnectionResetError(f"the stream broke: {exc!r}") from exc
                raise ConnectionResetError("the engine closed the stream")
            if reconnect in done:
                raise ConnectionResetError("the engine no longer knows this worker")
            # Draining: no new work, let running attempts finish and report.
            await call.write(pb.WorkerMessage(draining=pb.Draining()))
            if self._stop_deadline is None:
                self._stop_deadline = time.monotonic() + self.grace
                if self.running and not self._force.is_set():
                    log.warning(
                        "worker %s: stopping; waiting up to %gs for %d running task(s) to "
                        "finish: %s (stop again, e.g. Ctrl-C, to hand them back now)",
                        self.name,
                        self.grace,
                        len(self.running),
                        self._describe(self.running.values()),
                    )
            await self._drain(
                lambda: bool(self.running) and not reader.done() and not self._force.is_set(),
                self._stop_deadline - time.monotonic(),
            )
            if reader.done():
                raise ConnectionResetError("the stream broke while draining")
            self._hand_back()
            outbox = self._outbox
            await self._drain(lambda: bool(outbox.events) and not sender.done(), 5)
            if sender.done():
                raise ConnectionResetError("the stream broke while reporting")
            # A clean close: the engine requeues at once whatever this worker still held.
            # Wait for it to end the stream, proof it read the goodbye.
            await call.write(pb.WorkerMessage(goodbye=pb.Goodbye()))
            await call.done_writing()
            await asyncio.wait({reader}, timeout=5)
            if self._handed_back:
                log.warning(
                    "worker %s: handed back %d task(s) to run again elsewhere",
                    self.name,
                    self._handed_back,
                )
            return True
        finally:
            helpers: list[asyncio.Task[Any]] = [sender, reader, stopping, reconnect]
            for t in helpers:
                t.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            call.cancel()

    def _hand_back(self) -> None:
        """Cancels what still runs; the clean close that follows hands it back."""
        left = list(self.running.values())
        if not left:
            return
        log.warning(
            "worker %s: handing back %d unfinished task(s) to the engine: %s",
            self.name,
            len(left),
            self._describe(left),
        )
        for attempt in left:
            a = attempt.assignment
            self._cancel(a.task_id, a.attempt, "the worker is stopping; handed back")
        self._handed_back += len(left)

    @staticmethod
    def _describe(attempts: Any) -> str:
        items = [f"{a.task.name} (run {a.assignment.run_id})" for a in attempts]
        more = f" and {len(items) - 10} more" if len(items) > 10 else ""
        return ", ".join(items[:10]) + more

    async def _drain(self, busy: Callable[[], bool], timeout: float) -> None:
        """Waits (up to ``timeout``) until ``busy()`` turns false; re-checked on every change."""
        deadline = time.monotonic() + timeout
        while busy() and (left := deadline - time.monotonic()) > 0:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=left)

    async def _send_loop(self, call: Any) -> None:
        outbox = self._outbox
        assert outbox is not None
        while True:
            # Events left over from a stream that broke go out at once on this one.
            if not outbox.events and not self._control:
                await outbox.wake.wait()
            outbox.wake.clear()
            while self._control:
                await call.write(self._control.pop(0))
            while outbox.events:
                # As many events as fit one message of the engine's size limit.
                batch = split_batches(
                    outbox.events[:500], message_limit(self.app.max_payload_bytes), 500
                )[0]
                await call.write(pb.WorkerMessage(events=pb.TaskEvents(events=batch)))
                del outbox.events[: len(batch)]
                self._remember_sent(batch)
            self._changed.set()

    def _remember_sent(self, batch: list[pb.TaskEvent]) -> None:
        now = time.monotonic()
        sent = self._sent
        for ev in batch:
            if ev.kind in (pb.COMPLETED, pb.FAILED):
                sent[ev.task_id] = (now, ev)
                sent.move_to_end(ev.task_id)
        # Oldest first: forget what fell out of the window.
        cutoff = now - RESEND_WINDOW_S
        while sent and next(iter(sent.values()))[0] < cutoff:
            sent.popitem(last=False)

    async def _read_loop(self, call: Any) -> None:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                return
            kind = msg.WhichOneof("msg")
            if kind == "assignments":
                for a in msg.assignments.items:
                    self._begin(a)
            elif kind == "cancellations":
                for c in msg.cancellations.items:
                    self._cancel(c.task_id, c.attempt, c.reason)

    def update_labels(self, labels: dict[str, str | int]) -> None:
        """Replaces the worker's labels; the scheduler uses the new ones from now on."""
        self.labels = _check_labels(self.name, labels)
        if self._outbox is not None and self._loop is not None:
            msg = pb.WorkerMessage(labels=pb.WorkerLabels(labels=json.dumps(self.labels).encode()))
            self._loop.call_soon_threadsafe(self._control.append, msg)
            self._loop.call_soon_threadsafe(self._outbox.wake.set)

    # -- heartbeats ---------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        from stoker._proto import engine_pb2_grpc as pb_grpc

        settings = self.app.settings
        addresses = settings.addresses or [settings.address]
        turn = 0
        channel = open_channel(settings, addresses[0])
        stub = pb_grpc.EngineStub(channel)
        req = pb.HeartbeatRequest(worker_id=self.worker_id)
        try:
            while not self._heartbeat_stop.wait(settings.heartbeat_interval_s):
                try:
                    resp = stub.Heartbeat(req, metadata=self.app.transport.metadata, timeout=5)
                except grpc.RpcError:
                    # That replica is away: any other one records heartbeats as well (the
                    # stream loop reconnects on its own).
                    if len(addresses) > 1:
                        turn += 1
                        channel.close()
                        address = addresses[turn % len(addresses)]
                        channel = open_channel(settings, address)
                        stub = pb_grpc.EngineStub(channel)
                    continue
                if not resp.known and self._loop is not None and self._reconnect is not None:
                    self._loop.call_soon_threadsafe(self._reconnect.set)
        finally:
            channel.close()

    # -- running tasks ------------------------------------------------------------------

    def _begin(self, a: pb.Assignment) -> None:
        task = self.tasks.get(a.task_name)
        if a.task_id in self.running:
            return  # already running this attempt (a redelivery after reconnect)
        outbox = self._outbox
        assert outbox is not None

        def refresh(seconds: float) -> None:
            outbox.put(
                pb.TaskEvent(
                    task_id=a.task_id,
                    attempt=a.attempt,
                    kind=pb.REFRESH_TIMEOUT,
                    timeout_ms=int(seconds * 1000),
                    at_ms=_now_ms(),
                )
            )

        def release_slot() -> None:
            outbox.put(
                pb.TaskEvent(
                    task_id=a.task_id, attempt=a.attempt, kind=pb.RELEASE_SLOT, at_ms=_now_ms()
                )
            )

        ctx = Context(
            run_id=a.run_id,
            task_name=a.task_name,
            attempt=a.attempt,
            retry_count=a.retry_count,
            additional_metadata=json.loads(a.additional_metadata or b"{}"),
            worker_id=self.worker_id,
            execution_timeout_s=a.execution_timeout_ms / 1000 if a.execution_timeout_ms else None,
            on_refresh=refresh,
            on_release_slot=release_slot,
            task_id=a.task_id,
            on_spawn=self._check_parent_slots,
        )
        if task is None:
            self._report_failure(
                a,
                "UnknownTaskError",
                f"this worker has no task {a.task_name!r}",
                "",
                retryable=True,
            )
            return
        attempt = _Attempt(task, a, ctx)
        self.running[a.task_id] = attempt
        outbox.put(
            pb.TaskEvent(task_id=a.task_id, attempt=a.attempt, kind=pb.STARTED, at_ms=_now_ms())
        )
        attempt.future = asyncio.create_task(self._execute(attempt), name=f"stoker-task-{a.run_id}")

    async def _execute(self, attempt: _Attempt) -> None:
        a, task, ctx = attempt.assignment, attempt.task, attempt.ctx
        # Runs triggered from inside the task are its children (see _sdk/children.py).
        current_context.set(ctx)
        try:
            try:
                raw = ctx._bind_input(a.input, getattr(task, "workflow", None) is not None)
                value = task.decode_input(raw)
            except ValidationError as exc:
                self._finish_failure(attempt, "InputValidationError", str(exc), "", retryable=False)
                return
            try:
                result = await self._call(attempt, value)
            except asyncio.CancelledError:
                if ctx.is_cancelled:
                    return  # the engine ended this attempt; nothing to report
                raise
            except TaskTimeoutError as exc:
                self._finish_failure(attempt, "TaskTimeoutError", str(exc), "", retryable=True)
                return
            except NonRetryableError as exc:
                self._finish_failure(
                    attempt, type(exc).__name__, str(exc), traceback.format_exc(), retryable=False
                )
                return
            except RetryAfter as exc:
                self._finish_failure(
                    attempt,
                    type(exc).__name__,
                    str(exc),
                    traceback.format_exc(),
                    retryable=True,
                    retry_after_ms=max(1, int(exc.seconds * 1000)),
                )
                return
            except Exception as exc:
                self._finish_failure(
                    attempt, type(exc).__name__, str(exc), traceback.format_exc(), retryable=True
                )
                return
            try:
                output = task.encode_output(result)
            except (
                pydantic_core.PydanticSerializationError,
                ValidationError,
                TypeError,
                ValueError,
            ) as exc:
                self._finish_failure(
                    attempt,
                    "OutputSerializationError",
                    f"the task's output could not be serialized to JSON: {exc}",
                    "",
                    retryable=True,
                )
                return
            limit = self.app.max_payload_bytes
            if len(output) > limit:
                self._finish_failure(
                    attempt,
                    "PayloadTooLargeError",
                    f"the task's output is {len(output)} bytes, over the limit of {limit} bytes",
                    "",
                    retryable=False,
                )
                return
            self._finish(
                attempt,
                pb.TaskEvent(
                    task_id=a.task_id,
                    attempt=a.attempt,
                    kind=pb.COMPLETED,
                    output=output,
                    at_ms=_now_ms(),
                ),
            )
        except Exception:  # a bug in the runtime itself must not leave the attempt hanging
            log.exception("worker %s: internal error running %s", self.name, a.run_id)
            self._finish_failure(
                attempt,
                "WorkerError",
                "internal worker error",
                traceback.format_exc(),
                retryable=True,
            )

    async def _call(self, attempt: _Attempt, value: Any) -> Any:
        """Runs the function, enforcing the (refreshable) execution timeout."""
        task, ctx = attempt.task, attempt.ctx
        loop = asyncio.get_running_loop()
        if task.is_async:
            inner: asyncio.Future[Any] = asyncio.ensure_future(task.fn(value, ctx))
        else:
            cv = contextvars.copy_context()
            inner = loop.run_in_executor(self._pool, cv.run, self._in_thread, task.fn, value, ctx)
        try:
            while True:
                left = None if ctx.deadline is None else ctx.deadline - time.monotonic()
                if left is not None and left <= 0:
                    ctx._cancel("execution timeout")
                    inner.cancel()
                    raise TaskTimeoutError(
                        f"task {task.name!r} ran past its execution timeout of "
                        f"{attempt.assignment.execution_timeout_ms / 1000:g}s"
                    )
                done, _ = await asyncio.wait({inner}, timeout=left)
                if done:
                    return inner.result()
        except asyncio.CancelledError:
            inner.cancel()
            raise

    def _in_thread(self, fn: Callable[..., Any], value: Any, ctx: Context) -> Any:
        """Runs a sync task function in a pool thread, counting the threads so busy."""
        with self._threads_lock:
            self._in_threads += 1
        try:
            return fn(value, ctx)
        finally:
            with self._threads_lock:
                self._in_threads -= 1

    def _check_parent_slots(self) -> None:
        """Warns when every slot is held by a task that spawned children: a parent waiting
        for its children keeps its slot, so those children can only run on other workers."""
        try:
            parents = sum(1 for a in list(self.running.values()) if a.ctx.spawned_children)
        except RuntimeError:  # called from a sync task's thread while the dict changes
            return
        if parents >= self.slots and not self._warned_parents:
            self._warned_parents = True
            log.warning(
                "worker %s: all %d slots are held by tasks that spawned child runs; a parent "
                "waiting for its children keeps its slot, so the children can only run on "
                "other workers. Give this worker more slots than parents that wait at once, "
                "or run the children on other workers.",
                self.name,
                self.slots,
            )

    def _cancel(self, task_id: int, attempt_no: int, reason: str) -> None:
        attempt = self.running.get(task_id)
        if attempt is None or attempt.assignment.attempt != attempt_no:
            return
        attempt.ctx._cancel(reason)
        attempt.reported = True  # the engine already ended it
        del self.running[task_id]
        if attempt.future is not None:
            attempt.future.cancel()

    def _finish(self, attempt: _Attempt, event: pb.TaskEvent) -> None:
        if attempt.reported:
            return
        attempt.reported = True
        if self.running.get(attempt.assignment.task_id) is attempt:
            del self.running[attempt.assignment.task_id]
        assert self._outbox is not None
        self._outbox.put(event)
        self._changed.set()

    def _finish_failure(
        self,
        attempt: _Attempt,
        error_type: str,
        message: str,
        tb: str,
        *,
        retryable: bool,
        retry_after_ms: int = 0,
    ) -> None:
        a = attempt.assignment
        self._finish(attempt, _failure_event(a, error_type, message, tb, retryable, retry_after_ms))

    def _report_failure(
        self, a: pb.Assignment, error_type: str, message: str, tb: str, *, retryable: bool
    ) -> None:
        assert self._outbox is not None
        self._outbox.put(_failure_event(a, error_type, message, tb, retryable, 0))


def _failure_event(
    a: pb.Assignment, error_type: str, message: str, tb: str, retryable: bool, retry_after_ms: int
) -> pb.TaskEvent:
    return pb.TaskEvent(
        task_id=a.task_id,
        attempt=a.attempt,
        kind=pb.FAILED,
        error=pb.RunError(type=error_type, message=message, traceback=tb),
        non_retryable=not retryable,
        retry_after_ms=retry_after_ms,
        at_ms=_now_ms(),
    )


def _check_labels(name: str, labels: dict[str, str | int]) -> dict[str, str | int]:
    for key, value in labels.items():
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, str | int):
            raise DeclarationError(
                f"worker {name!r}: label {key!r} must map to a string or an int, got {value!r}"
            )
    return dict(labels)


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
