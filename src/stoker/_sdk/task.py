"""Declared tasks: their options (checked at declaration), input and output encoding, and
triggering runs (or, inside a running task, child runs).

A task talks to the engine through its app's :class:`~stoker._sdk.calls.Connection`
(``app.connection``), never through the app's own members."""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar, Unpack

import pydantic_core
import typing_extensions
from pydantic import BaseModel, PydanticUserError, TypeAdapter, ValidationError

from stoker._core import cron
from stoker._core.cel import check_expression
from stoker._core.cron import CronError
from stoker._core.events import pattern_problem
from stoker._core.wire import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    ConcurrencyExpression,
    CronSpec,
    DesiredWorkerLabel,
    FilterSpec,
    IdempotencyConfig,
    RateLimit,
    StickyStrategy,
    TaskConfig,
    checked_json,
    encode_json,
    message_limit,
    split_batches,
)
from stoker._proto import engine_pb2 as pb
from stoker._proto import schedules_pb2 as spb
from stoker._sdk.children import ChildSpec, aio_spawn, spawn
from stoker._sdk.context import Context, current_context
from stoker._sdk.crons import Cron
from stoker._sdk.dependencies import task_dependencies
from stoker._sdk.execution import ExecutorName, check_task_executor
from stoker._sdk.refs import RunRef
from stoker._sdk.schedules import ScheduledRun, When, schedule_item
from stoker._sdk.transactional import (
    InboxRun,
    aio_enqueue,
    check_connection,
    enqueue,
    new_run_id,
)
from stoker.config import parse_duration
from stoker.errors import DeclarationError, PayloadTooLargeError

if TYPE_CHECKING:
    from stoker._sdk.app import Stoker
    from stoker._sdk.durable import DurableContext
    from stoker._sdk.mocking import MockContext

I = TypeVar("I")  # noqa: E741 - the input type
O = TypeVar("O")  # noqa: E741 - the output type

# run_many sends at most this many triggers per call.
_TRIGGER_BATCH = 1000

TaskFn = Callable[[Any, "Context"], Any]


class RunOptions(TypedDict, total=False):
    """Options of one run, passed as keywords to ``run``/``run_no_wait``/``run_many``."""

    priority: int
    """1 (low) to 3 (high); default: the task's ``default_priority``."""
    additional_metadata: dict[str, Any]
    """Key/values shown with the run, visible to CEL expressions as ``additional_metadata``."""
    desired_worker_id: str
    """Prefer this worker (required when the task is ``sticky="hard"``)."""
    child_key: str
    """Inside a running task: names the child run, so spawning the same key again (from a
    retry) returns the existing child. Outside a task it has no effect."""
    sticky: bool
    """Inside a running task: the child task prefers the worker that runs this task (it is
    bound to it when the child's task is ``sticky="hard"``), so it can use what the parent
    left there. Outside a task it has no effect."""
    idempotency_key: str
    """While a run made with this key is live, a trigger with the same key returns that run
    (``ref.deduplicated`` is True) instead of creating one; per tenant (README
    "Idempotency keys"). Inside a task use ``child_key``."""
    idempotency_ttl: str | float | timedelta
    """Keep ``idempotency_key`` live for this long (e.g. ``"24h"``) instead of until the
    run finishes."""


class TaskArgs(TypedDict, total=False):
    """The options of ``@app.task(...)``."""

    retries: int
    """How many times a failed attempt is retried (default 0)."""
    backoff_factor: float | None
    """The n-th retry waits ``backoff_factor ** (n - 1)`` seconds; None: retry at once."""
    backoff_max_seconds: float
    """The cap on a backoff delay (default one hour)."""
    execution_timeout: str | float | timedelta | None
    """How long one attempt may run (default "60s"; None: no limit)."""
    schedule_timeout: str | float | timedelta | None
    """How long a run may wait for a worker before it is cancelled (default "5m")."""
    default_priority: int
    """1 (low, default) to 3 (high)."""
    slot_cost: int
    """How many of a worker's slots one attempt takes (default 1)."""
    durable: bool
    """Run in the workers' durable slot pool (``durable_slots``) instead of ``slots``."""
    concurrency: int | ConcurrencyExpression | Sequence[ConcurrencyExpression] | None
    """Concurrency limits; an int n is one constant key with ``max_runs=n``."""
    rate_limits: Sequence[RateLimit]
    """Rate-limit units each run consumes when it starts."""
    desired_worker_labels: Mapping[str, DesiredWorkerLabel] | None
    """Labels wanted on the worker (required or weighted)."""
    sticky: StickyStrategy | str | None
    """'soft' or 'hard': stay on the worker that ran the run's earlier tasks."""
    on_crons: Sequence[str | Cron]
    """Cron expressions (5 fields, or 6 with seconds; optional ``TZ=<zone>`` prefix) on which
    the engine starts a run of this task, or ``Cron(expression, overlap=..., catch_up=...)``
    with its policies; registered with the task, removed with it."""
    cron_input: Any
    """The input of the runs the crons start (validated against the input model now)."""
    cron_timezone: str | None
    """The time zone of ``on_crons`` expressions without a ``TZ=`` prefix (default UTC)."""
    idempotency: Idempotency | None
    """Each run's idempotency key from a CEL expression over its input and metadata, and
    the keys' TTL (README "Idempotency keys")."""
    on_events: Sequence[str]
    """Event key patterns (``"order:created"``, ``"order:*"``, ``"order:**"``): every event
    pushed with a matching key starts a run with its payload as input (README "Events");
    registered with the task, removed with it."""
    default_filters: Sequence[DefaultFilter]
    """Filters declared with the task (README "Events"), replaced at each registration."""
    executor: ExecutorName | None
    """Where a sync function runs on the worker: ``"thread"`` (a thread pool of this
    task's own) or ``"process"`` (the worker's pool of subprocesses, for CPU-bound work);
    default: the worker's ``executor``, else its shared thread pool (README "Executors")."""


@dataclass(frozen=True, slots=True)
class DefaultFilter:
    """A filter declared on a task or workflow: ``expression`` (CEL over ``input`` — the
    event's payload —, ``additional_metadata``, ``scope`` and ``key``) must hold for an
    event to start a run; ``scope`` limits it to events pushed with that scope (None: every
    scope); ``payload`` is given to the runs it lets through (``ctx.filter_payload``)."""

    expression: str
    scope: str | None = None
    payload: Mapping[str, Any] | None = None

    def to_spec(self, what: str) -> FilterSpec:
        """The engine-side form; DeclarationError for a bad expression, scope or payload."""
        check_expression(self.expression, f"{what}: default filter")
        if self.scope is not None and (not isinstance(self.scope, str) or not self.scope):
            raise DeclarationError(f"{what}: a default filter's scope must be a non-empty string")
        payload = dict(self.payload or {})
        encode_json(payload, f"{what}: default filter payload")
        return FilterSpec(expression=self.expression, scope=self.scope, payload=payload)


def event_patterns(patterns: Sequence[str], what: str) -> list[str]:
    """``on_events`` checked now, so a bad pattern fails at declaration."""
    if isinstance(patterns, str):
        raise DeclarationError(f"{what}: on_events takes a list of patterns, not one string")
    found: list[str] = []
    for pattern in patterns:
        problem = pattern_problem(pattern) if isinstance(pattern, str) else "not a string"
        if problem is not None:
            raise DeclarationError(f"{what}: on_events: {problem}")
        if pattern in found:
            raise DeclarationError(f"{what}: on_events names {pattern!r} twice")
        found.append(pattern)
    return found


def filter_specs(filters: Sequence[DefaultFilter], what: str) -> list[FilterSpec]:
    """``default_filters`` checked now."""
    specs: list[FilterSpec] = []
    for f in filters:
        if not isinstance(f, DefaultFilter):
            raise DeclarationError(
                f"{what}: default_filters takes DefaultFilter objects, got {f!r}"
            )
        specs.append(f.to_spec(what))
    return specs


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A task's idempotency: ``expression`` (CEL over ``input`` and ``additional_metadata``,
    e.g. ``"input.order_id"``) gives each run's key, scoped to the task; ``ttl`` keeps a
    key live for that long (e.g. ``"24h"``), else until its run finishes. A key passed with
    ``run(..., idempotency_key=...)`` takes precedence over the expression."""

    expression: str | None = None
    ttl: str | float | timedelta | None = None

    def to_config(self, what: str) -> IdempotencyConfig:
        """The engine-side form; DeclarationError for a bad expression or TTL."""
        if self.expression is not None:
            check_expression(self.expression, f"{what}: idempotency expression")
        delta = parse_duration(self.ttl, f"{what}: idempotency ttl")
        return IdempotencyConfig(
            expression=self.expression, ttl_ms=int(delta.total_seconds() * 1000) if delta else 0
        )


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """A task's options as declared with ``@app.task(...)``."""

    retries: int = 0
    backoff_factor: float | None = None
    backoff_max_seconds: float = 3600.0
    execution_timeout: str | float | timedelta | None = "60s"
    schedule_timeout: str | float | timedelta | None = "5m"
    default_priority: int = 1
    slot_cost: int = 1
    durable: bool = False
    concurrency: int | ConcurrencyExpression | Sequence[ConcurrencyExpression] | None = None
    rate_limits: Sequence[RateLimit] = ()
    desired_worker_labels: Mapping[str, DesiredWorkerLabel] | None = None
    sticky: StickyStrategy | str | None = None
    on_crons: Sequence[str | Cron] = ()
    cron_input: Any = None
    cron_timezone: str | None = None
    idempotency: Idempotency | None = None
    on_events: Sequence[str] = ()
    default_filters: Sequence[DefaultFilter] = ()
    executor: ExecutorName | None = None

    def to_config(self, name: str) -> TaskConfig:
        """The engine-side configuration; DeclarationError on anything invalid."""
        what = f"task {name!r}"

        def ms(value: str | float | timedelta | None, option: str) -> int:
            delta = parse_duration(value, f"{what}: {option}")
            return int(delta.total_seconds() * 1000) if delta else 0

        if self.retries < 0:
            raise DeclarationError(f"{what}: retries must be >= 0, got {self.retries}")
        if self.backoff_factor is not None and self.backoff_factor <= 0:
            raise DeclarationError(f"{what}: backoff_factor must be > 0")
        if not MIN_PRIORITY <= self.default_priority <= MAX_PRIORITY:
            raise DeclarationError(
                f"{what}: default_priority must be {MIN_PRIORITY}..{MAX_PRIORITY}, "
                f"got {self.default_priority}"
            )
        if self.slot_cost < 1:
            raise DeclarationError(f"{what}: slot_cost must be at least 1, got {self.slot_cost}")
        concurrency = _concurrency_list(self.concurrency, what)
        for c in concurrency:
            check_expression(c.expression, f"{what}: concurrency")
        for r in self.rate_limits:
            if not isinstance(r, RateLimit):
                raise DeclarationError(f"{what}: rate_limits takes RateLimit objects, got {r!r}")
            if r.dynamic_key is not None:
                check_expression(r.dynamic_key, f"{what}: rate limit dynamic_key")
            for part in (r.units, r.limit):
                if isinstance(part, str):
                    check_expression(part, f"{what}: rate limit units/limit")
        labels = dict(self.desired_worker_labels or {})
        for key, label in labels.items():
            if not isinstance(label, DesiredWorkerLabel):
                raise DeclarationError(
                    f"{what}: desired_worker_labels[{key!r}] must be a DesiredWorkerLabel"
                )
        try:
            sticky = StickyStrategy(self.sticky) if self.sticky is not None else None
        except ValueError:
            raise DeclarationError(
                f"{what}: sticky must be 'soft' or 'hard', got {self.sticky!r}"
            ) from None
        if self.idempotency is not None and not isinstance(self.idempotency, Idempotency):
            raise DeclarationError(
                f"{what}: idempotency takes an Idempotency(...), got {self.idempotency!r}"
            )
        return TaskConfig(
            on_events=event_patterns(self.on_events, what),
            default_filters=filter_specs(self.default_filters, what),
            idempotency=self.idempotency.to_config(what) if self.idempotency else None,
            crons=cron_specs(self.on_crons, self.cron_timezone, what),
            retries=self.retries,
            backoff_factor=self.backoff_factor,
            backoff_max_seconds=self.backoff_max_seconds,
            execution_timeout_ms=ms(self.execution_timeout, "execution_timeout"),
            schedule_timeout_ms=ms(self.schedule_timeout, "schedule_timeout"),
            priority=self.default_priority,
            slot_cost=self.slot_cost,
            durable=self.durable,
            concurrency=concurrency,
            rate_limits=list(self.rate_limits),
            desired_worker_labels=labels,
            sticky=sticky,
        )


def cron_specs(
    expressions: Sequence[str | Cron], timezone: str | None, what: str
) -> list[CronSpec]:
    """``on_crons`` parsed now, so a bad expression, zone or policy fails at declaration
    (CronError naming the task, the expression and the reason); the input is filled in by
    the task, which knows its input model."""
    if isinstance(expressions, str):
        raise DeclarationError(f"{what}: on_crons takes a list of expressions, not one string")
    specs: list[CronSpec] = []
    for item in expressions:
        if isinstance(item, Cron):
            expression, zone = item.expression, item.timezone or timezone
            try:
                overlap, window_s, max_runs = item.policies()
            except ValueError as exc:
                raise CronError(f"{what}: cron {item.expression!r}: {exc}") from None
            policies: dict[str, Any] = {
                "overlap": overlap,
                "catch_up_window_s": window_s,
                "catch_up_max": max_runs,
            }
        elif isinstance(item, str):
            expression, zone, policies = item, timezone, {}
        else:
            raise DeclarationError(
                f"{what}: on_crons takes expression strings or Cron(...), got {item!r}"
            )
        try:
            cron.parse(expression, zone)
        except CronError as exc:
            raise CronError(f"{what}: {exc}") from None
        specs.append(CronSpec(expression=expression, timezone=zone, **policies))
    if len({s.expression for s in specs}) != len(specs):
        raise DeclarationError(f"{what}: on_crons names one expression twice")
    return specs


def _concurrency_list(
    value: int | ConcurrencyExpression | Sequence[ConcurrencyExpression] | None, what: str
) -> list[ConcurrencyExpression]:
    """``concurrency=`` as a list; an int n is one constant key with max_runs=n."""
    if value is None:
        return []
    if isinstance(value, bool):
        raise DeclarationError(f"{what}: concurrency must be an int or ConcurrencyExpression")
    if isinstance(value, int):
        if value < 1:
            raise DeclarationError(f"{what}: concurrency must be at least 1, got {value}")
        return [ConcurrencyExpression(expression="'all'", max_runs=value)]
    items = [value] if isinstance(value, ConcurrencyExpression) else list(value)
    for item in items:
        if not isinstance(item, ConcurrencyExpression):
            raise DeclarationError(
                f"{what}: concurrency takes ConcurrencyExpression objects, got {item!r}"
            )
    return items


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
        self.input_adapter = _input_adapter(fn, name)
        """For a dataclass or TypedDict input: its validator (None otherwise)."""
        self.executor = check_task_executor(
            options.executor, fn, name=name, is_async=self.is_async, durable=options.durable
        )
        """The executor declared with the task (None: the worker's default)."""
        self.dependencies = task_dependencies(fn, name)
        """The parameters after ``(input, ctx)``: resolved per attempt (README "Lifespan
        and dependencies")."""
        if self.dependencies and self.executor == "process":
            raise DeclarationError(
                f"task {name!r}: a task in a subprocess (executor='process') cannot take "
                "dependencies: their values live in the worker; use executor='thread'"
            )
        if self.config.crons:
            raw = self._cron_input_json(options.cron_input)
            crons = [c.model_copy(update={"input_json": raw}) for c in self.config.crons]
            self.config = self.config.model_copy(update={"crons": crons})
        self._output_adapter: TypeAdapter[Any] | None = (
            TypeAdapter(self.output_type) if self.output_type is not None else None
        )

    def definition_config(self) -> TaskConfig:
        """The configuration registered with the engine: the options, and the JSON schema
        of the input model, from which the dashboard builds the task's trigger form (a
        model pydantic cannot describe is registered without one)."""
        if self.input_model is None:
            return self.config
        try:
            schema = self.input_model.model_json_schema()
        except PydanticUserError:
            return self.config
        return self.config.model_copy(update={"input_schema": schema})

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def _cron_input_json(self, value: Any) -> str:
        """``cron_input`` as JSON, checked against the input model at declaration."""
        what = f"task {self.name!r}: cron_input"
        if self.input_model is not None:
            try:
                model = (
                    value
                    if isinstance(value, self.input_model)
                    else self.input_model.model_validate(value if value is not None else {})
                )
            except ValidationError as exc:
                raise DeclarationError(f"{what} does not fit the input model: {exc}") from None
            return model.model_dump_json()
        if self.input_adapter is not None:
            try:
                checked = self.input_adapter.validate_python(value if value is not None else {})
            except ValidationError as exc:
                raise DeclarationError(f"{what} does not fit the input type: {exc}") from None
            return self.input_adapter.dump_json(checked).decode()
        try:
            return pydantic_core.to_json(value if value is not None else {}).decode()
        except pydantic_core.PydanticSerializationError as exc:
            raise DeclarationError(f"{what} is not JSON-serializable: {exc}") from None

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
        elif self.input_adapter is not None:
            raw = self.input_adapter.dump_json(self.input_adapter.validate_python(value))
        else:
            try:
                raw = pydantic_core.to_json(value)
            except pydantic_core.PydanticSerializationError as exc:
                raise TypeError(
                    f"task {self.name!r}: input is not JSON-serializable: {exc}"
                ) from None
        limit = self.app.connection.max_payload_bytes
        if len(raw) > limit:
            raise PayloadTooLargeError(
                f"task {self.name!r}: input is {len(raw)} bytes, over the limit of {limit} bytes"
            )
        return checked_json(raw, f"task {self.name!r}: input")

    def decode_input(self, raw: bytes) -> Any:
        if self.input_model is not None:
            return self.input_model.model_validate_json(raw or b"{}")
        if self.input_adapter is not None:
            return self.input_adapter.validate_json(raw or b"{}")
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

    def _item(self, value: Any, options: RunOptions) -> pb.TriggerItem:
        return trigger_item(self.name, self.encode_input(value), options)

    def run_no_wait(
        self, input: I, *, connection: Any = None, **options: Unpack[RunOptions]
    ) -> RunRef[O]:
        """Enqueues one run and returns a reference to it at once (inside a running task:
        a child run of that task). ``connection``: the application's open database
        connection or session (psycopg, SQLAlchemy, Django): the run is written in its
        transaction, without calling the engine (README "Transactional enqueue")."""
        if connection is not None:
            return self._enqueue(connection, [input], options, None, aio=False)[0]
        if (ctx := current_context.get()) is not None:
            return self._spawn(ctx, [input], options)[0]
        return self._refs(self.app.connection.trigger(self, [self._item(input, options)]))[0]

    async def aio_run_no_wait(
        self, input: I, *, connection: Any = None, **options: Unpack[RunOptions]
    ) -> RunRef[O]:
        """``connection``: an async connection or session (psycopg, asyncpg, SQLAlchemy)
        whose transaction the run is written in."""
        if connection is not None:
            refs, done = self._aio_enqueue(connection, [input], options, None)
            await done
            return refs[0]
        if (ctx := current_context.get()) is not None:
            return (await self._aio_spawn(ctx, [input], options))[0]
        ids = await self.app.connection.aio_trigger(self, [self._item(input, options)])
        return self._refs(ids)[0]

    def _refs(self, run_ids: Sequence[str]) -> list[RunRef[O]]:
        flags = getattr(run_ids, "deduplicated", None) or [False] * len(run_ids)
        return [
            RunRef(self.app.connection, run_id, self, deduplicated=d)
            for run_id, d in zip(run_ids, flags, strict=True)
        ]

    def _items(
        self, inputs: Sequence[I], options: RunOptions, keys: Sequence[str | None] | None
    ) -> list[pb.TriggerItem]:
        """Every run of a ``run_many``, validated; ``keys``: one idempotency key per input."""
        if keys is None:
            return [self._item(i, options) for i in inputs]
        if isinstance(keys, str) or len(keys) != len(inputs):
            raise ValueError(
                f"task {self.name!r}: idempotency_keys takes one key (or None) per input"
            )
        return [
            self._item(i, {**options, "idempotency_key": k} if k else options)
            for i, k in zip(inputs, keys, strict=True)
        ]

    # -- transactional enqueue ----------------------------------------------------------

    def _inbox_runs(
        self,
        connection: Any,
        inputs: Sequence[I],
        options: RunOptions,
        keys: Sequence[str | None] | None,
        *,
        aio: bool,
    ) -> tuple[str, list[InboxRun]]:
        """The connection's kind and the validated runs (nothing is written yet)."""
        kind = check_connection(connection, aio=aio, what=f"task {self.name!r}")
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
            raise TypeError(f"task {self.name!r}: run_many takes a list of inputs")
        definition = self.config.model_dump_json()
        return kind, [inbox_run("task", i, definition) for i in self._items(inputs, options, keys)]

    def _enqueue(
        self,
        connection: Any,
        inputs: Sequence[I],
        options: RunOptions,
        keys: Sequence[str | None] | None,
        *,
        aio: bool,
    ) -> list[RunRef[O]]:
        kind, runs = self._inbox_runs(connection, inputs, options, keys, aio=aio)
        enqueue(connection, kind, runs, self.app.connection.schema_name)
        return [RunRef(self.app.connection, r.run_id, self) for r in runs]

    def _aio_enqueue(
        self,
        connection: Any,
        inputs: Sequence[I],
        options: RunOptions,
        keys: Sequence[str | None] | None,
    ) -> tuple[list[RunRef[O]], Awaitable[None]]:
        """Validates now (so errors are raised before anything is awaited); the refs and
        the write to await."""
        kind, runs = self._inbox_runs(connection, inputs, options, keys, aio=True)
        write = aio_enqueue(connection, kind, runs, self.app.connection.schema_name)
        return [RunRef(self.app.connection, r.run_id, self) for r in runs], write

    # -- scheduling ---------------------------------------------------------------------

    def _schedule_item(self, at: When, input: I, options: RunOptions) -> spb.ScheduleItem:
        return schedule_item(
            f"task {self.name!r}", self.name, "", self.encode_input(input), at, options
        )

    def schedule(
        self, at: When, input: I, *, strict: bool = False, **options: Unpack[RunOptions]
    ) -> ScheduledRun:
        """Stores a run that the engine starts at ``at`` (an aware datetime, or a delay);
        until then it is no queue item (``app.schedules`` lists, changes or deletes it). The
        input is validated now. A time in the past fires at once, unless ``strict=True``
        (then InvalidRequestError). Options: ``priority``, ``additional_metadata``."""
        item = self._schedule_item(at, input, options)
        if not self.app.connection.is_registered(self.name):
            self.app.connection.register([self])
        return self.app.schedules.create([item], strict=strict)[0]

    async def aio_schedule(
        self, at: When, input: I, *, strict: bool = False, **options: Unpack[RunOptions]
    ) -> ScheduledRun:
        item = self._schedule_item(at, input, options)
        if not self.app.connection.is_registered(self.name):
            await self.app.connection.aio_register([self])
        return (await self.app.schedules.aio_create([item], strict=strict))[0]

    def schedule_many(
        self,
        runs: Sequence[tuple[When, I]],
        *,
        strict: bool = False,
        **options: Unpack[RunOptions],
    ) -> list[ScheduledRun]:
        """Stores many scheduled runs, ``(at, input)`` each, in calls of up to 1,000 (every
        input validated first; one invalid run refuses its call whole)."""
        items = [self._schedule_item(at, value, options) for at, value in runs]
        if not self.app.connection.is_registered(self.name):
            self.app.connection.register([self])
        made: list[ScheduledRun] = []
        for n in range(0, len(items), _TRIGGER_BATCH):
            made += self.app.schedules.create(items[n : n + _TRIGGER_BATCH], strict=strict)
        return made

    async def aio_schedule_many(
        self,
        runs: Sequence[tuple[When, I]],
        *,
        strict: bool = False,
        **options: Unpack[RunOptions],
    ) -> list[ScheduledRun]:
        items = [self._schedule_item(at, value, options) for at, value in runs]
        if not self.app.connection.is_registered(self.name):
            await self.app.connection.aio_register([self])
        made: list[ScheduledRun] = []
        for n in range(0, len(items), _TRIGGER_BATCH):
            made += await self.app.schedules.aio_create(
                items[n : n + _TRIGGER_BATCH], strict=strict
            )
        return made

    def _children(self, inputs: Sequence[I], options: RunOptions) -> list[ChildSpec]:
        if "idempotency_key" in options:
            raise TypeError(
                f"task {self.name!r}: inside a task, name a child run with child_key, "
                "not idempotency_key"
            )
        for value in inputs:
            self._item(value, options)  # validates input and options before anything is sent
        return [ChildSpec(self.name, "", self.encode_input(v), options) for v in inputs]

    def _spawn(self, ctx: Context, inputs: Sequence[I], options: RunOptions) -> list[RunRef[O]]:
        connection = self.app.connection
        if not connection.is_registered(self.name):
            connection.register([self])
        if (durable := recording_context(ctx)) is not None:
            spawned, _ = durable.spawn(
                self._children(inputs, options), self, awaited=False, detached=True
            )
            return typing.cast(list[RunRef[O]], spawned)
        return self._refs(spawn(connection, ctx, self._children(inputs, options)))

    async def _aio_spawn(
        self, ctx: Context, inputs: Sequence[I], options: RunOptions
    ) -> list[RunRef[O]]:
        connection = self.app.connection
        if not connection.is_registered(self.name):
            await connection.aio_register([self])
        if (durable := recording_context(ctx)) is not None:
            spawned, done = durable.spawn(self._children(inputs, options), self, awaited=False)
            await done
            return typing.cast(list[RunRef[O]], spawned)
        return self._refs(await aio_spawn(connection, ctx, self._children(inputs, options)))

    def run(self, input: I, **options: Unpack[RunOptions]) -> O:
        """Runs the task and blocks until it finishes: its output, or TaskRunError."""
        refuse_blocking(f"task {self.name!r}: run()")
        return self.run_no_wait(input, **options).result()

    async def aio_run(self, input: I, **options: Unpack[RunOptions]) -> O:
        """Runs the task and waits: its output, or TaskRunError. In a durable task the
        child is recorded, and a replay returns (or raises) its recorded outcome."""
        if (durable := recording_context(current_context.get())) is not None:
            connection = self.app.connection
            if not connection.is_registered(self.name):
                await connection.aio_register([self])
            (child,) = self._children([input], options)
            return typing.cast(O, await durable.run_child(child, self))
        ref = await self.aio_run_no_wait(input, **options)
        return await ref.aio_result()

    def run_many(
        self,
        inputs: Sequence[I],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        connection: Any = None,
        **options: Unpack[RunOptions],
    ) -> list[RunRef[O]]:
        """Enqueues many runs in as few calls as possible (every input is validated first).
        ``idempotency_keys``: one key (or None) per input (README "Idempotency keys").
        ``connection``: write them in the application's transaction (see ``run_no_wait``)."""
        if connection is not None:
            return self._enqueue(connection, inputs, options, idempotency_keys, aio=False)
        if (ctx := current_context.get()) is not None:
            return self._spawn(ctx, inputs, options)
        items = self._items(inputs, options, idempotency_keys)
        refs: list[RunRef[O]] = []
        for chunk in _chunks(items, self.app.connection.max_payload_bytes):
            refs += self._refs(self.app.connection.trigger(self, chunk))
        return refs

    async def aio_run_many(
        self,
        inputs: Sequence[I],
        *,
        idempotency_keys: Sequence[str | None] | None = None,
        connection: Any = None,
        **options: Unpack[RunOptions],
    ) -> list[RunRef[O]]:
        if connection is not None:
            enqueued, done = self._aio_enqueue(connection, inputs, options, idempotency_keys)
            await done
            return enqueued
        if (ctx := current_context.get()) is not None:
            return await self._aio_spawn(ctx, inputs, options)
        items = self._items(inputs, options, idempotency_keys)
        refs: list[RunRef[O]] = []
        for chunk in _chunks(items, self.app.connection.max_payload_bytes):
            refs += self._refs(await self.app.connection.aio_trigger(self, chunk))
        return refs

    def __call__(self, input: I, ctx: Context) -> Any:
        """Calls the function directly, in-process (handy in unit tests)."""
        return self.fn(input, ctx)

    def mock_run(
        self,
        input: Any,
        *,
        parent_outputs: Mapping[Any, Any] | None = None,
        dependencies: Mapping[Any, Any] | None = None,
        lifespan: Any = None,
        events: Mapping[str, Any] | None = None,
        additional_metadata: dict[str, Any] | None = None,
        context: MockContext | None = None,
    ) -> O:
        """Runs the body once in-process, without an engine, and returns its output
        (README "Testing"): the input is validated, ``ctx`` is a :class:`MockContext`
        (durable sleeps return at once; sleeps, steps and waits are recorded on it; pass
        ``context=`` to inspect them), ``parent_outputs`` (by parent step or name) feed
        ``ctx.task_output``, ``dependencies`` (``{provider: replacement or value}``) and
        ``lifespan`` (``ctx.lifespan``) stand in for the worker's."""
        from stoker._sdk.mocking import mock_run

        return typing.cast(
            O,
            mock_run(
                self,
                input,
                parent_outputs=parent_outputs,
                dependencies=dependencies,
                lifespan=lifespan,
                events=events,
                additional_metadata=additional_metadata,
                context=context,
            ),
        )

    async def aio_mock_run(
        self,
        input: Any,
        *,
        parent_outputs: Mapping[Any, Any] | None = None,
        dependencies: Mapping[Any, Any] | None = None,
        lifespan: Any = None,
        events: Mapping[str, Any] | None = None,
        additional_metadata: dict[str, Any] | None = None,
        context: MockContext | None = None,
    ) -> O:
        """:meth:`mock_run` from a running event loop."""
        from stoker._sdk.mocking import aio_mock_run

        out = await aio_mock_run(
            self,
            input,
            parent_outputs=parent_outputs,
            dependencies=dependencies,
            lifespan=lifespan,
            events=events,
            additional_metadata=additional_metadata,
            context=context,
        )
        return typing.cast(O, out)


def recording_context(ctx: Context | None) -> DurableContext | None:
    """The running durable task's context when it records calls made now, else None."""
    if ctx is None:
        return None
    from stoker._sdk.durable import recording_context as recording

    return recording(ctx)


def refuse_blocking(what: str) -> None:
    """Refuses a blocking run inside a durable task (see ``stoker._sdk.durable``)."""
    if current_context.get() is not None:
        from stoker._sdk.durable import refuse_blocking as refuse

        refuse(what)


def trigger_item(task_name: str, raw_input: bytes, options: RunOptions) -> pb.TriggerItem:
    """The wire form of one run; TypeError/ValueError on bad options."""
    unknown = set(options) - set(RunOptions.__annotations__)
    options = {k: v for k, v in options.items() if k != "child_key"}  # type: ignore[assignment]
    if unknown:
        raise TypeError(f"unknown run option(s): {', '.join(sorted(unknown))}")
    priority = options.get("priority")
    if priority is not None and not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"priority must be {MIN_PRIORITY}..{MAX_PRIORITY}, got {priority}")
    key = options.get("idempotency_key") or ""
    if not isinstance(key, str):
        raise TypeError(f"idempotency_key must be a string, got {type(key).__name__}")
    ttl = parse_duration(options.get("idempotency_ttl"), "idempotency_ttl")
    if ttl is not None and not key:
        raise ValueError("idempotency_ttl needs an idempotency_key")
    return pb.TriggerItem(
        idempotency_key=key,
        idempotency_ttl_ms=int(ttl.total_seconds() * 1000) if ttl else 0,
        task_name=task_name,
        input=raw_input,
        additional_metadata=encode_json(
            options.get("additional_metadata") or {}, f"task {task_name!r}: additional_metadata"
        ),
        priority=priority or 0,
        desired_worker_id=options.get("desired_worker_id") or "",
    )


def inbox_run(kind: str, item: pb.TriggerItem, definition: str = "") -> InboxRun:
    """A validated trigger as an inbox row of a transactional enqueue, with a new run id."""
    return InboxRun(
        run_id=new_run_id(),
        kind=kind,
        name=item.task_name,
        input=item.input,
        additional_metadata=item.additional_metadata,
        priority=item.priority,
        desired_worker_id=item.desired_worker_id,
        idempotency_key=item.idempotency_key,
        idempotency_ttl_ms=item.idempotency_ttl_ms,
        definition=definition,
    )


def _chunks(items: list[pb.TriggerItem], max_payload: int) -> list[list[pb.TriggerItem]]:
    """Splits triggers into calls of at most _TRIGGER_BATCH items that fit the engine's
    message limit."""
    return split_batches(items, message_limit(max_payload), _TRIGGER_BATCH)


def _input_adapter(fn: Callable[..., Any], name: str) -> TypeAdapter[Any] | None:
    """A validator for a dataclass or TypedDict input annotation (checked already)."""
    first = next(iter(inspect.signature(fn).parameters.values()))
    hint = typing.get_type_hints(fn).get(first.name)
    if hint is not None and (
        dataclasses.is_dataclass(hint) or typing_extensions.is_typeddict(hint)
    ):
        try:
            return TypeAdapter(hint)
        except Exception as exc:
            raise DeclarationError(
                f"task {name!r}: the input annotation {hint!r} cannot be validated: {exc}"
            ) from None
    return None


def _inspect_signature(fn: Callable[..., Any], name: str) -> tuple[type[BaseModel] | None, Any]:
    """The input model and the return annotation, checked at declaration time."""
    if not callable(fn):
        raise DeclarationError(f"task {name!r}: expected a function, got {type(fn).__name__}")
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    # Parameters after (input, ctx) are dependencies (checked by task_dependencies).
    if len(positional) < 2 or any(p.default is not p.empty for p in params[:2]):
        raise DeclarationError(
            f"task {name!r}: a task function takes two parameters, (input, ctx), then only "
            f"dependencies (Annotated[T, Depends(...)]); {fn.__qualname__} takes "
            f"({', '.join(p.name for p in params)})"
        )
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise DeclarationError(f"task {name!r}: cannot resolve type annotations: {exc}") from None
    input_type = hints.get(positional[0].name)
    input_model: type[BaseModel] | None = None
    if isinstance(input_type, type) and issubclass(input_type, BaseModel):
        input_model = input_type
    elif dataclasses.is_dataclass(input_type) or typing_extensions.is_typeddict(input_type):
        pass  # validated through a TypeAdapter (Task.input_adapter)
    elif input_type not in (None, Any, dict, dict) and typing.get_origin(input_type) is not dict:
        raise DeclarationError(
            f"task {name!r}: the input parameter must be annotated with a pydantic BaseModel, "
            f"a dataclass or a TypedDict (or dict/Any for raw JSON), got {input_type!r}"
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


__all__ = [
    "DefaultFilter",
    "Idempotency",
    "RunOptions",
    "Task",
    "TaskArgs",
    "TaskOptions",
    "ValidationError",
]
