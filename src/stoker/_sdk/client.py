"""The :class:`Stoker` application object: declares tasks, triggers runs, builds workers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload

from stoker._proto import engine_pb2 as pb
from stoker._sdk.task import RunRef, Task, TaskFn, TaskOptions
from stoker._sdk.transport import Transport
from stoker.config import ClientSettings
from stoker.errors import DeclarationError

if TYPE_CHECKING:
    from stoker._sdk.worker import Worker

F = TypeVar("F", bound=TaskFn)


class Stoker:
    """A Stoker application: its tasks and its connection to the engine.

    ``address`` and ``token`` default to ``STOKER_ADDRESS``/``STOKER_TOKEN`` and then to the
    profile ``stoker lite`` writes; nothing connects until the first call, so declaring
    tasks needs no engine.
    """

    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        *,
        max_payload_bytes: int | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self._overrides: dict[str, Any] = {
            "address": address,
            "token": token,
            "max_payload_bytes": max_payload_bytes,
            "connect_timeout_s": connect_timeout,
        }
        self.tasks: dict[str, Task[Any, Any]] = {}
        self._transport: Transport | None = None
        self._registered: set[str] = set()
        self._lock = threading.Lock()

    # -- configuration ------------------------------------------------------------------

    @property
    def settings(self) -> ClientSettings:
        return self.transport.settings

    @property
    def transport(self) -> Transport:
        with self._lock:
            if self._transport is None:
                self._transport = Transport(ClientSettings.load(**self._overrides))
            return self._transport

    @property
    def max_payload_bytes(self) -> int:
        given = self._overrides.get("max_payload_bytes")
        return int(given) if given else self.settings.max_payload_bytes

    def close(self) -> None:
        """Closes the connection to the engine (it reopens on the next call)."""
        with self._lock:
            if self._transport is not None:
                self._transport.close()
            self._transport = None

    # -- declaring ----------------------------------------------------------------------

    @overload
    def task(self, fn: F, /) -> Task[Any, Any]: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        backoff_factor: float | None = None,
        backoff_max_seconds: float = 3600.0,
        execution_timeout: str | float | timedelta | None = "60s",
        schedule_timeout: str | float | timedelta | None = "5m",
        priority: int = 1,
    ) -> Callable[[F], Task[Any, Any]]: ...

    def task(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        backoff_factor: float | None = None,
        backoff_max_seconds: float = 3600.0,
        execution_timeout: str | float | timedelta | None = "60s",
        schedule_timeout: str | float | timedelta | None = "5m",
        priority: int = 1,
    ) -> Task[Any, Any] | Callable[[F], Task[Any, Any]]:
        """Declares a task; use bare (``@app.task``) or with options (``@app.task(retries=3)``).

        The function takes ``(input, ctx)``; ``input`` annotated with a pydantic model is
        validated before a run is enqueued. ``execution_timeout``/``schedule_timeout`` take
        ``"30s"``, ``"5m"``, seconds or a timedelta (None: no limit). With ``backoff_factor``
        the n-th retry waits ``backoff_factor ** (n - 1)`` seconds, capped at
        ``backoff_max_seconds``; without it retries start at once.
        """
        options = TaskOptions(
            retries=retries,
            backoff_factor=backoff_factor,
            backoff_max_seconds=backoff_max_seconds,
            execution_timeout=execution_timeout,
            schedule_timeout=schedule_timeout,
            priority=priority,
        )

        def declare(f: F) -> Task[Any, Any]:
            task_name = name or getattr(f, "__name__", "")
            if not task_name:
                raise DeclarationError("a task needs a name: pass name=...")
            if task_name in self.tasks:
                raise DeclarationError(
                    f"a task named {task_name!r} is already declared on this app"
                )
            declared: Task[Any, Any] = Task(self, f, task_name, options)
            self.tasks[task_name] = declared
            return declared

        return declare(fn) if fn is not None else declare

    def worker(
        self,
        name: str = "worker",
        *,
        slots: int = 100,
        tasks: Sequence[Task[Any, Any]] | None = None,
    ) -> Worker:
        """A worker that runs ``tasks`` (default: every task of this app) with ``slots`` at once."""
        from stoker._sdk.worker import Worker

        return Worker(self, name, slots=slots, tasks=list(tasks) if tasks is not None else None)

    # -- talking to the engine ----------------------------------------------------------

    def _definitions(self, tasks: Sequence[Task[Any, Any]]) -> pb.RegisterTasksRequest:
        return pb.RegisterTasksRequest(
            tasks=[
                pb.TaskDefinition(name=t.name, config=t.config.model_dump_json().encode())
                for t in tasks
            ]
        )

    def register(self, tasks: Sequence[Task[Any, Any]] | None = None) -> None:
        """Declares tasks to the engine (done for you on first trigger and by workers)."""
        todo = list(tasks if tasks is not None else self.tasks.values())
        self.transport.call(lambda s: s.RegisterTasks, self._definitions(todo))
        self._registered.update(t.name for t in todo)

    async def aio_register(self, tasks: Sequence[Task[Any, Any]] | None = None) -> None:
        todo = list(tasks if tasks is not None else self.tasks.values())
        await self.transport.acall(lambda s: s.RegisterTasks, self._definitions(todo))
        self._registered.update(t.name for t in todo)

    def _trigger(
        self, task: Task[Any, Any] | None, items: list[pb.TriggerItem]
    ) -> list[RunRef[Any]]:
        if task is not None and task.name not in self._registered:
            self.register([task])
        resp = self.transport.call(lambda s: s.Trigger, pb.TriggerRequest(items=items))
        return [RunRef(self, run_id, task) for run_id in resp.run_ids]

    async def _atrigger(
        self, task: Task[Any, Any] | None, items: list[pb.TriggerItem]
    ) -> list[RunRef[Any]]:
        if task is not None and task.name not in self._registered:
            await self.aio_register([task])
        resp = await self.transport.acall(lambda s: s.Trigger, pb.TriggerRequest(items=items))
        return [RunRef(self, run_id, task) for run_id in resp.run_ids]

    def _await_runs(self, run_ids: list[str], wait_ms: int) -> list[pb.RunResult]:
        req = pb.AwaitRunsRequest(run_ids=run_ids, timeout_ms=wait_ms)
        resp = self.transport.call(lambda s: s.AwaitRuns, req, timeout=wait_ms / 1000 + 30)
        return list(resp.results)

    async def _aawait_runs(self, run_ids: list[str], wait_ms: int) -> list[pb.RunResult]:
        req = pb.AwaitRunsRequest(run_ids=run_ids, timeout_ms=wait_ms)
        resp = await self.transport.acall(lambda s: s.AwaitRuns, req, timeout=wait_ms / 1000 + 30)
        return list(resp.results)

    # -- runs by name -------------------------------------------------------------------

    def run_no_wait(
        self,
        task_name: str,
        input: Any = None,
        *,
        additional_metadata: dict[str, Any] | None = None,
    ) -> RunRef[Any]:
        """Enqueues a run of a task known only by name (declared in another codebase)."""
        local = self.tasks.get(task_name)
        if local is not None:
            return local.run_no_wait(input, additional_metadata=additional_metadata)
        item = pb.TriggerItem(
            task_name=task_name,
            input=_json(input),
            additional_metadata=_json(additional_metadata or {}),
        )
        return self._trigger(None, [item])[0]

    def run(
        self,
        task_name: str,
        input: Any = None,
        *,
        additional_metadata: dict[str, Any] | None = None,
    ) -> Any:
        """Runs a task known only by name and returns its output (as JSON values)."""
        return self.run_no_wait(task_name, input, additional_metadata=additional_metadata).result()

    async def aio_run(self, task_name: str, input: Any = None) -> Any:
        local = self.tasks.get(task_name)
        if local is not None:
            return await local.aio_run(input)
        refs = await self._atrigger(
            None,
            [pb.TriggerItem(task_name=task_name, input=_json(input), additional_metadata=b"{}")],
        )
        return await refs[0].aio_result()

    def get_run(self, run_id: str) -> RunRef[Any]:
        """A reference to an existing run, to wait for its result."""
        return RunRef(self, run_id, None)


def _json(value: Any) -> bytes:
    import pydantic_core

    return pydantic_core.to_json(value)
