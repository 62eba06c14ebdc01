"""The worker's side of ``executor="process"``: a pool of subprocesses that run sync tasks.

Why subprocesses: a CPU-bound Python task holds the GIL, so in a thread it starves the
worker's event loop and every other task, and it cannot be interrupted. In its own
process it runs on its own core and can really be stopped.

* **Pool.** Up to ``size`` subprocesses (the worker's slots), started on demand and kept
  for the next attempt; a few are started ahead when the worker starts. They come from a
  ``forkserver`` (``spawn`` where there is none) that preloaded Stoker and the tasks'
  modules, so a new one is a fork of a clean, threadless process — never of the worker
  with its gRPC threads — and takes milliseconds, not an interpreter start.
* **Crossing the boundary.** The task is named by module and qualified name (it must be
  declared at module level, checked at declaration); input and output cross as JSON
  bytes; the subprocess validates the input and encodes the output itself
  (:mod:`.procchild` describes the messages).
* **Stopping.** A cancellation, an execution timeout or a hand-back sends the subprocess
  a cancel notice (``ctx.is_cancelled`` turns true inside) and kills it if it has not
  returned within :data:`CANCEL_GRACE_S`; a killed subprocess is replaced on demand.
* **Crashes.** If the subprocess dies while running an attempt (``os._exit``, a
  segfault, the OOM killer), the attempt fails with :class:`~stoker.SubprocessCrashedError`
  naming the signal or exit code, and is retried like any failure; the worker goes on.
* **Logs.** ``ctx.log`` and, when the worker captures ``logging`` records, the records
  emitted in the subprocess while an attempt runs (from any of its threads; the root
  logger takes the worker's level) travel in batches (``("logs", ...)`` messages, at most
  every 0.1 s and before the attempt's result) and join the attempt's log here.
* **Context calls.** ``ctx.refresh_timeout``, ``ctx.release_slot`` and any method listed
  in :attr:`~.procchild.ProcessContext.FORWARDED` are forwarded over the pipe and run on
  the attempt's real context here, on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING, Any

from stoker._sdk.context import Context
from stoker._sdk.execution import Target
from stoker._sdk.logs import capturing
from stoker._sdk.worker.procchild import child_main
from stoker.errors import SubprocessCrashedError

if TYPE_CHECKING:
    from stoker._sdk.task import Task

log = logging.getLogger("stoker.worker")

CANCEL_GRACE_S = 0.25
"""How long a cancelled attempt's subprocess may take to return before it is killed."""

_CONTEXT_LOCK = threading.Lock()
_MP_CONTEXT: BaseContext | None = None


def mp_context(modules: Iterable[str]) -> BaseContext:
    """The multiprocessing context the pools start subprocesses from (one per process:
    the forkserver is shared; the first pool's modules are the ones it preloads)."""
    global _MP_CONTEXT
    with _CONTEXT_LOCK:
        if _MP_CONTEXT is None:
            if "forkserver" in multiprocessing.get_all_start_methods():
                ctx = multiprocessing.get_context("forkserver")
                preload = ["stoker._sdk.worker.procchild", "stoker._sdk.app"]
                preload += sorted({m for m in modules if m not in ("__main__", "__mp_main__")})
                ctx.set_forkserver_preload(preload)
                _MP_CONTEXT = ctx
            else:  # pragma: no cover - not on Linux
                _MP_CONTEXT = multiprocessing.get_context("spawn")
        return _MP_CONTEXT


def describe_exit(code: int | None) -> str:
    """A subprocess's exit status in words."""
    if code is None:
        return "exited (status unknown)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the out-of-memory killer sends it)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


class RemoteTaskError(Exception):
    """A task body in a subprocess raised (or its input or output did not fit): carries
    what the attempt's error document needs."""

    def __init__(
        self, error_type: str, message: str, tb: str, retryable: bool, retry_after_ms: int
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.remote_traceback = tb
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms


@dataclass(frozen=True, slots=True)
class ProcessOutput:
    """A task's output as the subprocess encoded it (JSON bytes)."""

    raw: bytes


class Subprocess:
    """One subprocess of the pool and the thread that reads its pipe."""

    def __init__(self, mp: BaseContext, loop: asyncio.AbstractEventLoop, name: str) -> None:
        self.loop = loop
        ours, theirs = mp.Pipe(duplex=True)
        self.process: Any = mp.Process(  # type: ignore[attr-defined]
            target=child_main, args=(theirs,), name=name, daemon=True
        )
        self.process.start()
        theirs.close()
        self.conn: Connection = ours
        self.pid: int = self.process.pid
        self._send_lock = threading.Lock()
        self.call_id = 0
        self.waiting: asyncio.Future[tuple[Any, ...]] | None = None
        self.ctx: Context | None = None
        self.dead = False
        self.exit_description = ""
        threading.Thread(target=self._read, name=f"{name}-reader", daemon=True).start()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self.conn.send(message)

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self.process.join(5)
                description = describe_exit(self.process.exitcode)
                self._post(self._died, description)
                return
            self._post(self._received, message)

    def _post(self, fn: Any, arg: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, arg)
        except RuntimeError:  # the loop is closed: the worker has stopped
            pass

    def _received(self, message: tuple[Any, ...]) -> None:
        if message[0] == "done":
            if self.waiting is not None and message[1] == self.call_id:
                if not self.waiting.done():
                    self.waiting.set_result(message)
        elif message[0] == "call":
            self._forwarded(message)
        elif message[0] == "logs":
            self._logged(message)

    def _logged(self, message: tuple[Any, ...]) -> None:
        """Lines the running attempt logged in the subprocess (``ctx.log`` and ``logging``
        records), added to its log here as if logged in the worker."""
        _, call_id, levels, loggers, texts, at = message
        target = self.ctx.state.log if self.ctx is not None else None
        if target is None or call_id != self.call_id:
            return
        for level, logger, text, ms in zip(levels, loggers, texts, at, strict=True):
            target.add(level, text, logger, ms)

    def _forwarded(self, message: tuple[Any, ...]) -> None:
        _, request, call_id, target, method, args, kwargs = message
        ok, value = False, "the attempt has ended"
        if self.ctx is not None and call_id == self.call_id and not method.startswith("_"):
            obj = self.ctx if target == "ctx" else self.ctx.state
            try:
                ok, value = True, getattr(obj, method)(*args, **kwargs)
            except Exception as exc:
                ok, value = False, f"{type(exc).__name__}: {exc}"
        try:
            self.send(("reply", request, ok, value))
        except (OSError, ValueError):  # the subprocess is gone or was killed
            pass

    def _died(self, description: str) -> None:
        self.dead = True
        self.exit_description = description
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_exception(SubprocessCrashedError(description))

    def kill(self) -> None:
        """Kills the subprocess (the reader thread sees the pipe close and reaps it)."""
        self.dead = True
        try:
            self.process.kill()
        except (OSError, ValueError, AttributeError):
            pass
        try:
            self.conn.close()
        except OSError:
            pass


class ProcessPool:
    """Up to ``size`` subprocesses running one attempt each."""

    def __init__(self, name: str, size: int, modules: Iterable[str]) -> None:
        self.name = name
        self.size = size
        self.modules = sorted(set(modules))
        self.idle: list[Subprocess] = []
        self.live = 0
        """Subprocesses counted against ``size`` (idle, starting or running one attempt)."""
        self._freed: asyncio.Condition | None = None
        self._started = 0
        self._closed = False
        self._aside: set[asyncio.Task[None]] = set()
        self.procs: set[Subprocess] = set()
        """Every subprocess alive (or not yet reaped) of this pool."""

    def _new(self, loop: asyncio.AbstractEventLoop) -> Subprocess:
        self._started += 1
        mp = mp_context(self.modules)
        proc = Subprocess(mp, loop, f"stoker-{self.name}-proc{self._started}")
        self.procs.add(proc)
        return proc

    def _forget(self, proc: Subprocess) -> None:
        proc.kill()
        self.procs.discard(proc)
        self.live -= 1

    async def warm(self, n: int) -> None:
        """Starts ``n`` subprocesses ahead of the first attempts."""
        loop = asyncio.get_running_loop()
        for _ in range(min(n, self.size - self.live)):
            self.live += 1
            try:
                proc = await loop.run_in_executor(None, self._new, loop)
            except Exception:
                self.live -= 1
                log.exception("worker %s: could not start a task subprocess", self.name)
                return
            if self._closed:
                proc.kill()
                return
            self.idle.append(proc)
            await self._notify()

    async def _notify(self) -> None:
        if self._freed is None:
            self._freed = asyncio.Condition()
        async with self._freed:
            self._freed.notify()

    async def _acquire(self) -> Subprocess:
        loop = asyncio.get_running_loop()
        if self._freed is None:
            self._freed = asyncio.Condition()
        while True:
            while self.idle:
                proc = self.idle.pop()
                if not proc.dead:
                    return proc
                self._forget(proc)
            if self.live < self.size:
                self.live += 1
                try:
                    return await loop.run_in_executor(None, self._new, loop)
                except BaseException:
                    self.live -= 1
                    raise
            async with self._freed:
                if not self.idle and self.live >= self.size:
                    await self._freed.wait()

    def _release(self, proc: Subprocess) -> None:
        proc.ctx = None
        proc.waiting = None
        if proc.dead or self._closed:
            self._forget(proc)
        else:
            self.idle.append(proc)
        self._spawn_aside(self._notify())

    def _spawn_aside(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._aside.add(task)
        task.add_done_callback(self._aside.discard)

    async def run(
        self,
        task: Task[Any, Any],
        target: Target,
        ctx: Context,
        raw_input: bytes,
        is_step: bool,
        about: dict[str, Any],
    ) -> ProcessOutput:
        """Runs one attempt in a subprocess; raises RemoteTaskError for what the body
        raised, SubprocessCrashedError when the subprocess died."""
        proc = await self._acquire()
        proc.call_id += 1
        call_id = proc.call_id
        loop = asyncio.get_running_loop()
        proc.waiting = loop.create_future()
        proc.ctx = ctx
        message = ("run", call_id, target.module, target.qualname, task.name, raw_input)
        try:
            level = logging.getLogger().getEffectiveLevel() if capturing() else None
            about = {**about, "deadline": ctx.state.deadline, "log_level": level}
            proc.send((*message, is_step, about))
            # Shielded: a cancelled attempt leaves the reply to _abandon's grace period.
            done = await asyncio.shield(proc.waiting)
        except asyncio.CancelledError:
            self._abandon(proc, ctx.state.cancel_reason or "cancelled")
            raise
        except SubprocessCrashedError as exc:
            self._release(proc)
            raise SubprocessCrashedError(
                f"the subprocess (pid {proc.pid}) running task {task.name!r} {exc} before "
                "it answered"
            ) from None
        except (OSError, ValueError) as exc:  # the pipe broke: the subprocess is gone
            proc.dead = True
            self._release(proc)
            raise SubprocessCrashedError(
                f"the subprocess (pid {proc.pid}) running task {task.name!r} is gone: {exc}"
            ) from None
        self._release(proc)
        if done[2] == "ok":
            return ProcessOutput(done[3])
        _, _, _, error_type, text, tb, retryable, retry_after_ms = done
        raise RemoteTaskError(error_type, text, tb, retryable, retry_after_ms)

    def _abandon(self, proc: Subprocess, reason: str) -> None:
        """The attempt was cancelled: tell the body, and kill the subprocess unless it
        returns within CANCEL_GRACE_S (then it is kept for the next attempt)."""
        proc.ctx = None
        waiting = proc.waiting
        try:
            proc.send(("cancel", proc.call_id, reason))
        except (OSError, ValueError):
            proc.dead = True

        async def settle() -> None:
            if waiting is not None and not proc.dead:
                try:
                    await asyncio.wait_for(asyncio.shield(waiting), CANCEL_GRACE_S)
                except (TimeoutError, asyncio.CancelledError, SubprocessCrashedError):
                    proc.dead = True
            if proc.dead:
                proc.kill()
            self._release(proc)

        self._spawn_aside(settle())

    def close(self) -> None:
        """Kills every subprocess (idle ones and those still running handed-back work)."""
        self._closed = True
        for proc in list(self.procs):
            proc.kill()
        self.procs.clear()
        self.idle.clear()
        for aside in list(self._aside):
            aside.cancel()
