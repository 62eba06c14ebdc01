"""Workflows: DAGs of tasks declared with ``app.workflow(name)`` and ``@wf.task(...)``.

A step is an ordinary :class:`~stoker.Task` (registered as ``"<workflow>:<step>"``, so any
worker of the app runs it) that also knows its workflow, step name and parents. The whole
shape is checked as it is declared: unknown or foreign parents, duplicate names, cycles,
conditions naming a step that is not a parent, invalid CEL. Running a workflow returns the
outputs of its completed steps keyed by step name.
"""

from __future__ import annotations

import inspect
import json
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Unpack, overload

from pydantic import BaseModel, ValidationError

from stoker._core.dag import Role, StepSpec, WorkflowSpec
from stoker._core.wire import CronSpec, checked_json, message_limit, split_batches
from stoker._proto import schedules_pb2 as spb
from stoker._proto import workflows_pb2 as wpb
from stoker._sdk.calls import request_key
from stoker._sdk.children import ChildSpec, aio_spawn, spawn
from stoker._sdk.conditions import Condition, OrGroup, condition_specs, parents_in
from stoker._sdk.context import Context, current_context
from stoker._sdk.crons import Cron
from stoker._sdk.durable import DurableTask
from stoker._sdk.refs import RunRef
from stoker._sdk.schedules import ScheduledRun, When, schedule_item
from stoker._sdk.task import (
    DefaultFilter,
    RunOptions,
    Task,
    TaskArgs,
    TaskFn,
    TaskOptions,
    cron_specs,
    event_patterns,
    filter_specs,
    recording_context,
    refuse_blocking,
    trigger_item,
)
from stoker._sdk.transactional import InboxRun, aio_enqueue, check_connection, enqueue, new_run_id
from stoker.errors import DeclarationError

if TYPE_CHECKING:
    from stoker._sdk.app import Stoker

I = TypeVar("I")  # noqa: E741 - the workflow's input type
F = TypeVar("F", bound=TaskFn)

Conditions = Sequence[Condition | OrGroup]


class WorkflowTask(Task[Any, Any]):
    """A step of a workflow. Run the workflow, not the step: its ``run`` forms raise."""

    def __init__(
        self,
        app: Stoker,
        fn: TaskFn,
        workflow: Workflow[Any],
        step: str,
        options: TaskOptions,
        spec: StepSpec,
    ) -> None:
        super().__init__(app, fn, spec.task_name, options)
        self.workflow = workflow
        self.step = step
        self.spec = spec

    def __repr__(self) -> str:
        return f"<WorkflowTask {self.name}>"

    def _refuse(self) -> TypeError:
        return TypeError(
            f"{self.name!r} is a step of workflow {self.workflow.name!r}; run the workflow "
            f"(wf.run(...)) instead of one of its steps"
        )

    def run_no_wait(
        self, input: Any, *, connection: Any = None, **options: Unpack[RunOptions]
    ) -> RunRef[Any]:
        raise self._refuse()

    async def aio_run_no_wait(
        self, input: Any, *, connection: Any = None, **options: Unpack[RunOptions]
    ) -> RunRef[Any]:
        raise self._refuse()

    def run_many(
        self,
        inputs: Sequence[Any],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        connection: Any = None,
        **options: Unpack[RunOptions],
    ) -> list[RunRef[Any]]:
        raise self._refuse()

    async def aio_run_many(
        self,
        inputs: Sequence[Any],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        connection: Any = None,
        **options: Unpack[RunOptions],
    ) -> list[RunRef[Any]]:
        raise self._refuse()

    def schedule(
        self, at: When, input: Any, *, strict: bool = False, **options: Unpack[RunOptions]
    ) -> ScheduledRun:
        raise self._refuse()

    def schedule_many(
        self,
        runs: Sequence[tuple[When, Any]],
        *,
        strict: bool = False,
        **options: Unpack[RunOptions],
    ) -> list[ScheduledRun]:
        raise self._refuse()

    async def aio_schedule_many(
        self,
        runs: Sequence[tuple[When, Any]],
        *,
        strict: bool = False,
        **options: Unpack[RunOptions],
    ) -> list[ScheduledRun]:
        raise self._refuse()

    async def aio_schedule(
        self, at: When, input: Any, *, strict: bool = False, **options: Unpack[RunOptions]
    ) -> ScheduledRun:
        raise self._refuse()


class DurableWorkflowTask(WorkflowTask, DurableTask):
    """A durable step of a workflow (``@wf.durable_task``): its body gets a
    :class:`~stoker.DurableContext`, and its log works as a durable task's."""

    def __repr__(self) -> str:
        return f"<DurableWorkflowTask {self.name}>"


class Workflow(Generic[I]):
    """A workflow: declare steps with :meth:`task`, handlers with :meth:`on_failure_task` and
    :meth:`on_success_task`, then run it with ``run``/``aio_run``/``run_no_wait``/
    ``run_many``. ``defaults`` (the options of ``@app.task``) apply to every step that does
    not set its own."""

    def __init__(
        self,
        app: Stoker,
        name: str,
        input_validator: type[BaseModel] | None = None,
        defaults: TaskArgs | None = None,
        *,
        on_crons: Sequence[str | Cron] = (),
        cron_input: Any = None,
        cron_timezone: str | None = None,
        on_events: Sequence[str] = (),
        default_filters: Sequence[DefaultFilter] = (),
    ) -> None:
        if not name or len(name) > 150 or ":" in name:
            raise DeclarationError(
                f"workflow name {name!r} must be 1 to 150 characters without ':'"
            )
        self.app = app
        self.name = name
        self.input_validator = input_validator
        self.defaults: dict[str, Any] = dict(defaults or {})
        try:
            TaskOptions(**self.defaults)
        except TypeError as exc:
            raise DeclarationError(f"workflow {name!r}: {exc}") from None
        self.steps: dict[str, WorkflowTask] = {}
        self._registered = False
        what = f"workflow {name!r}"
        self.crons: list[CronSpec] = []
        if on_crons:
            try:
                raw = self.encode_input(cron_input if cron_input is not None else {}).decode()
            except (ValidationError, ValueError) as exc:
                raise DeclarationError(f"{what}: cron_input does not fit: {exc}") from None
            self.crons = [
                c.model_copy(update={"input_json": raw})
                for c in cron_specs(on_crons, cron_timezone, what)
            ]
        elif cron_input is not None or cron_timezone is not None:
            raise DeclarationError(f"{what}: cron_input and cron_timezone need on_crons")
        self.on_events = event_patterns(on_events, what)
        self.default_filters = filter_specs(default_filters, what)

    def __repr__(self) -> str:
        return f"<Workflow {self.name}>"

    # -- declaring ----------------------------------------------------------------------

    @overload
    def task(self, fn: F, /) -> WorkflowTask: ...

    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        parents: Sequence[Task[Any, Any]] = (),
        wait_for: Conditions = (),
        skip_if: Conditions = (),
        cancel_if: Conditions = (),
        **options: Unpack[TaskArgs],
    ) -> Callable[[F], WorkflowTask]: ...

    def task(
        self,
        fn: F | None = None,
        /,
        *,
        name: str | None = None,
        parents: Sequence[Task[Any, Any]] = (),
        wait_for: Conditions = (),
        skip_if: Conditions = (),
        cancel_if: Conditions = (),
        **options: Unpack[TaskArgs],
    ) -> WorkflowTask | Callable[[F], WorkflowTask]:
        """Declares a step. It starts once all ``parents`` are done and its conditions
        allow: ``wait_for`` (all must hold), ``skip_if`` (skip it; its children still run),
        ``cancel_if`` (cancel it and everything downstream). Each is a list ANDed together;
        ``or_(...)`` makes an item that holds when any of its conditions does."""

        def declare(f: F) -> WorkflowTask:
            return self._declare(
                f, name, "step", list(parents), wait_for, skip_if, cancel_if, dict(options)
            )

        return declare(fn) if fn is not None else declare

    def durable_task(
        self,
        *,
        name: str | None = None,
        parents: Sequence[Task[Any, Any]] = (),
        wait_for: Conditions = (),
        skip_if: Conditions = (),
        cancel_if: Conditions = (),
        **options: Unpack[TaskArgs],
    ) -> Callable[[F], WorkflowTask]:
        """Declares a durable step (docs/durable.md): like :meth:`task`, but its body is an
        ``async def`` taking ``(input, ctx: DurableContext)`` whose steps, sleeps and child
        runs are recorded and replayed, as in ``@app.durable_task``. It runs in the
        workers' durable slot pool; ``execution_timeout`` defaults to none."""
        if "durable" in options:
            raise DeclarationError(
                f"workflow {self.name!r}: durable_task: durable= is implied; leave it out"
            )

        def declare(f: F) -> WorkflowTask:
            step = name or getattr(f, "__name__", "")
            if not inspect.iscoroutinefunction(f):
                raise DeclarationError(
                    f"workflow {self.name!r}, durable step {step!r}: the function must be "
                    "async (async def); a durable body awaits its steps and sleeps"
                )
            merged = {"execution_timeout": None, **options, "durable": True}
            return self._declare(
                f, name, "step", list(parents), wait_for, skip_if, cancel_if, merged, durable=True
            )

        return declare

    def on_failure_task(
        self, *, name: str | None = None, **options: Unpack[TaskArgs]
    ) -> Callable[[F], WorkflowTask]:
        """Declares the step that runs once every other step is final and one failed; it
        reads the errors from ``ctx.task_run_errors``."""
        return lambda f: self._declare(f, name, "on_failure", [], (), (), (), dict(options))

    def on_success_task(
        self, *, name: str | None = None, **options: Unpack[TaskArgs]
    ) -> Callable[[F], WorkflowTask]:
        """Declares the step that runs once every other step completed."""
        return lambda f: self._declare(f, name, "on_success", [], (), (), (), dict(options))

    def _declare(
        self,
        fn: TaskFn,
        name: str | None,
        role: Role,
        parents: list[Task[Any, Any]],
        wait_for: Conditions,
        skip_if: Conditions,
        cancel_if: Conditions,
        options: dict[str, Any],
        *,
        durable: bool = False,
    ) -> WorkflowTask:
        step = name or getattr(fn, "__name__", "")
        what = f"workflow {self.name!r}, step {step!r}"
        if not step or ":" in step or len(step) > 100:
            raise DeclarationError(f"{what}: a step name must be 1 to 100 characters without ':'")
        if step in self.steps:
            raise DeclarationError(f"{what}: a step named {step!r} is already declared")
        if role != "step" and any(s.spec.role == role for s in self.steps.values()):
            raise DeclarationError(f"{what}: the workflow already has an {role} step")
        parent_names: list[str] = []
        for p in parents:
            if not isinstance(p, WorkflowTask) or p.workflow is not self:
                known = ", ".join(self.steps) or "none"
                raise DeclarationError(
                    f"{what}: parent {p!r} is not a step of this workflow (its steps: {known})"
                )
            if p.spec.role != "step":
                raise DeclarationError(f"{what}: a handler step cannot be a parent")
            if p.step in parent_names:
                raise DeclarationError(f"{what}: parent {p.step!r} is listed twice")
            parent_names.append(p.step)
        for group, items in (
            ("wait_for", wait_for),
            ("skip_if", skip_if),
            ("cancel_if", cancel_if),
        ):
            for p in parents_in(list(items)):
                if not isinstance(p, WorkflowTask) or p.step not in parent_names:
                    raise DeclarationError(
                        f"{what}: {group} has a ParentCondition on {p!r}, which is not one of "
                        f"its parents ({', '.join(parent_names) or 'none'})"
                    )
        spec = StepSpec(
            name=step,
            task_name=f"{self.name}:{step}",
            role=role,
            parents=parent_names,
            wait_for=condition_specs(list(wait_for), f"{what}: wait_for"),
            skip_if=condition_specs(list(skip_if), f"{what}: skip_if"),
            cancel_if=condition_specs(list(cancel_if), f"{what}: cancel_if"),
        )
        if options.get("on_events") or options.get("default_filters"):
            raise DeclarationError(
                f"{what}: on_events and default_filters belong to the workflow "
                f"(app.workflow({self.name!r}, on_events=[...])), not to a step"
            )
        if spec.task_name in self.app.tasks:
            raise DeclarationError(f"{what}: a task named {spec.task_name!r} already exists")
        merged = {**self.defaults, **options}
        if "executor" not in options and (durable or inspect.iscoroutinefunction(fn)):
            # The workflow's executor is for its sync steps; async ones run on the loop.
            merged.pop("executor", None)
        try:
            task_options = TaskOptions(**merged)
        except TypeError as exc:
            raise DeclarationError(f"{what}: {exc}") from None
        cls = DurableWorkflowTask if durable else WorkflowTask
        declared = cls(self.app, fn, self, step, task_options, spec)
        if (
            self.input_validator is not None
            and declared.input_model is not None
            and declared.input_model is not self.input_validator
        ):
            raise DeclarationError(
                f"{what}: its input is annotated {declared.input_model.__name__}, but the "
                f"workflow's input_validator is {self.input_validator.__name__}"
            )
        if declared.input_model is None and self.input_validator is not None:
            declared.input_model = self.input_validator
        self.steps[step] = declared
        self.app.tasks[spec.task_name] = declared
        self._check_acyclic()
        self._registered = False
        return declared

    def _check_acyclic(self) -> None:
        state: dict[str, int] = {}

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise DeclarationError(
                    f"workflow {self.name!r} has a cycle: {' -> '.join([*path, name])}"
                )
            state[name] = 1
            for p in self.steps[name].spec.parents:
                visit(p, [*path, name])
            state[name] = 2

        for name in self.steps:
            visit(name, [])

    def spec(self) -> WorkflowSpec:
        """The workflow's shape as the engine runs it."""
        if not any(s.spec.role == "step" for s in self.steps.values()):
            raise DeclarationError(f"workflow {self.name!r} has no steps: declare some first")
        return WorkflowSpec(
            steps=[s.spec for s in self.steps.values()],
            crons=self.crons,
            on_events=self.on_events,
            default_filters=self.default_filters,
        )

    # -- registering --------------------------------------------------------------------

    def _definition(self) -> wpb.RegisterWorkflowsRequest:
        steps = list(self.steps.values())
        return wpb.RegisterWorkflowsRequest(
            workflows=[
                wpb.WorkflowDefinition(
                    name=self.name,
                    config=self.spec().model_dump_json().encode(),
                    task_names=[s.name for s in steps],
                    task_configs=[s.definition_config().model_dump_json().encode() for s in steps],
                )
            ]
        )

    def register(self) -> None:
        """Declares the workflow (and its steps) to the engine; done on first run."""
        self.app.connection.calls.register_workflows(self._definition())
        self.app.connection.mark_registered(s.name for s in self.steps.values())
        self._registered = True

    async def aio_register(self) -> None:
        await self.app.connection.calls.aio_register_workflows(self._definition())
        self.app.connection.mark_registered(s.name for s in self.steps.values())
        self._registered = True

    # -- testing ------------------------------------------------------------------------

    def mock_run(
        self,
        input: Any,
        *,
        replace: Mapping[Any, Any] | None = None,
        dependencies: Mapping[Any, Any] | None = None,
        lifespan: Any = None,
        events: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Runs the steps in-process, parents first, without an engine (README "Testing");
        ``replace`` maps steps (or their names) to an output, or to a function run with
        ``(input, ctx)`` instead of the step. Returns the outputs by step name."""
        from stoker._sdk.mocking import mock_run_workflow

        return mock_run_workflow(
            self, input, replace=replace, dependencies=dependencies, lifespan=lifespan,
            events=events,
        )  # fmt: skip

    async def aio_mock_run(
        self,
        input: Any,
        *,
        replace: Mapping[Any, Any] | None = None,
        dependencies: Mapping[Any, Any] | None = None,
        lifespan: Any = None,
        events: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """:meth:`mock_run` from a running event loop."""
        from stoker._sdk.mocking import aio_mock_run_workflow

        return await aio_mock_run_workflow(
            self, input, replace=replace, dependencies=dependencies, lifespan=lifespan,
            events=events,
        )  # fmt: skip

    # -- running ------------------------------------------------------------------------

    def encode_input(self, value: Any) -> bytes:
        """The JSON of a run's input, validated against ``input_validator``."""
        if self.input_validator is not None and not isinstance(value, self.input_validator):
            value = self.input_validator.model_validate(value)
        what = f"workflow {self.name!r}: input"
        if isinstance(value, BaseModel):
            return checked_json(value.model_dump_json().encode(), what)
        import pydantic_core

        return checked_json(pydantic_core.to_json(value), what)

    def decode_output(self, raw: bytes) -> dict[str, Any]:
        """The outputs of the completed steps, by step name, as their return types."""
        outputs = json.loads(raw) if raw else {}
        decoded: dict[str, Any] = {}
        for step, value in outputs.items():
            task = self.steps.get(step)
            decoded[step] = (
                task.decode_output(json.dumps(value).encode()) if task is not None else value
            )
        return decoded

    def _trigger(self, value: Any, options: RunOptions) -> wpb.WorkflowTrigger:
        item = trigger_item(self.name, self.encode_input(value), options)
        return wpb.WorkflowTrigger(
            workflow_name=self.name,
            input=item.input,
            additional_metadata=item.additional_metadata,
            priority=item.priority,
            idempotency_key=item.idempotency_key,
            idempotency_ttl_ms=item.idempotency_ttl_ms,
        )

    def _inbox_runs(
        self,
        connection: Any,
        inputs: Sequence[Any],
        options: RunOptions,
        keys: Sequence[str | None] | None,
        aio: bool,
    ) -> tuple[str, list[InboxRun]]:
        """The connection's kind and the validated runs of a transactional enqueue."""
        kind = check_connection(connection, aio=aio, what=f"workflow {self.name!r}")
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
            raise TypeError(f"workflow {self.name!r}: run_many takes a list of inputs")
        runs = [
            InboxRun(
                run_id=new_run_id(),
                kind="workflow",
                name=self.name,
                input=t.input,
                additional_metadata=t.additional_metadata,
                priority=t.priority,
                desired_worker_id="",
                idempotency_key=t.idempotency_key,
                idempotency_ttl_ms=t.idempotency_ttl_ms,
            )
            for t in self._triggers(inputs, options, keys)
        ]
        return kind, runs

    def _triggers(
        self, inputs: Sequence[Any], options: RunOptions, keys: Sequence[str | None] | None
    ) -> list[wpb.WorkflowTrigger]:
        """Every run of a ``run_many``, validated; ``keys``: one idempotency key per input."""
        if keys is None:
            return [self._trigger(v, options) for v in inputs]
        if isinstance(keys, str) or len(keys) != len(inputs):
            raise ValueError(
                f"workflow {self.name!r}: idempotency_keys takes one key (or None) per input"
            )
        return [
            self._trigger(v, {**options, "idempotency_key": k} if k else options)
            for v, k in zip(inputs, keys, strict=True)
        ]

    def _refs(
        self, run_ids: Sequence[str], deduplicated: Sequence[bool] = ()
    ) -> list[RunRef[dict[str, Any]]]:
        flags = list(deduplicated) if len(deduplicated) == len(run_ids) else [False] * len(run_ids)
        return [
            RunRef(self.app.connection, run_id, self, deduplicated=d)
            for run_id, d in zip(run_ids, flags, strict=True)
        ]

    def _children(self, inputs: Sequence[Any], options: RunOptions) -> list[ChildSpec]:
        if "idempotency_key" in options:
            raise TypeError(
                f"workflow {self.name!r}: inside a task, name a child run with child_key, "
                "not idempotency_key"
            )
        return [ChildSpec("", self.name, self.encode_input(v), options) for v in inputs]

    # -- scheduling ---------------------------------------------------------------------

    def _schedule_item(self, at: When, input: Any, options: RunOptions) -> spb.ScheduleItem:
        return schedule_item(
            f"workflow {self.name!r}", "", self.name, self.encode_input(input), at, options
        )

    def schedule(
        self, at: When, input: I, *, strict: bool = False, **options: Unpack[RunOptions]
    ) -> ScheduledRun:
        """Stores a run of the workflow that the engine starts at ``at``, as
        :meth:`Task.schedule <stoker.Task.schedule>` does for a task."""
        item = self._schedule_item(at, input, options)
        if not self._registered:
            self.register()
        return self.app.schedules.create([item], strict=strict)[0]

    async def aio_schedule(
        self, at: When, input: I, *, strict: bool = False, **options: Unpack[RunOptions]
    ) -> ScheduledRun:
        item = self._schedule_item(at, input, options)
        if not self._registered:
            await self.aio_register()
        return (await self.app.schedules.aio_create([item], strict=strict))[0]

    def run_many(
        self,
        inputs: Sequence[I],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        connection: Any = None,
        **options: Unpack[RunOptions],
    ) -> list[RunRef[dict[str, Any]]]:
        """Starts many runs (up to 1,000 per call to the engine); inside a task, child runs.
        ``idempotency_keys``: one key (or None) per input (README "Idempotency keys").
        ``connection``: the application's open database connection or session: the runs
        are written in its transaction, without calling the engine (README
        "Transactional enqueue")."""
        if connection is not None:
            kind, runs = self._inbox_runs(connection, inputs, options, idempotency_keys, False)
            enqueue(connection, kind, runs, self.app.connection.schema_name)
            return self._refs([r.run_id for r in runs], [False] * len(runs))
        if not self._registered:
            self.register()
        if (ctx := current_context.get()) is not None:
            if (durable := recording_context(ctx)) is not None:
                spawned, _ = durable.spawn(
                    self._children(inputs, options), self, awaited=False, detached=True
                )
                return typing.cast(list[RunRef[dict[str, Any]]], spawned)
            return self._refs(spawn(self.app.connection, ctx, self._children(inputs, options)))
        items = self._triggers(inputs, options, idempotency_keys)
        refs: list[RunRef[dict[str, Any]]] = []
        connection = self.app.connection
        for batch in split_batches(items, message_limit(connection.max_payload_bytes), 1000):
            req = wpb.TriggerWorkflowsRequest(items=batch, request_key=request_key())
            resp = connection.calls.trigger_workflows(req)
            connection.warn_unserved(resp.unserved_task_names)
            refs += self._refs(resp.run_ids, resp.deduplicated)
        return refs

    async def aio_run_many(
        self,
        inputs: Sequence[I],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        connection: Any = None,
        **options: Unpack[RunOptions],
    ) -> list[RunRef[dict[str, Any]]]:
        if connection is not None:
            kind, runs = self._inbox_runs(connection, inputs, options, idempotency_keys, True)
            await aio_enqueue(connection, kind, runs, self.app.connection.schema_name)
            return self._refs([r.run_id for r in runs], [False] * len(runs))
        if not self._registered:
            await self.aio_register()
        if (ctx := current_context.get()) is not None:
            if (durable := recording_context(ctx)) is not None:
                spawned, done = durable.spawn(self._children(inputs, options), self, awaited=False)
                await done
                return typing.cast(list[RunRef[dict[str, Any]]], spawned)
            return self._refs(
                await aio_spawn(self.app.connection, ctx, self._children(inputs, options))
            )
        items = self._triggers(inputs, options, idempotency_keys)
        refs: list[RunRef[dict[str, Any]]] = []
        connection = self.app.connection
        for batch in split_batches(items, message_limit(connection.max_payload_bytes), 1000):
            req = wpb.TriggerWorkflowsRequest(items=batch, request_key=request_key())
            resp = await connection.calls.aio_trigger_workflows(req)
            connection.warn_unserved(resp.unserved_task_names)
            refs += self._refs(resp.run_ids, resp.deduplicated)
        return refs

    def run_no_wait(
        self, input: I, *, connection: Any = None, **options: Unpack[RunOptions]
    ) -> RunRef[dict[str, Any]]:
        """Starts a run and returns a reference to it at once (``connection``: in the
        application's transaction, see ``run_many``)."""
        return self.run_many([input], connection=connection, **options)[0]

    async def aio_run_no_wait(
        self, input: I, *, connection: Any = None, **options: Unpack[RunOptions]
    ) -> RunRef[dict[str, Any]]:
        return (await self.aio_run_many([input], connection=connection, **options))[0]

    def run(self, input: I, **options: Unpack[RunOptions]) -> dict[str, Any]:
        """Runs the workflow and waits: the outputs of its steps by step name, or
        TaskRunError (RunCancelledError) naming the step that failed (was cancelled)."""
        refuse_blocking(f"workflow {self.name!r}: run()")
        return self.run_no_wait(input, **options).result()

    async def aio_run(self, input: I, **options: Unpack[RunOptions]) -> dict[str, Any]:
        """Runs the workflow and waits; in a durable task the child run is recorded, and a
        replay returns (or raises) its recorded outcome."""
        if (durable := recording_context(current_context.get())) is not None:
            if not self._registered:
                await self.aio_register()
            (child,) = self._children([input], options)
            outputs: dict[str, Any] = await durable.run_child(child, self)
            return outputs
        ref = await self.aio_run_no_wait(input, **options)
        return await ref.aio_result()


__all__ = ["Context", "Workflow", "WorkflowTask"]
