"""Where a task's function runs on a worker: its executor.

* no executor (the default): an ``async def`` runs on the worker's event loop, a sync
  function in the worker's shared thread pool;
* ``executor="thread"``: a sync function runs in a thread pool of its own task type,
  bounded by how many attempts of it fit in the worker's slots, so one task type whose
  calls hang (a sync call cannot be interrupted; its thread stays busy after a timeout)
  cannot take every thread from the others;
* ``executor="process"``: a sync function runs in one of the worker's subprocesses
  (:mod:`.procpool`), for CPU-bound work, with cancellation that really stops it.

``@app.task(executor=...)`` sets a task's executor; ``app.worker(executor=...)`` sets
the default for the worker's sync tasks that set none. Both are checked when declared
(:mod:`stoker._sdk.execution`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from stoker._sdk.execution import ExecutorName, Target, process_target
from stoker._sdk.worker.procpool import ProcessPool
from stoker.errors import DeclarationError

if TYPE_CHECKING:
    from stoker._sdk.task import Task


class Executors:
    """A worker's executors: which one each task uses, and the pools behind them."""

    def __init__(
        self,
        name: str,
        tasks: Iterable[Task[Any, Any]],
        slots: int,
        default: ExecutorName | None,
    ) -> None:
        self.name = name
        self.slots = slots
        self.kinds: dict[str, ExecutorName | None] = {}
        self.targets: dict[str, Target] = {}
        self._threads: dict[str, ThreadPoolExecutor] = {}
        for task in tasks:
            kind = executor_of(task, default)
            self.kinds[task.name] = kind
            if kind == "process":
                self.targets[task.name] = process_target(task.fn, f"task {task.name!r}")
                if getattr(task, "dependencies", None):
                    raise DeclarationError(
                        f"worker {name!r}: task {task.name!r} takes dependencies, so it "
                        "cannot run in a subprocess (the worker's executor='process'); "
                        "give it executor='thread'"
                    )
        self.processes: ProcessPool | None = None
        if self.targets:
            modules = {t.module for t in self.targets.values()}
            self.processes = ProcessPool(name, slots, modules)

    def kind(self, task: Task[Any, Any]) -> ExecutorName | None:
        return self.kinds.get(task.name)

    def thread_pool(self, task: Task[Any, Any]) -> ThreadPoolExecutor:
        """The task's own thread pool (``executor="thread"``), made on first use."""
        pool = self._threads.get(task.name)
        if pool is None:
            size = max(1, self.slots // max(1, task.config.slot_cost))
            pool = ThreadPoolExecutor(size, thread_name_prefix=f"stoker-{self.name}-{task.name}")
            self._threads[task.name] = pool
        return pool

    async def start(self) -> None:
        """Starts some subprocesses ahead (up to the cores, at most the slots)."""
        if self.processes is not None:
            await self.processes.warm(min(self.slots, os.cpu_count() or 1))

    def shutdown(self) -> None:
        """Kills the subprocesses and lets go of the task thread pools without waiting."""
        if self.processes is not None:
            self.processes.close()
        for pool in self._threads.values():
            pool.shutdown(wait=False, cancel_futures=True)


def executor_of(task: Task[Any, Any], default: ExecutorName | None) -> ExecutorName | None:
    """The executor ``task`` runs on, given the worker's default for sync tasks."""
    own: ExecutorName | None = getattr(task, "executor", None)
    if own is not None:
        return own
    if default is None or task.is_async or task.config.durable:
        return None
    return default


def warm_in_background(executors: Executors) -> asyncio.Task[None]:
    """Starts the warm-up without holding the worker's start."""
    return asyncio.ensure_future(executors.start())
