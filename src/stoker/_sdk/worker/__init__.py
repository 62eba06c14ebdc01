"""The worker: runs an app's tasks as the engine assigns them.

A :class:`Worker` is made of three parts, each in its own module:

* :mod:`.session` — the one gRPC stream to the engine: registration, reconnects (replica
  after replica), the outbox of task events, draining on stop;
* :mod:`.heartbeat` — heartbeats from a dedicated thread over a channel of their own, so a
  task that blocks the event loop cannot make a healthy worker look dead;
* :mod:`.runtime` — running one attempt: decode, call, timeout, classify, encode;
* :mod:`.health` — optionally, an HTTP endpoint with the worker's health (a blocked event
  loop shows) and metrics (``health_port``).

This module holds the lifecycle. ``stop()`` (or SIGINT/SIGTERM) drains: the engine is told
to assign nothing more, durable tasks blocked on their waits are evicted (they resume on
another worker when what they wait for happens), running tasks get ``grace`` seconds to
finish and report (the
console says what is awaited), then what is still running is cancelled here and handed
back: the stream is closed cleanly and the engine requeues those attempts at once without
using up a retry. A second stop request (Ctrl-C again) skips the wait and hands back at
once. A sync task cannot be interrupted: ``ctx.is_cancelled`` turns true and its result is
discarded; the blocking ``start()`` then exits without waiting for its thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from stoker._core.loop import run as run_loop
from stoker._proto import engine_pb2 as pb
from stoker._sdk.dependencies import enter_lifespan, lifespan_manager
from stoker._sdk.durable import DurableTask
from stoker._sdk.execution import ExecutorName, check_executor
from stoker._sdk.logs import (
    LogLimits,
    Shipping,
    install_capture,
    uninstall_capture,
    wake_from_any_thread,
)
from stoker._sdk.task import Task
from stoker._sdk.worker.executors import Executors, warm_in_background
from stoker._sdk.worker.health import Gauges, HealthServer
from stoker._sdk.worker.heartbeat import Heartbeat
from stoker._sdk.worker.runtime import Attempt, Runtime
from stoker._sdk.worker.session import Identity, Lifecycle, Outbox, Session
from stoker.config import ClientSettings
from stoker.errors import ConfigError, DeclarationError

if TYPE_CHECKING:
    from stoker._sdk.app import Stoker

log = logging.getLogger("stoker.worker")


def worker_settings() -> ClientSettings:
    """The ``STOKER_*`` settings a worker reads from the environment (its bounds)."""
    try:
        return ClientSettings()
    except ValidationError as exc:
        raise ConfigError(f"invalid worker settings: {exc}") from None


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
        log_max_lines: int | None = None,
        log_max_bytes: int | None = None,
        log_line_max_bytes: int | None = None,
        stream_max_bytes: int | None = None,
        capture_logging: bool = True,
        health_port: int | None = None,
        health_host: str = "0.0.0.0",
        max_loop_block_s: float = 5.0,
        executor: ExecutorName | None = None,
        lifespan: Callable[[], Any] | None = None,
    ) -> None:
        if slots <= 0:
            raise DeclarationError(f"worker {name!r}: slots must be at least 1, got {slots}")
        if durable_slots < 0:
            raise DeclarationError(f"worker {name!r}: durable_slots must be >= 0")
        if health_port is not None and not 0 <= health_port < 65536:
            raise DeclarationError(
                f"worker {name!r}: health_port must be a port (0-65535), got {health_port}"
            )
        if max_loop_block_s <= 0:
            raise DeclarationError(
                f"worker {name!r}: max_loop_block_s must be positive, got {max_loop_block_s}"
            )
        chosen = tasks if tasks is not None else list(app.tasks.values())
        if not chosen:
            raise DeclarationError(f"worker {name!r} has no tasks: declare some with @app.task")
        self.app = app
        self.name = name
        self.slots = slots
        self.durable_slots = durable_slots
        self.labels = _check_labels(name, labels or {})
        self.grace = grace
        env = worker_settings()
        self.log_limits = LogLimits(
            max_lines=env.log_max_lines if log_max_lines is None else log_max_lines,
            max_bytes=env.log_max_bytes if log_max_bytes is None else log_max_bytes,
            line_max_bytes=(
                env.log_line_max_bytes if log_line_max_bytes is None else log_line_max_bytes
            ),
            stream_max_bytes=env.stream_max_bytes if stream_max_bytes is None else stream_max_bytes,
        ).check(name)
        """What one attempt may log (lines, bytes, bytes a line) and stream (bytes)."""
        self.capture_logging = capture_logging
        """Whether records of the standard ``logging`` module emitted inside an attempt
        become its log lines (see :mod:`stoker._sdk.logs`)."""
        self.health_port = health_port
        self.health_host = health_host
        self.max_loop_block_s = max_loop_block_s
        self.health: HealthServer | None = None
        """The health endpoint while the worker runs with a ``health_port``."""
        self.tasks = {t.name: t for t in chosen}
        self.executor = check_executor(executor, f"worker {name!r}")
        self.executors = Executors(name, chosen, slots, self.executor)
        self.lifespan = lifespan_manager(lifespan, f"worker {name!r}")
        """Where each task runs (loop, threads, subprocesses) and the pools behind them."""
        self.worker_id = str(uuid.uuid4())
        self.connected = asyncio.Event() if _has_loop() else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lifecycle: Lifecycle | None = None
        self._outbox: Outbox | None = None
        self._runtime: Runtime | None = None

    @property
    def running(self) -> dict[int, Attempt]:
        """The attempts running now, by task id."""
        return self._runtime.running if self._runtime is not None else {}

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

        run_loop(main(), uvloop=self.app.settings.uvloop)
        in_threads = self._runtime.in_threads if self._runtime is not None else 0
        if in_threads:
            log.warning(
                "worker %s: exiting without waiting for %d sync task(s) still running in "
                "threads (they were handed back)",
                self.name,
                in_threads,
            )
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    def request_stop(self) -> None:
        """Asks a running worker to drain and stop; asked again, it stops without waiting
        for running tasks (they are handed back). Safe from signal handlers and threads."""
        if self._loop is not None and self._lifecycle is not None:
            self._loop.call_soon_threadsafe(self._stop_requested)

    def _stop_requested(self) -> None:
        life = self._lifecycle
        assert life is not None
        if life.stopping.is_set():
            if not life.force.is_set():
                life.force.set()
                log.warning("worker %s: stopping now, handing back what still runs", self.name)
            life.changed.set()
        life.stopping.set()

    async def stop(self, *, wait: bool = True) -> None:
        """Drains and stops (``wait=False``: hands back running tasks without waiting)."""
        life = self._lifecycle
        if life is not None:
            if not wait:
                life.force.set()
                life.changed.set()
            life.stopping.set()

    async def async_start(self) -> None:
        """Runs the worker on the current loop until :meth:`stop`; then drains."""
        loop = self._loop = asyncio.get_running_loop()
        life = self._lifecycle = Lifecycle()
        self.connected = life.connected
        outbox = self._outbox = Outbox()
        outbox.shipping = Shipping(wake_from_any_thread(loop, outbox.wake))
        async with AsyncExitStack() as stack:
            # A lifespan that fails to start stops the worker before it registers.
            value = await enter_lifespan(self.lifespan, stack, f"worker {self.name!r}")
            await self._serve(loop, life, outbox, value)

    async def _serve(
        self, loop: asyncio.AbstractEventLoop, life: Lifecycle, outbox: Outbox, lifespan: Any
    ) -> None:
        await self.app.aio_register(list(self.tasks.values()))
        # The workflows served whole are registered too: their crons (declared in code)
        # are created, changed or removed with them.
        for wf in list(self.app.workflows.values()):
            if wf.steps and all(s.name in self.tasks for s in wf.steps.values()):
                await wf.aio_register()
        settings = self.app.settings
        runtime = self._runtime = Runtime(
            name=self.name,
            worker_id=self.worker_id,
            tasks=self.tasks,
            slots=self.slots,
            durable_slots=self.durable_slots,
            max_payload_bytes=self.app.max_payload_bytes,
            outbox=outbox,
            changed=life.changed,
            log_limits=self.log_limits,
            calls=self.app.connection.calls,
            executors=self.executors,
            lifespan=lifespan,
        )
        session = Session(
            identity=Identity(
                worker_id=self.worker_id,
                name=self.name,
                slots=self.slots,
                durable_slots=self.durable_slots,
                task_names=sorted(self.tasks),
                labels=lambda: self.labels,
                grace=self.grace,
            ),
            settings=settings,
            metadata=self.app.transport.metadata,
            runtime=runtime,
            outbox=outbox,
            lifecycle=life,
        )

        def forgotten() -> None:  # from the heartbeat thread: the engine declared us dead
            loop.call_soon_threadsafe(life.reconnect.set)

        def drain() -> None:  # from the heartbeat thread: an operator drained this worker
            log.warning("worker %s: asked by the engine to drain; stopping", self.name)
            loop.call_soon_threadsafe(life.stopping.set)

        heartbeat = Heartbeat(
            settings, self.app.transport.metadata, self.worker_id, forgotten, on_drain=drain
        )
        heartbeat.start()
        if self.capture_logging:
            install_capture()
        if self.health_port is not None:
            self.health = HealthServer(
                host=self.health_host,
                port=self.health_port,
                max_loop_block_s=self.max_loop_block_s,
                worker=self.name,
                stats=runtime.stats,
                gauges=lambda: Gauges(
                    self.slots + self.durable_slots,
                    len(runtime.running),
                    runtime.in_threads,
                    life.connected.is_set(),
                ),
            )
            self.health.start()
        helpers: list[asyncio.Task[None]] = [warm_in_background(self.executors)]
        if any(isinstance(t, DurableTask) for t in self.tasks.values()):
            helpers.append(
                asyncio.create_task(runtime.evictor.run(), name=f"stoker-evictor-{self.name}")
            )
        try:
            await session.run()
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            heartbeat.stop()
            if self.health is not None:
                await self.health.stop()
            runtime.shutdown()
            if self.capture_logging:
                uninstall_capture()

    def update_labels(self, labels: dict[str, str | int]) -> None:
        """Replaces the worker's labels; the scheduler uses the new ones from now on."""
        self.labels = _check_labels(self.name, labels)
        if self._outbox is not None and self._loop is not None:
            msg = pb.WorkerMessage(labels=pb.WorkerLabels(labels=json.dumps(self.labels).encode()))
            self._loop.call_soon_threadsafe(self._outbox.put_control, msg)


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


__all__ = ["Worker"]
