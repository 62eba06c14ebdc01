"""Declared tasks and references to their runs."""

from __future__ import annotations

import inspect
import json
import time
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pydantic_core
from pydantic import BaseModel, TypeAdapter, ValidationError

from stoker._proto import engine_pb2 as pb
from stoker._wire import MAX_PRIORITY, MIN_PRIORITY, TaskConfig
from stoker.config import parse_duration
from stoker.errors import DeclarationError, PayloadTooLargeError, RunCancelledError, TaskRunError

if TYPE_CHECKING:
    from stoker._sdk.client import Stoker
    from stoker._sdk.context import Context

I = TypeVar("I")  # noqa: E741 - the input type
O = TypeVar("O")  # noqa: E741 - the output type

# How long one AwaitRuns long-poll may wait on the engine.
_AWAIT_CHUNK_MS = 20_000
# run_many sends at most this many triggers per call.
_TRIGGER_BATCH = 1000

TaskFn = Callable[[Any, "Context"], Any]


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """A task's options as declared with ``@app.task(...)``."""

    retries: int = 0
    backoff_factor: float | None = None
    backoff_max_seconds: float = 3600.0
    execution_timeout: str | float | timedelta | None = "60s"
    schedule_timeout: str | float | timedelta | None = "5m"
    priority: int = 1

    def to_config(self, name: str) -> TaskConfig:
        def ms(value: str | float | timedelta | None, what: str) -> int:
            delta = parse_duration(value, f"task {name!r}: {what}")
            return int(delta.total_seconds() * 1000) if delta else 0

        if self.retries < 0:
            raise DeclarationError(f"task {name!r}: retries must be >= 0, got {self.retries}")
        if self.backoff_factor is not None and self.backoff_factor <= 0:
            raise DeclarationError(f"task {name!r}: backoff_factor must be > 0")
        if not MIN_PRIORITY <= self.priority <= MAX_PRIORITY:
            raise DeclarationError(
                f"task {name!r}: priority must be {MIN_PRIORITY}..{MAX_PRIORITY}, "
                f"got {self.priority}"
            )
        return TaskConfig(
            retries=self.retries,
            backoff_factor=self.backoff_factor,
            backoff_max_seconds=self.backoff_max_seconds,
            execution_timeout_ms=ms(self.execution_timeout, "execution_timeout"),
            schedule_timeout_ms=ms(self.schedule_timeout, "schedule_timeout"),
            priority=self.priority,
        )


class Task(Generic[I, O]):
    """A task declared with ``@app.task``: call it through ``run``/``run_no_wait``/``run_many``."""

    def __init__(self, app: Stoker, fn: TaskFn, name: str, options: TaskOptions) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.options = options
        self.config = options.to_config(name)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.input_model, self.output_type = _inspect_signature(fn, name)
        self._output_adapter: TypeAdapter[Any] | None = (
            TypeAdapter(self.output_type) if self.output_type is not None else None
        )

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    # -- encoding -----------------------------------------------------------------------

    def encode_input(self, value: Any) -> bytes:
        """Validates ``value`` against the input model and returns its JSON; raises
        pydantic's ValidationError, before anything is sent, when it does not fit."""
        if self.input_model is not None:
            model = (
                value
                if isinstance(value, self.input_model)
                else self.input_model.model_validate(value)
            )
            raw = model.model_dump_json().encode()
        else:
            try:
                raw = pydantic_core.to_json(value)
            except pydantic_core.PydanticSerializationError as exc:
                raise TypeError(
                    f"task {self.name!r}: input is not JSON-serializable: {exc}"
                ) from None
        limit = self.app.max_payload_bytes
        if len(raw) > limit:
            raise PayloadTooLargeError(
                f"task {self.name!r}: input is {len(raw)} bytes, over the limit of {limit} bytes"
            )
        return raw

    def decode_input(self, raw: bytes) -> Any:
        if self.input_model is not None:
            return self.input_model.model_validate_json(raw or b"{}")
        return json.loads(raw) if raw else None

    def encode_output(self, value: Any) -> bytes:
        """The JSON of a task's return value, validated against its return annotation."""
        if self._output_adapter is not None and not isinstance(value, BaseModel):
            value = self._output_adapter.validate_python(value)
        return pydantic_core.to_json(value)

    def decode_output(self, raw: bytes) -> O:
        if self._output_adapter is not None:
            return typing.cast(O, self._output_adapter.validate_json(raw or b"null"))
        return typing.cast(O, json.loads(raw) if raw else None)

    # -- triggering ---------------------------------------------------------------------

    def _item(
        self,
        value: Any,
        priority: int | None,
        additional_metadata: dict[str, Any] | None,
        run_at: datetime | None = None,
    ) -> pb.TriggerItem:
        if priority is not None and not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise ValueError(f"priority must be {MIN_PRIORITY}..{MAX_PRIORITY}, got {priority}")
        return pb.TriggerItem(
            task_name=self.name,
            input=self.encode_input(value),
            additional_metadata=json.dumps(additional_metadata or {}).encode(),
            priority=priority or 0,
            run_at_ms=int(run_at.timestamp() * 1000) if run_at else 0,
        )

    def run_no_wait(
        self,
        input: I,
        *,
        priority: int | None = None,
        additional_metadata: dict[str, Any] | None = None,
    ) -> RunRef[O]:
        """Enqueues one run and returns a reference to it at once."""
        return self.app._trigger(self, [self._item(input, priority, additional_metadata)])[0]

    async def aio_run_no_wait(
        self,
        input: I,
        *,
        priority: int | None = None,
        additional_metadata: dict[str, Any] | None = None,
    ) -> RunRef[O]:
        refs = await self.app._atrigger(self, [self._item(input, priority, additional_metadata)])
        return refs[0]

    def run(
        self,
        input: I,
        *,
        priority: int | None = None,
        additional_metadata: dict[str, Any] | None = None,
    ) -> O:
        """Runs the task and blocks until it finishes: its output, or TaskRunError."""
        return self.run_no_wait(
            input, priority=priority, additional_metadata=additional_metadata
        ).result()

    async def aio_run(
        self,
        input: I,
        *,
        priority: int | None = None,
        additional_metadata: dict[str, Any] | None = None,
    ) -> O:
        ref = await self.aio_run_no_wait(
            input, priority=priority, additional_metadata=additional_metadata
        )
        return await ref.aio_result()

    def run_many(
        self,
        inputs: Sequence[I],
        *,
        priority: int | None = None,
        additional_metadata: dict[str, Any] | None = None,
    ) -> list[RunRef[O]]:
        """Enqueues many runs in as few calls as possible (every input is validated first)."""
        items = [self._item(i, priority, additional_metadata) for i in inputs]
        refs: list[RunRef[O]] = []
        for chunk in _chunks(items, self.app.max_payload_bytes):
            refs += self.app._trigger(self, chunk)
        return refs

    async def aio_run_many(
        self,
        inputs: Sequence[I],
        *,
        priority: int | None = None,
        additional_metadata: dict[str, Any] | None = None,
    ) -> list[RunRef[O]]:
        items = [self._item(i, priority, additional_metadata) for i in inputs]
        refs: list[RunRef[O]] = []
        for chunk in _chunks(items, self.app.max_payload_bytes):
            refs += await self.app._atrigger(self, chunk)
        return refs

    def __call__(self, input: I, ctx: Context) -> Any:
        """Calls the function directly, in-process (handy in unit tests)."""
        return self.fn(input, ctx)


def _chunks(items: list[pb.TriggerItem], max_payload: int) -> list[list[pb.TriggerItem]]:
    """Splits triggers into calls of at most _TRIGGER_BATCH items and a few payloads' size."""
    budget = 4 * max_payload
    chunks: list[list[pb.TriggerItem]] = []
    current: list[pb.TriggerItem] = []
    size = 0
    for item in items:
        n = len(item.input) + len(item.additional_metadata) + 64
        if current and (len(current) >= _TRIGGER_BATCH or size + n > budget):
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += n
    if current:
        chunks.append(current)
    return chunks


class RunRef(Generic[O]):
    """A reference to one run: wait for it with ``result()`` or ``await aio_result()``."""

    def __init__(self, app: Stoker, run_id: str, task: Task[Any, O] | None) -> None:
        self.app = app
        self.run_id = run_id
        self.task = task

    def __repr__(self) -> str:
        return f"<RunRef {self.run_id}>"

    def result(self, timeout: float | None = None) -> O:
        """Blocks until the run finishes; its output, or TaskRunError / RunCancelledError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_ms = _wait_ms(deadline)
            results = self.app._await_runs([self.run_id], wait_ms)
            if results:
                return self._outcome(results[0])
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {self.run_id} did not finish within {timeout}s")

    async def aio_result(self, timeout: float | None = None) -> O:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_ms = _wait_ms(deadline)
            results = await self.app._aawait_runs([self.run_id], wait_ms)
            if results:
                return self._outcome(results[0])
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {self.run_id} did not finish within {timeout}s")

    def _outcome(self, result: pb.RunResult) -> O:
        if result.status == "COMPLETED":
            if self.task is not None:
                return self.task.decode_output(result.output)
            return typing.cast(O, json.loads(result.output) if result.output else None)
        cls = RunCancelledError if result.status == "CANCELLED" else TaskRunError
        raise cls(
            result.run_id,
            result.error.type or result.status,
            result.error.message,
            result.error.traceback,
            status=result.status,
        )


def _wait_ms(deadline: float | None) -> int:
    if deadline is None:
        return _AWAIT_CHUNK_MS
    return max(0, min(_AWAIT_CHUNK_MS, int((deadline - time.monotonic()) * 1000)))


def _inspect_signature(fn: Callable[..., Any], name: str) -> tuple[type[BaseModel] | None, Any]:
    """The input model and the return annotation, checked at declaration time."""
    if not callable(fn):
        raise DeclarationError(f"task {name!r}: expected a function, got {type(fn).__name__}")
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) != 2 or any(p.default is not p.empty for p in positional):
        raise DeclarationError(
            f"task {name!r}: a task function takes exactly two parameters, (input, ctx); "
            f"{fn.__qualname__} takes ({', '.join(p.name for p in params)})"
        )
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise DeclarationError(f"task {name!r}: cannot resolve type annotations: {exc}") from None
    input_type = hints.get(positional[0].name)
    input_model: type[BaseModel] | None = None
    if isinstance(input_type, type) and issubclass(input_type, BaseModel):
        input_model = input_type
    elif (
        input_type not in (None, Any, dict, dict)
        and typing.get_origin(input_type) is not dict
    ):
        raise DeclarationError(
            f"task {name!r}: the input parameter must be annotated with a pydantic BaseModel "
            f"(or dict/Any for raw JSON), got {input_type!r}"
        )
    output = hints.get("return")
    if output is type(None) or output is Any:
        output = None
    if inspect.iscoroutinefunction(fn) and typing.get_origin(output) is Awaitable:
        output = typing.get_args(output)[0]
    if output is not None:
        try:
            TypeAdapter(output)
        except Exception as exc:
            raise DeclarationError(
                f"task {name!r}: the return annotation {output!r} cannot be serialized: {exc}"
            ) from None
    return input_model, output


__all__ = ["RunRef", "Task", "TaskOptions", "ValidationError"]
