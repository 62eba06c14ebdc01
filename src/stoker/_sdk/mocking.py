"""Running task bodies in-process, without an engine: ``task.mock_run(...)`` and
``workflow.mock_run(...)`` (README "Testing").

A mock run validates the input as a worker would, builds a :class:`MockContext`, solves
the task's dependencies (with ``app.dependency_overrides`` and the ``dependencies=``
given), calls the function (async ones on a fresh event loop, or awaited by
``aio_mock_run``), tears the dependencies down and returns the output after checking it
is JSON, as the worker would. Durable calls are stand-ins: sleeps return at once and are
recorded, steps run and are recorded, ``wait_for_event`` returns the payload given in
``events=``. Child runs triggered from the body still go to the engine.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import random as _random
import uuid as _uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import pydantic_core

from stoker._core.envelope import StepInput
from stoker._sdk.context import Context, current_context
from stoker._sdk.dependencies import solve
from stoker.errors import OutputSerializationError

if TYPE_CHECKING:
    from stoker._sdk.task import Task
    from stoker._sdk.workflow import Workflow

T = TypeVar("T")


class MockContext(Context):
    """The context of a mock run: a :class:`~stoker.Context` whose durable calls are
    stand-ins that record what the body did (``sleeps``, ``steps``, ``waits``)."""

    def __init__(self, *, events: Mapping[str, Any] | None = None, **about: Any) -> None:
        about.setdefault("run_id", str(_uuid.uuid4()))
        about.setdefault("task_name", "")
        about.setdefault("attempt", 0)
        about.setdefault("retry_count", 0)
        about.setdefault("additional_metadata", {})
        about.setdefault("worker_id", "mock")
        super().__init__(**about)
        self.events = dict(events or {})
        """The payloads ``wait_for_event`` returns, by event key."""
        self.sleeps: list[float | datetime] = []
        """Each durable sleep: seconds for ``sleep``, the datetime for ``sleep_until``."""
        self.steps: list[tuple[str, Any]] = []
        """Each step run, as (name, result)."""
        self.waits: list[str] = []
        """The event keys waited for."""

    async def sleep(self, duration: float | timedelta) -> None:
        """Records the sleep and returns at once."""
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else duration
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError(f"ctx.sleep needs a duration >= 0, got {duration!r}")
        self.sleeps.append(float(seconds))

    async def sleep_until(self, when: datetime) -> None:
        """Records the sleep and returns at once."""
        if not isinstance(when, datetime) or when.tzinfo is None:
            raise ValueError(f"ctx.sleep_until needs a timezone-aware datetime, got {when!r}")
        self.sleeps.append(when)

    async def step(
        self, fn: Callable[..., Any], *args: Any, name: str | None = None, **_: Any
    ) -> Any:
        """Runs ``fn(*args)`` and records its result, read back from JSON as in a worker."""
        step_name = name or getattr(fn, "__name__", None) or repr(fn)
        value = fn(*args)
        if inspect.isawaitable(value):
            value = await value
        try:
            value = json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise OutputSerializationError(
                f"step {step_name!r} returned a {type(value).__name__}, which is not JSON: {exc}"
            ) from None
        self.steps.append((step_name, value))
        return value

    def cancel(self) -> None:
        """Marks the mock run cancelled (``ctx.is_cancelled`` turns true)."""
        self.state.cancel("cancelled by the task itself (ctx.cancel())")

    async def now(self) -> datetime:
        return datetime.now(UTC)

    async def uuid(self) -> _uuid.UUID:
        return _uuid.uuid4()

    async def random(self) -> float:
        return _random.random()

    async def wait_for_event(self, key: str, expression: str | None = None, **kw: Any) -> Any:
        """The payload given for ``key`` in ``events=``; LookupError when none was."""
        self.waits.append(key)
        if key not in self.events:
            raise LookupError(
                f"the task waits for event {key!r}: give its payload to mock_run(events=...)"
            )
        model = kw.get("model")
        payload = self.events[key]
        return model.model_validate(payload) if model is not None else payload


def _overrides(task: Task[Any, Any], dependencies: Mapping[Any, Any] | None) -> dict[Any, Any]:
    """The app's overrides plus ``dependencies`` (a value that is not a function stands
    for a provider returning it)."""
    merged: dict[Any, Any] = dict(task.app.dependency_overrides)
    for provider, value in (dependencies or {}).items():
        merged[provider] = value if callable(value) else (lambda v=value: v)
    return merged


async def aio_mock_run(
    task: Task[Any, Any],
    input: Any,
    *,
    parent_outputs: Mapping[Any, Any] | None = None,
    dependencies: Mapping[Any, Any] | None = None,
    lifespan: Any = None,
    events: Mapping[str, Any] | None = None,
    additional_metadata: dict[str, Any] | None = None,
    context: MockContext | None = None,
) -> Any:
    """Runs ``task``'s body once in-process (see the module docstring)."""
    # Across JSON, as to a worker: a model, dataclass or TypedDict input is validated.
    value = task.decode_input(pydantic_core.to_json(input))
    ctx = context or MockContext()
    ctx.events.update(events or {})
    ctx.task_name = task.name
    ctx.lifespan = lifespan if lifespan is not None else ctx.lifespan
    if additional_metadata is not None:
        ctx.additional_metadata = additional_metadata
    if parent_outputs:
        parents: dict[str, Any] = {}
        for parent, out in parent_outputs.items():
            key = str(getattr(parent, "step", getattr(parent, "name", parent)))
            parents[key] = json.loads(pydantic_core.to_json(out))
        ctx.state.step = StepInput(b"", parents)
    token = current_context.set(ctx)
    try:
        async with AsyncExitStack() as stack:
            kwargs = await solve(task.dependencies, ctx, stack, _overrides(task, dependencies))
            result = task.fn(value, ctx, **kwargs)
            if inspect.isawaitable(result):
                result = await result
    finally:
        current_context.reset(token)
    try:
        task.encode_output(result)
    except Exception as exc:
        raise OutputSerializationError(
            f"task {task.name!r}: the output could not be serialized to JSON: {exc}"
        ) from exc
    return result


def mock_run(task: Task[Any, Any], input: Any, **options: Any) -> Any:
    """:func:`aio_mock_run` on a fresh event loop (from a test without one running)."""
    return _sync(aio_mock_run(task, input, **options))


def _sync(aw: Awaitable[T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_wrap(aw))
    if inspect.iscoroutine(aw):
        aw.close()  # never started
    raise RuntimeError("mock_run blocks: inside an event loop, use `await ....aio_mock_run(...)`")


async def _wrap(aw: Awaitable[T]) -> T:
    return await aw


async def aio_mock_run_workflow(
    workflow: Workflow[Any],
    input: Any,
    *,
    replace: Mapping[Any, Any] | None = None,
    dependencies: Mapping[Any, Any] | None = None,
    lifespan: Any = None,
    events: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Runs a workflow's steps in-process, parents first, each with its parents' outputs;
    a step in ``replace`` (keyed by the step or its name) is not run: the given value is
    its output, or, if it is a function, it is called with ``(input, ctx)`` instead of the
    step's body. Conditions (wait_for, skip_if, cancel_if) and on_failure/on_success
    handlers are not evaluated. Returns the outputs by step name, like ``workflow.run``."""
    replaced: dict[str, Any] = {}
    for key, value in (replace or {}).items():
        name = str(getattr(key, "step", key))
        if name not in workflow.steps:
            raise KeyError(
                f"workflow {workflow.name!r} has no step {name!r} to replace "
                f"(steps: {', '.join(workflow.steps)})"
            )
        replaced[name] = value
    if workflow.input_validator is not None and not isinstance(input, workflow.input_validator):
        input = workflow.input_validator.model_validate(input)
    outputs: dict[str, Any] = {}
    for name, step in workflow.steps.items():
        if step.spec.role != "step":
            continue
        parents = {p: outputs[p] for p in step.spec.parents if p in outputs}
        if name in replaced and not callable(replaced[name]):
            outputs[name] = replaced[name]
            continue
        ctx = MockContext(events=events, lifespan=lifespan)
        ctx.state.step = StepInput(
            b"", {p: json.loads(pydantic_core.to_json(v)) for p, v in parents.items()}
        )
        if name in replaced:
            token = current_context.set(ctx)
            try:
                result = replaced[name](input, ctx)
                if inspect.isawaitable(result):
                    result = await result
            finally:
                current_context.reset(token)
            outputs[name] = result
            continue
        outputs[name] = await aio_mock_run(
            step, input, dependencies=dependencies, lifespan=lifespan, context=ctx
        )
    return outputs


def mock_run_workflow(workflow: Workflow[Any], input: Any, **options: Any) -> dict[str, Any]:
    """:func:`aio_mock_run_workflow` on a fresh event loop."""
    return _sync(aio_mock_run_workflow(workflow, input, **options))
