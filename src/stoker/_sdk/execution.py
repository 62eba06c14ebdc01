"""Executor names and what they require, checked when a task or worker is declared (the
runtime side is :mod:`stoker._sdk.worker.executors`).

An unknown name, an ``async def`` or durable task with an executor, or a process task
whose function a subprocess could not import by name is a :class:`DeclarationError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from stoker.errors import DeclarationError


@dataclass(frozen=True, slots=True)
class Target:
    """Where a subprocess finds a task: its module and qualified name."""

    module: str
    qualname: str


ExecutorName = Literal["thread", "process"]
EXECUTORS: tuple[str, ...] = ("thread", "process")


def check_executor(value: Any, what: str) -> ExecutorName | None:
    """An executor name, checked: None, "thread" or "process"."""
    if value is None or value in EXECUTORS:
        return value  # type: ignore[no-any-return]
    raise DeclarationError(
        f"{what}: unknown executor {value!r}; choose 'thread' (a thread pool of the task's "
        "own) or 'process' (a pool of subprocesses, for CPU-bound sync tasks), or leave "
        "it out (async functions run on the worker's event loop, sync ones in its "
        "shared thread pool)"
    )


def process_target(fn: Callable[..., Any], what: str) -> Target:
    """Where a subprocess imports ``fn`` from; DeclarationError when it cannot."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise DeclarationError(
            f"{what}: executor='process' needs a function declared at the top level of a "
            f"module (a subprocess imports it by name); {qualname or fn!r} is not"
        )
    return Target(module, qualname)


def check_task_executor(
    executor: Any, fn: Callable[..., Any], *, name: str, is_async: bool, durable: bool
) -> ExecutorName | None:
    """A task's ``executor=`` checked at declaration."""
    what = f"task {name!r}"
    chosen = check_executor(executor, what)
    if chosen is None:
        return None
    if durable:
        raise DeclarationError(
            f"{what}: a durable task runs on the worker's event loop; leave executor= out"
        )
    if is_async:
        raise DeclarationError(
            f"{what}: executor={chosen!r} runs sync functions; an async def task runs on the "
            "worker's event loop (make the function sync, or leave executor= out)"
        )
    if chosen == "process":
        process_target(fn, what)
    return chosen
