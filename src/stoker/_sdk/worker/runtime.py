"""Running attempts: decode the input, call the function, enforce the timeout, classify
the outcome, encode the output, and queue the result for the engine.

* Async tasks run on the worker's loop; sync tasks run in a thread pool of ``slots``
  threads. The execution timeout is enforced here (and, as a backstop, by the engine):
  an async task is cancelled; a sync task cannot be interrupted, so its attempt is reported
  failed, ``ctx.is_cancelled`` turns true, and its eventual result is discarded.
* A durable attempt's execution deadline is paused while its body is blocked on durable
  waits and starts again (from its full length) when it resumes, so it counts only time
  spent running; blocked durable attempts may be evicted (:mod:`.eviction`).
* Each attempt has a :class:`~stoker.Context` for the task and an
  :class:`~stoker._sdk.context.AttemptState` that this runtime drives (cancel, deadline,
  released slot, the parents' outcomes of a workflow step).
* The outcome becomes one task event in the session's outbox: COMPLETED with the output,
  or FAILED with the error document, whether a retry is allowed (``NonRetryableError``,
  an invalid input or a too-large output: no) and when (``RetryAfter``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pydantic_core
from pydantic import ValidationError

from stoker._core.events import FILTER_PAYLOAD_KEY
from stoker._proto import engine_pb2 as pb
from stoker._sdk.calls import Interceptor
from stoker._sdk.context import AttemptState, Context, current_context
from stoker._sdk.dependencies import solve
from stoker._sdk.durable import DurableContext, DurableLog, DurableTask
from stoker._sdk.logs import AttemptLog, LogLimits, Shipping, current_log
from stoker._sdk.task import Task
from stoker._sdk.worker.eviction import Evictor
from stoker._sdk.worker.executors import Executors
from stoker._sdk.worker.health import WorkerStats
from stoker._sdk.worker.procpool import ProcessOutput, RemoteTaskError
from stoker._sdk.worker.session import Outbox
from stoker.errors import NonDeterminismError, NonRetryableError, RetryAfter, TaskTimeoutError

log = logging.getLogger("stoker.worker")


DEADLINE_POLL_S = 0.25
"""How often a durable attempt's (movable) execution deadline is checked at the least."""


def now_ms() -> int:
    """Wall-clock milliseconds, the time stamp of task events."""
    return time.time_ns() // 1_000_000


@dataclass(eq=False)
class Attempt:
    """One attempt this worker runs."""

    task: Task[Any, Any]
    assignment: pb.Assignment
    ctx: Context
    state: AttemptState
    future: asyncio.Task[None] | None = None
    reported: bool = False


class Runtime:
    """The attempts a worker runs, and how each one runs."""

    def __init__(
        self,
        *,
        name: str,
        worker_id: str,
        tasks: dict[str, Task[Any, Any]],
        slots: int,
        durable_slots: int,
        max_payload_bytes: int,
        outbox: Outbox,
        changed: asyncio.Event,
        log_limits: LogLimits | None = None,
        calls: Interceptor | None = None,
        executors: Executors | None = None,
        lifespan: Any = None,
    ) -> None:
        self.name = name
        self.calls = calls
        """The app's interceptor chain, through which each attempt runs (tracing)."""
        self.worker_id = worker_id
        self.tasks = tasks
        self.slots = slots
        self.max_payload_bytes = max_payload_bytes
        self.outbox = outbox
        self.changed = changed
        """Set whenever an attempt finishes (the session's drain waits on it)."""
        self.running: dict[int, Attempt] = {}
        self.lifespan = lifespan
        """What the worker's lifespan yielded: every task's ``ctx.lifespan``."""
        self.executors = executors or Executors(name, tasks.values(), slots, None)
        """Each task's executor: the shared pool below, its own threads, or subprocesses."""
        self.pool = ThreadPoolExecutor(
            max_workers=slots + durable_slots, thread_name_prefix=f"stoker-{name}"
        )
        self.in_threads = 0
        """Sync task functions running in the pool right now."""
        self._threads_lock = threading.Lock()
        self._warned_parents = False
        self._cancels: set[asyncio.Task[Any]] = set()
        self.evictor = Evictor(self, durable_slots)
        """Evicts blocked durable attempts (run by the worker beside the session)."""
        self.stats = WorkerStats()
        """Attempts started and finished, for the health endpoint's metrics."""
        self.log_limits = log_limits or LogLimits()
        if outbox.shipping is None:
            outbox.shipping = Shipping(outbox.wake.set)
        self.shipping = outbox.shipping

    def shutdown(self) -> None:
        """Lets go of the thread pool without waiting for the threads still running."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.executors.shutdown()

    # -- what runs ----------------------------------------------------------------------

    def running_refs(self) -> list[pb.TaskRef]:
        """The attempts still running, as a (re-)registration lists them."""
        return [
            pb.TaskRef(
                task_id=a.assignment.task_id,
                attempt=a.assignment.attempt,
                slot_cost=0 if a.state.slot_released else a.assignment.slot_cost,
                durable=a.assignment.durable,
            )
            for a in self.running.values()
        ]

    @staticmethod
    def describe(attempts: Iterable[Attempt]) -> str:
        items = [f"{a.task.name} (run {a.assignment.run_id})" for a in attempts]
        more = f" and {len(items) - 10} more" if len(items) > 10 else ""
        return ", ".join(items[:10]) + more

    def begin(self, a: pb.Assignment) -> None:
        """Starts an assigned attempt (a redelivered one already running is ignored)."""
        task = self.tasks.get(a.task_name)
        current = self.running.get(a.task_id)
        if current is not None:
            if current.assignment.attempt >= a.attempt:
                return  # already running this attempt (a redelivery after reconnect)
            # A newer attempt means the engine ended ours (an eviction acknowledged on the
            # stream just behind this assignment): ours stops, unreported.
            self.cancel(a.task_id, current.assignment.attempt, "superseded by a new attempt")
        outbox = self.outbox

        def refresh(seconds: float) -> None:
            outbox.put(
                pb.TaskEvent(
                    task_id=a.task_id,
                    attempt=a.attempt,
                    kind=pb.REFRESH_TIMEOUT,
                    timeout_ms=int(seconds * 1000),
                    at_ms=now_ms(),
                )
            )

        def release_slot() -> None:
            outbox.put(
                pb.TaskEvent(
                    task_id=a.task_id, attempt=a.attempt, kind=pb.RELEASE_SLOT, at_ms=now_ms()
                )
            )

        state = AttemptState(
            execution_timeout_s=a.execution_timeout_ms / 1000 if a.execution_timeout_ms else None,
            on_refresh=refresh,
            on_release_slot=release_slot,
            on_spawn=self._check_parent_slots,
            on_cancel_run=self._cancel_run,
        )
        metadata = json.loads(a.additional_metadata or b"{}")
        # A filter's payload comes with the assignment (kept beside the run, not in its
        # metadata); a run an older engine started carries it in its metadata, taken out
        # here so it goes no further (children copy ctx's metadata).
        legacy = metadata.pop(FILTER_PAYLOAD_KEY, None) if isinstance(metadata, dict) else None
        filter_payload = json.loads(a.filter_payload) if a.filter_payload else legacy
        about: dict[str, Any] = dict(
            run_id=a.run_id,
            task_name=a.task_name,
            attempt=a.attempt,
            retry_count=a.retry_count,
            additional_metadata=metadata,
            filter_payload=filter_payload,
            worker_id=self.worker_id,
            task_id=a.task_id,
            state=state,
            lifespan=self.lifespan,
            max_attempts=max(1, a.max_attempts),
            parent_run_id=a.parent_run_id or None,
            child_index=a.child_index if a.parent_run_id else None,
            child_key=a.child_key or None,
            workflow_run_id=a.workflow_run_id or None,
        )
        ctx: Context
        if isinstance(task, DurableTask):
            exec_timeout_s = a.execution_timeout_ms / 1000 or None

            def blocked(now_blocked: bool) -> None:
                # The execution timeout counts only time spent running: paused while
                # blocked, its full length again once resumed.
                if exec_timeout_s is not None:
                    state.deadline = None if now_blocked else time.monotonic() + exec_timeout_s
                if now_blocked:
                    self.evictor.poke()

            dlog = DurableLog(
                a.task_id,
                a.attempt,
                outbox.put_control,
                run_timeout_ms=task.timeout_ms,
                on_blocked=blocked,
                on_evicted=lambda: self.evicted(a.task_id, a.attempt),
            )
            ctx = DurableContext(log=dlog, **about)
        else:
            ctx = Context(**about)
        if task is None:
            outbox.put(
                failure_event(
                    a,
                    "UnknownTaskError",
                    f"this worker has no task {a.task_name!r}",
                    "",
                    retryable=True,
                )
            )
            return
        state.log = AttemptLog(
            a.task_id, a.attempt, self.shipping, self.log_limits, self.max_payload_bytes
        )
        attempt = Attempt(task, a, ctx, state)
        self.running[a.task_id] = attempt
        outbox.put(
            pb.TaskEvent(task_id=a.task_id, attempt=a.attempt, kind=pb.STARTED, at_ms=now_ms())
        )
        self.stats.start(a.task_name)
        attempt.future = asyncio.create_task(self._execute(attempt), name=f"stoker-task-{a.run_id}")

    def _durable_log(self, task_id: int, attempt_no: int) -> DurableLog | None:
        attempt = self.running.get(task_id)
        if attempt is None or attempt.assignment.attempt != attempt_no:
            return None
        ctx = attempt.ctx
        return ctx.journal if isinstance(ctx, DurableContext) else None

    def durable_reply(self, reply: pb.DurableReply) -> None:
        """The engine answered a durable attempt's request."""
        log = self._durable_log(reply.task_id, reply.attempt)
        if log is not None:
            log.on_reply(reply)

    def durable_wakes(self, wakes: Iterable[pb.DurableWake]) -> None:
        """The engine settled something in these attempts' logs: they re-read them."""
        for w in wakes:
            log = self._durable_log(w.task_id, w.attempt)
            if log is not None:
                log.on_wake()

    def reconnected(self) -> None:
        """A new stream is up: durable requests lost with the old one are sent again."""
        queued = self.outbox.control
        for attempt in list(self.running.values()):
            if isinstance(attempt.ctx, DurableContext):
                attempt.ctx.journal.resend(lambda m: any(m is q for q in queued))

    def cancel(self, task_id: int, attempt_no: int, reason: str) -> None:
        """Ends an attempt the engine ended (or that is handed back): nothing is reported."""
        attempt = self.running.get(task_id)
        if attempt is None or attempt.assignment.attempt != attempt_no:
            return
        attempt.state.cancel(reason)
        if attempt.state.log is not None:
            attempt.state.log.close(reported=False)
        attempt.reported = True  # the engine already ended it
        del self.running[task_id]
        if attempt.future is not None:
            attempt.future.cancel()

    def evicted(self, task_id: int, attempt_no: int) -> None:
        """The engine accepted this attempt's eviction: it ends here, unreported (a later
        settlement queues the task again, and its next attempt replays the log)."""
        self.cancel(task_id, attempt_no, "evicted while blocked")
        self.changed.set()

    def hand_back(self, reason: str) -> list[Attempt]:
        """Cancels every running attempt; the stream's clean close hands them back."""
        left = list(self.running.values())
        for attempt in left:
            a = attempt.assignment
            self.cancel(a.task_id, a.attempt, reason)
        return left

    # -- one attempt --------------------------------------------------------------------

    async def _execute(self, attempt: Attempt) -> None:
        a, task, ctx = attempt.assignment, attempt.task, attempt.ctx
        # Runs triggered from inside the task are its children (see _sdk/children.py);
        # logging records emitted inside it are its log lines (see _sdk/logs.py).
        current_context.set(ctx)
        current_log.set(attempt.state.log)
        try:
            try:
                raw = attempt.state.bind_input(a.input, getattr(task, "workflow", None) is not None)
                value = task.decode_input(raw)
            except ValidationError as exc:
                self._fail(attempt, "InputValidationError", str(exc), "", retryable=False)
                return
            try:
                if isinstance(ctx, DurableContext):
                    await ctx.journal.open()
                if self.calls is not None:
                    result = await self.calls.aio_execute(ctx, lambda: self._call(attempt, value))
                else:
                    result = await self._call(attempt, value)
                if isinstance(ctx, DurableContext):
                    await ctx.journal.drain()
                if isinstance(ctx, DurableContext) and ctx.journal.diverged is not None:
                    raise ctx.journal.diverged  # caught by the body, yet the replay diverged
                if isinstance(ctx, DurableContext) and ctx.journal.failed is not None:
                    raise ctx.journal.failed  # a recording the body did not await failed
            except asyncio.CancelledError:
                if ctx.is_cancelled:
                    return  # the engine ended this attempt; nothing to report
                raise
            except TaskTimeoutError as exc:
                self._fail(attempt, "TaskTimeoutError", str(exc), "", retryable=True)
                return
            except RemoteTaskError as exc:  # raised by the body in a subprocess
                self._fail(
                    attempt,
                    exc.error_type,
                    exc.message,
                    exc.remote_traceback,
                    retryable=exc.retryable,
                    retry_after_ms=exc.retry_after_ms,
                )
                return
            except (NonRetryableError, NonDeterminismError) as exc:
                self._fail(
                    attempt, type(exc).__name__, str(exc), traceback.format_exc(), retryable=False
                )
                return
            except RetryAfter as exc:
                self._fail(
                    attempt,
                    type(exc).__name__,
                    str(exc),
                    traceback.format_exc(),
                    retryable=True,
                    retry_after_ms=max(1, int(exc.seconds * 1000)),
                )
                return
            except Exception as exc:
                diverged = isinstance(ctx, DurableContext) and ctx.journal.diverged is not None
                self._fail(
                    attempt,
                    type(exc).__name__,
                    str(exc),
                    traceback.format_exc(),
                    retryable=not diverged,
                )
                return
            try:
                # A subprocess encoded the output already (its errors came back above).
                output = (
                    result.raw if isinstance(result, ProcessOutput) else task.encode_output(result)
                )
            except (
                pydantic_core.PydanticSerializationError,
                ValidationError,
                TypeError,
                ValueError,
            ) as exc:
                self._fail(
                    attempt,
                    "OutputSerializationError",
                    f"the task's output could not be serialized to JSON: {exc}",
                    "",
                    retryable=True,
                )
                return
            limit = self.max_payload_bytes
            if len(output) > limit:
                self._fail(
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
                    at_ms=now_ms(),
                ),
            )
        except Exception:  # a bug in the runtime itself must not leave the attempt hanging
            log.exception("worker %s: internal error running %s", self.name, a.run_id)
            self._fail(
                attempt,
                "WorkerError",
                "internal worker error",
                traceback.format_exc(),
                retryable=True,
            )

    async def _call(self, attempt: Attempt, value: Any) -> Any:
        """Runs the function with its dependencies, which are torn down after it."""
        task = attempt.task
        if not task.dependencies:
            return await self._call_fn(attempt, value, {})
        async with AsyncExitStack() as stack:
            overrides = task.app.dependency_overrides
            kwargs = await solve(task.dependencies, attempt.ctx, stack, overrides)
            return await self._call_fn(attempt, value, kwargs)

    async def _call_fn(self, attempt: Attempt, value: Any, kwargs: dict[str, Any]) -> Any:
        """Runs the function, enforcing the (refreshable) execution timeout."""
        task, ctx, state = attempt.task, attempt.ctx, attempt.state
        loop = asyncio.get_running_loop()
        kind = self.executors.kind(task)
        fn = functools.partial(task.fn, **kwargs) if kwargs else task.fn
        inner: asyncio.Future[Any]
        if task.is_async:
            inner = asyncio.ensure_future(fn(value, ctx))
        elif kind == "process":
            inner = asyncio.ensure_future(self._in_process(attempt))
        else:
            pool = self.executors.thread_pool(task) if kind == "thread" else self.pool
            cv = contextvars.copy_context()
            inner = loop.run_in_executor(pool, cv.run, self._in_thread, fn, value, ctx)
        # A durable attempt's deadline moves while it runs (paused while blocked): look
        # at it again at least every DEADLINE_POLL_S.
        poll = DEADLINE_POLL_S if isinstance(task, DurableTask) else None
        try:
            while True:
                left = None if state.deadline is None else state.deadline - time.monotonic()
                if left is not None and left <= 0:
                    state.cancel("execution timeout")
                    inner.cancel()
                    raise TaskTimeoutError(
                        f"task {task.name!r} ran past its execution timeout of "
                        f"{attempt.assignment.execution_timeout_ms / 1000:g}s"
                    )
                if poll is not None:
                    left = poll if left is None else min(left, poll)
                done, _ = await asyncio.wait({inner}, timeout=left)
                if done:
                    return inner.result()
        except asyncio.CancelledError:
            inner.cancel()
            raise

    async def _in_process(self, attempt: Attempt) -> ProcessOutput:
        """Runs the attempt in one of the worker's subprocesses (README "Executors")."""
        pool = self.executors.processes
        assert pool is not None
        task, ctx, a = attempt.task, attempt.ctx, attempt.assignment
        about = dict(
            run_id=ctx.run_id,
            task_name=ctx.task_name,
            attempt=ctx.attempt,
            retry_count=ctx.retry_count,
            additional_metadata=ctx.additional_metadata,
            filter_payload=ctx.filter_payload,
            worker_id=ctx.worker_id,
            task_id=ctx.task_id,
            max_attempts=ctx.max_attempts,
            parent_run_id=ctx.parent_run_id,
            child_index=ctx.child_index,
            child_key=ctx.child_key,
            workflow_run_id=ctx.workflow_run_id,
        )
        is_step = getattr(task, "workflow", None) is not None
        target = self.executors.targets[task.name]
        return await pool.run(task, target, ctx, a.input, is_step, about)

    def _in_thread(self, fn: Callable[..., Any], value: Any, ctx: Context) -> Any:
        """Runs a sync task function in a pool thread, counting the threads so busy."""
        with self._threads_lock:
            self.in_threads += 1
        try:
            return fn(value, ctx)
        finally:
            with self._threads_lock:
                self.in_threads -= 1

    def _cancel_run(self, run_id: str) -> None:
        """``ctx.cancel()``: the engine cancels the run (its cancellation then reaches this
        attempt as any other). Called from the loop or from a task's thread."""
        runs = next(iter(self.tasks.values())).app.runs
        reason = "cancelled by the task itself (ctx.cancel())"
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a sync task's thread
            runs.cancel(run_id, reason)
            return
        done = loop.create_task(runs.aio_cancel(run_id, reason))
        self._cancels.add(done)
        done.add_done_callback(self._cancels.discard)

    def _check_parent_slots(self) -> None:
        """Warns when every slot is held by a task that spawned children: a parent waiting
        for its children keeps its slot, so those children can only run on other workers."""
        try:
            parents = sum(1 for a in list(self.running.values()) if a.state.spawned_children)
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

    def _finish(self, attempt: Attempt, event: pb.TaskEvent) -> None:
        if attempt.reported:
            return
        attempt.reported = True
        outcome = "completed" if event.kind == pb.COMPLETED else "failed"
        self.stats.finish(attempt.task.name, outcome)
        if self.running.get(attempt.assignment.task_id) is attempt:
            del self.running[attempt.assignment.task_id]
        if attempt.state.log is not None:
            attempt.state.log.close(reported=True)  # queued ahead of the end event
        self.outbox.put(event)
        self.changed.set()

    def _fail(
        self,
        attempt: Attempt,
        error_type: str,
        message: str,
        tb: str,
        *,
        retryable: bool,
        retry_after_ms: int = 0,
    ) -> None:
        event = failure_event(
            attempt.assignment,
            error_type,
            message,
            tb,
            retryable=retryable,
            retry_after_ms=retry_after_ms,
        )
        self._finish(attempt, event)


def failure_event(
    a: pb.Assignment,
    error_type: str,
    message: str,
    tb: str,
    *,
    retryable: bool,
    retry_after_ms: int = 0,
) -> pb.TaskEvent:
    """The FAILED event of an attempt."""
    return pb.TaskEvent(
        task_id=a.task_id,
        attempt=a.attempt,
        kind=pb.FAILED,
        error=pb.RunError(type=error_type, message=message, traceback=tb),
        non_retryable=not retryable,
        retry_after_ms=retry_after_ms,
        at_ms=now_ms(),
    )
