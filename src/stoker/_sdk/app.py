"""The :class:`Stoker` application object: declares tasks and workflows (its registry),
runs tasks known by name, builds workers, and owns the connection to the engine.

The connection is lazy: :class:`~stoker._sdk.transport.Transport` (the channels) is made
from the settings on the first call, and ``close()`` closes it (the next call reopens).
Everything the app's tasks, workflows, run references, ``app.runs`` and ``app.events``
send goes through ``app.connection`` (:mod:`stoker._sdk.calls`), and through the
interceptors given to ``Stoker(interceptors=[...])``."""

from __future__ import annotations

import builtins
import inspect
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, Unpack, overload

import pydantic_core
from pydantic import BaseModel

from stoker._core.wire import DURATION_MS
from stoker._proto import admin_pb2 as apb
from stoker._proto import engine_pb2 as pb
from stoker._sdk.calls import Connection, InterceptorFactory
from stoker._sdk.crons import Crons, TaskRegistry, WorkflowRegistry
from stoker._sdk.durable import DEFAULT_EVICTION, DurableTask, Eviction, Step, StepOptions
from stoker._sdk.events import Events, Filters
from stoker._sdk.execution import ExecutorName
from stoker._sdk.refs import RunRef
from stoker._sdk.runs import Runs
from stoker._sdk.schedules import Schedules
from stoker._sdk.task import (
    RunOptions,
    Task,
    TaskArgs,
    TaskFn,
    TaskOptions,
    inbox_run,
    trigger_item,
)
from stoker._sdk.transactional import check_connection, enqueue
from stoker._sdk.transport import Transport
from stoker._sdk.webhooks import Webhooks
from stoker._sdk.workers import Workers, at
from stoker._sdk.workflow import Workflow
from stoker.config import ClientSettings, parse_duration
from stoker.errors import DeclarationError, PayloadTooLargeError

if TYPE_CHECKING:
    from stoker._sdk.http_worker import HttpWorker
    from stoker._sdk.worker import Worker

F = TypeVar("F", bound=TaskFn)


def default_worker_name() -> str:
    """``host-pid``: unique among the workers of one machine, and says where each runs."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _expand(items: Sequence[Task[Any, Any] | Workflow[Any]]) -> list[Task[Any, Any]]:
    """The tasks a worker serves: each task, and every step of each workflow."""
    tasks: list[Task[Any, Any]] = []
    for item in items:
        if isinstance(item, Workflow):
            tasks.extend(item.steps.values())
        elif isinstance(item, Task):
            tasks.append(item)
        else:
            raise DeclarationError(
                f"worker tasks=: expected tasks and workflows, got {type(item).__name__} {item!r}"
            )
    return tasks


class Stoker:
    """A Stoker application: its tasks and its connection to the engine.

    ``address`` and ``token`` default to ``STOKER_ADDRESS``/``STOKER_TOKEN`` and then to the
    profile ``stoker lite`` writes; nothing connects until the first call, so declaring
    tasks needs no engine. The ``tls*`` arguments override ``STOKER_TLS*`` (README
    "Security"): TLS with the system's roots (``tls=True``), a private CA, a client
    certificate for mutual TLS. ``interceptors`` wrap every call the app makes to the
    engine (README "Interceptors"; :class:`~stoker._sdk.calls.Interceptor`).
    """

    def __init__(
        self,
        address: str | None = None,
        token: str | None = None,
        *,
        max_payload_bytes: int | None = None,
        connect_timeout: float | None = None,
        tls: bool | None = None,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        tls_server_name: str | None = None,
        interceptors: Sequence[InterceptorFactory] = (),
    ) -> None:
        self._overrides: dict[str, Any] = {
            "address": address,
            "token": token,
            "max_payload_bytes": max_payload_bytes,
            "connect_timeout_s": connect_timeout,
            "tls": tls,
            "tls_ca_file": tls_ca_file,
            "tls_cert_file": tls_cert_file,
            "tls_key_file": tls_key_file,
            "tls_server_name": tls_server_name,
        }
        self._transport: Transport | None = None
        self._lock = threading.Lock()
        self.connection = Connection(
            lambda: self.transport,
            lambda: self.max_payload_bytes,
            interceptors,
            schema_name=lambda: self.settings.schema_name,
        )
        """The calls to the engine (through the interceptors) and what the engine knows."""
        self.tasks = TaskRegistry(self.connection)
        """The declared tasks by name; ``app.tasks.pause(name)`` / ``resume(name)``."""
        self.crons = Crons(self.connection)
        """The tenant's crons: ``list``, ``get``, ``create``, ``update``, ``delete``,
        ``trigger_now``, ``backfill``."""
        self.rate_limits = RateLimits(self.connection)
        """Static rate limits: ``app.rate_limits.put("openai", limit=100, duration="minute")``."""
        self.workflows = WorkflowRegistry(self.connection)
        """The declared workflows by name; ``app.workflows.pause(name)`` / ``resume``."""
        self.runs = Runs(self.connection)
        """Runs: ``app.runs.list()``, ``get(run_id)``, ``cancel(run_id)``, ``replay``,
        ``start_bulk_cancel(...)`` (a bulk operation's handle)."""
        self.workers = Workers(self.connection)
        """The tenant's workers: ``app.workers.list()``, ``get``, ``pause``, ``resume``."""
        self.events = Events(self.connection)
        """User events: ``app.events.push("payment:settled", {"order_id": 7})``,
        ``bulk_push``, ``list``, ``get``, ``replay``."""
        self.filters = Filters(self.connection)
        """Filters of event subscribers: ``app.filters.create(task, expression=...)``,
        ``list``, ``get``, ``update``, ``delete``."""
        self.schedules = Schedules(
            self.connection, lambda name: self.workflows.get(name) or self.tasks.get(name)
        )
        """Scheduled runs: ``app.schedules.list()``, ``get``, ``update``, ``delete``."""
        self.webhooks = Webhooks(self.connection)
        self.dependency_overrides: dict[Callable[..., Any], Callable[..., Any]] = {}
        """Replacements of task dependencies' providers, ``{provider: replacement}``, used
        by this app's workers and ``mock_run`` (README "Lifespan and dependencies")."""
        """Incoming webhooks: ``app.webhooks.create(name, auth=..., event_key_expression=...)``,
        ``list``, ``get``, ``update``, ``delete``."""

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
            transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    # -- declaring ----------------------------------------------------------------------

    @overload
    def task(self, fn: F, /) -> Task[Any, Any]: ...

    @overload
    def task(
        self, fn: None = None, /, *, name: str | None = None, **options: Unpack[TaskArgs]
    ) -> Callable[[F], Task[Any, Any]]: ...

    def task(
        self, fn: F | None = None, /, *, name: str | None = None, **options: Unpack[TaskArgs]
    ) -> Task[Any, Any] | Callable[[F], Task[Any, Any]]:
        """Declares a task; use bare (``@app.task``) or with options (``@app.task(retries=3)``).

        The function takes ``(input, ctx)``; ``input`` annotated with a pydantic model is
        validated before a run is enqueued. The options are those of :class:`TaskArgs`;
        every one is checked here, so a mistake fails at import, not on a worker.
        """
        try:
            declared_options = TaskOptions(**options)
        except TypeError as exc:
            raise DeclarationError(f"@app.task: {exc}") from None

        def declare(f: F) -> Task[Any, Any]:
            task_name = name or getattr(f, "__name__", "")
            if not task_name:
                raise DeclarationError("a task needs a name: pass name=...")
            if task_name in self.tasks:
                raise DeclarationError(
                    f"a task named {task_name!r} is already declared on this app"
                )
            declared: Task[Any, Any] = Task(self, f, task_name, declared_options)
            self.tasks[task_name] = declared
            return declared

        return declare(fn) if fn is not None else declare

    @overload
    def durable_task(self, fn: F, /) -> Task[Any, Any]: ...

    @overload
    def durable_task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        eviction: Eviction | None = DEFAULT_EVICTION,
        timeout: str | float | timedelta | None = None,
        **options: Unpack[TaskArgs],
    ) -> Callable[[F], Task[Any, Any]]: ...

    def durable_task(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        eviction: Eviction | None = DEFAULT_EVICTION,
        timeout: str | float | timedelta | None = None,
        **options: Unpack[TaskArgs],
    ) -> Task[Any, Any] | Callable[[F], Task[Any, Any]]:
        """Declares a durable task (docs/durable.md): an ``async def`` taking ``(input,
        ctx: DurableContext)`` whose ``ctx.step``, ``ctx.sleep`` and ``ctx.sleep_until``
        calls are recorded, so that after a crash, a retry or an eviction the body replays
        and continues where it stopped. It runs in the workers' durable slot pool
        (``durable_slots``).

        Options are those of ``@app.task``, plus ``eviction`` (an :class:`Eviction`, by
        default ``Eviction(ttl="30s", on_capacity=True)``; ``None``: never evicted) and
        ``timeout``, the bound on the run's whole wall-clock life, evictions included
        (default: none). ``execution_timeout`` defaults to none here and counts only time
        spent running between durable calls, never time blocked.
        """
        if "durable" in options:
            raise DeclarationError("@app.durable_task: durable= is implied; leave it out")
        if eviction is not None and not isinstance(eviction, Eviction):
            raise DeclarationError(
                f"@app.durable_task: eviction takes an Eviction(...) or None, got {eviction!r}"
            )
        run_timeout = parse_duration(timeout, "@app.durable_task: timeout")
        if run_timeout is not None and run_timeout.total_seconds() <= 0:
            raise DeclarationError(f"@app.durable_task: timeout must be > 0, got {timeout!r}")
        options = {"execution_timeout": None, **options, "durable": True}
        try:
            declared_options = TaskOptions(**options)
        except TypeError as exc:
            raise DeclarationError(f"@app.durable_task: {exc}") from None

        def declare(f: F) -> Task[Any, Any]:
            task_name = name or getattr(f, "__name__", "")
            if not task_name:
                raise DeclarationError("a durable task needs a name: pass name=...")
            if not inspect.iscoroutinefunction(f):
                raise DeclarationError(
                    f"durable task {task_name!r}: the function must be async (async def); "
                    "a durable body awaits its steps and sleeps"
                )
            if task_name in self.tasks:
                raise DeclarationError(
                    f"a task named {task_name!r} is already declared on this app"
                )
            declared = DurableTask(self, f, task_name, declared_options)
            declared.eviction = eviction
            if run_timeout is not None:
                declared.timeout_ms = max(1, int(run_timeout.total_seconds() * 1000))
            self.tasks[task_name] = declared
            return declared

        return declare(fn) if fn is not None else declare

    @overload
    def step(self, fn: Callable[..., Any], /) -> Step[Any]: ...

    @overload
    def step(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        backoff: float = 1.0,
        timeout: float | timedelta | None = None,
    ) -> Callable[[Callable[..., Any]], Step[Any]]: ...

    def step(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        retries: int = 0,
        backoff: float = 1.0,
        timeout: float | timedelta | None = None,
    ) -> Step[Any] | Callable[[Callable[..., Any]], Step[Any]]:
        """Declares a memoized step (docs/durable.md): called from a durable task (``await
        charge(order)``), it runs once and its result — or, after its ``retries`` (waiting
        ``backoff`` seconds, doubling) and per-try ``timeout``, its failure — is recorded,
        so a replay gets it back without running it again; called anywhere else it is a
        plain call. The function may be sync (run in a thread) or async; its result must
        be JSON. ``name`` (default: the function's name) identifies it in the log."""
        try:
            options = StepOptions.checked(retries, backoff, timeout, "@app.step")
        except ValueError as exc:
            raise DeclarationError(str(exc)) from None

        def declare(f: Callable[..., Any]) -> Step[Any]:
            if not callable(f):
                raise DeclarationError(f"@app.step: expected a function, got {type(f).__name__}")
            step_name = name or getattr(f, "__name__", "")
            if not step_name:
                raise DeclarationError("a step needs a name: pass name=...")
            return Step(f, step_name, options)

        return declare(fn) if fn is not None else declare

    def workflow(
        self,
        name: str,
        *,
        input_validator: type[BaseModel] | None = None,
        **defaults: Unpack[TaskArgs],
    ) -> Workflow[Any]:
        """Declares a workflow (a DAG of steps declared with ``@wf.task(parents=[...])``).

        ``input_validator`` is the pydantic model of the run's input; ``defaults`` are
        options of ``@app.task`` (retries, timeouts, priority, concurrency, ...) for the
        steps that do not set their own. ``on_crons`` / ``cron_input`` / ``cron_timezone``
        start the workflow on a clock, as on a task (crons named ``"<workflow>:<expr>"``);
        ``on_events`` / ``default_filters`` start it on events (README "Events").
        """
        if name in self.workflows:
            raise DeclarationError(f"a workflow named {name!r} is already declared on this app")
        # The cron options start the workflow, they are not defaults of its steps.
        on_crons = defaults.pop("on_crons", ())
        cron_input = defaults.pop("cron_input", None)
        cron_timezone = defaults.pop("cron_timezone", None)
        # So do event subscriptions and their filters.
        on_events = defaults.pop("on_events", ())
        default_filters = defaults.pop("default_filters", ())
        wf: Workflow[Any] = Workflow(
            self,
            name,
            input_validator,
            defaults,
            on_crons=on_crons,
            cron_input=cron_input,
            cron_timezone=cron_timezone,
            on_events=on_events,
            default_filters=default_filters,
        )
        self.workflows[name] = wf
        return wf

    def worker(
        self,
        name: str | None = None,
        *,
        slots: int = 100,
        durable_slots: int = 0,
        labels: dict[str, str | int] | None = None,
        tasks: Sequence[Task[Any, Any] | Workflow[Any]] | None = None,
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
    ) -> Worker:
        """A worker that runs ``tasks`` (default: every task of this app).

        ``tasks`` may list tasks and workflows (a workflow stands for all its steps). It
        runs up to ``slots`` slots' worth of tasks at once (a task takes ``slot_cost``
        slots), plus ``durable_slots`` for durable tasks; ``labels`` are matched against the
        tasks' ``desired_worker_labels``. ``name`` defaults to :func:`default_worker_name`.
        On stop, running tasks get ``grace`` seconds to finish; what still runs then is
        handed back to the engine to run elsewhere.

        Logs and streams (README "Logs, streams and run events"): ``log_max_lines``,
        ``log_max_bytes`` and ``log_line_max_bytes`` bound what one attempt logs,
        ``stream_max_bytes`` what it streams (default: ``STOKER_LOG_MAX_LINES`` and so
        on, else 1,000 lines, 1 MiB, 16 KiB and 64 MiB); ``capture_logging=False`` leaves records of
        the ``logging`` module out of the tasks' logs.
        ``health_port``: serve ``/healthz`` (503 once the event loop has been blocked for
        ``max_loop_block_s``), ``/readyz`` (connected to the engine) and ``/metrics`` (the
        worker's own, Prometheus text) on ``health_host:health_port`` (README "Metrics and
        tracing"); 0 picks a free port (``worker.health.port``).
        handed back to the engine to run elsewhere. ``executor`` (``"thread"`` or
        ``"process"``) is where the sync tasks that declare no executor of their own run
        (README "Executors"); by default, the worker's shared thread pool. ``lifespan``
        (an ``@asynccontextmanager`` function) is entered before the worker registers
        and exited after it stopped; what it yields is ``ctx.lifespan`` in every task.
        """
        from stoker._sdk.worker import Worker

        return Worker(
            self,
            name or default_worker_name(),
            slots=slots,
            durable_slots=durable_slots,
            labels=labels,
            tasks=_expand(tasks) if tasks is not None else None,
            grace=grace,
            log_max_lines=log_max_lines,
            log_max_bytes=log_max_bytes,
            log_line_max_bytes=log_line_max_bytes,
            stream_max_bytes=stream_max_bytes,
            capture_logging=capture_logging,
            health_port=health_port,
            health_host=health_host,
            max_loop_block_s=max_loop_block_s,
            executor=executor,
            lifespan=lifespan,
        )

    def http_worker(
        self,
        name: str,
        *,
        url: str,
        secret: str,
        slots: int = 10,
        tasks: Sequence[Task[Any, Any] | Workflow[Any]] | None = None,
        background: Sequence[Task[Any, Any]] = (),
        executor: ExecutorName | None = None,
    ) -> HttpWorker:
        """An HTTP push worker (README "HTTP push workers"): an ASGI app that runs
        ``tasks`` (default: every task of this app) as the engine POSTs them to ``url``.

        The engine sends at most ``slots`` attempts at once and signs each with
        ``secret`` (HMAC-SHA256, at least 16 characters; unsigned, forged or stale
        requests are answered 401). A task answers with its output when it ends; those in
        ``background`` answer 202 at once and report their end through the engine's API.
        Serve the worker with an ASGI server, or mount it in a FastAPI/Starlette app with
        ``lifespan=worker.lifespan``; the endpoint registers when the server starts.
        """
        from stoker._sdk.http_worker import HttpWorker

        chosen = _expand(tasks) if tasks is not None else list(self.tasks.values())
        return HttpWorker(
            self,
            name,
            url=url,
            secret=secret,
            slots=slots,
            tasks=chosen,
            background=background,
            executor=executor,
        )

    # -- talking to the engine ----------------------------------------------------------

    def register(self, tasks: Sequence[Task[Any, Any]] | None = None) -> None:
        """Declares tasks to the engine (done for you on first trigger and by workers)."""
        self.connection.register(list(tasks if tasks is not None else self.tasks.values()))

    async def aio_register(self, tasks: Sequence[Task[Any, Any]] | None = None) -> None:
        await self.connection.aio_register(
            list(tasks if tasks is not None else self.tasks.values())
        )

    # -- runs by name -------------------------------------------------------------------

    def _named_item(self, task_name: str, input: Any, options: RunOptions) -> pb.TriggerItem:
        raw = pydantic_core.to_json(input)
        if len(raw) > self.max_payload_bytes:
            raise PayloadTooLargeError(
                f"task {task_name!r}: input is {len(raw)} bytes, over the limit of "
                f"{self.max_payload_bytes} bytes"
            )
        return trigger_item(task_name, raw, options)

    def run_no_wait(
        self,
        task_name: str,
        input: Any = None,
        *,
        connection: Any = None,
        **options: Unpack[RunOptions],
    ) -> RunRef[Any]:
        """Enqueues a run of a task known by name (it may be declared in another codebase).
        ``connection``: write it in the application's transaction (README "Transactional
        enqueue"; the engine must know the task)."""
        local = self.tasks.get(task_name)
        if local is not None:
            return local.run_no_wait(input, connection=connection, **options)
        if connection is not None:
            kind = check_connection(connection, aio=False, what=f"task {task_name!r}")
            run = inbox_run("task", self._named_item(task_name, input, options))
            enqueue(connection, kind, [run], self.connection.schema_name)
            return RunRef(self.connection, run.run_id, None)
        ids = self.connection.trigger(None, [self._named_item(task_name, input, options)])
        return RunRef(self.connection, ids[0], None, deduplicated=ids.deduplicated[0])

    def run(self, task_name: str, input: Any = None, **options: Unpack[RunOptions]) -> Any:
        """Runs a task known by name and returns its output (as JSON values)."""
        return self.run_no_wait(task_name, input, **options).result()

    async def aio_run(
        self, task_name: str, input: Any = None, **options: Unpack[RunOptions]
    ) -> Any:
        local = self.tasks.get(task_name)
        if local is not None:
            return await local.aio_run(input, **options)
        item = self._named_item(task_name, input, options)
        ids = await self.connection.aio_trigger(None, [item])
        return await RunRef[Any](self.connection, ids[0], None).aio_result()

    def get_run(self, run_id: str) -> RunRef[Any]:
        """A reference to an existing run, to wait for its result."""
        return RunRef(self.connection, run_id, None)


class RateLimits:
    """The tenant's rate limits: ``put`` creates or updates a static one, ``list`` reads
    them all with their use in the current window, ``delete`` removes one."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @staticmethod
    def _request(key: str, limit: int, duration: str | timedelta) -> pb.PutRateLimitRequest:
        if not key:
            raise ValueError("a rate limit needs a key")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"rate limit {key!r}: limit must be a positive int, got {limit!r}")
        if isinstance(duration, str) and duration.lower() in DURATION_MS:
            window_ms = DURATION_MS[duration.lower()]
        else:
            delta = parse_duration(duration, f"rate limit {key!r}: duration")
            window_ms = int(delta.total_seconds() * 1000) if delta else 0
        if window_ms <= 0:
            raise ValueError(f"rate limit {key!r}: duration must be positive")
        return pb.PutRateLimitRequest(key=key, limit=limit, duration_ms=window_ms)

    def put(self, key: str, limit: int, duration: str | timedelta = "minute") -> None:
        """Creates or updates the limit: at most ``limit`` units per ``duration`` ("second",
        "minute", "hour", "day", or a duration such as "10s"), across all workers."""
        self._connection.calls.put_rate_limit(self._request(key, limit, duration))

    async def aio_put(self, key: str, limit: int, duration: str | timedelta = "minute") -> None:
        await self._connection.calls.aio_put_rate_limit(self._request(key, limit, duration))

    def list(self) -> builtins.list[RateLimitInfo]:
        """The tenant's limits, by key (dynamic ones, made by runs that name them, too)."""
        resp = self._connection.calls.list_rate_limits(apb.ListRateLimitsRequest())
        return [_rate_limit(r) for r in resp.items]

    async def aio_list(self) -> builtins.list[RateLimitInfo]:
        resp = await self._connection.calls.aio_list_rate_limits(apb.ListRateLimitsRequest())
        return [_rate_limit(r) for r in resp.items]

    def delete(self, key: str) -> int:
        """Deletes a limit; returns how many queued runs still name it (they wait until a
        limit of that key is put again). NotFoundError for an unknown key."""
        req = apb.DeleteRateLimitRequest(key=key)
        return self._connection.calls.delete_rate_limit(req).waiting_runs

    async def aio_delete(self, key: str) -> int:
        req = apb.DeleteRateLimitRequest(key=key)
        return (await self._connection.calls.aio_delete_rate_limit(req)).waiting_runs


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """A rate limit: at most ``limit`` units start in any ``duration_s`` window; ``used``
    started in the window ending now; ``dynamic``: made by runs that name it."""

    key: str
    limit: int
    duration_s: float
    dynamic: bool
    used: int
    updated_at: datetime | None


def _rate_limit(r: apb.RateLimitInfo) -> RateLimitInfo:
    return RateLimitInfo(r.key, r.limit, r.duration_s, r.dynamic, r.used, at(r.updated_at_ms))
