"""Shapes shared by the SDK and the engine beyond the protobuf messages.

The policy types (:class:`ConcurrencyExpression`, :class:`RateLimit`,
:class:`DesiredWorkerLabel`) are public: users build them in ``@app.task(...)`` and the same
models travel, as JSON, inside a task definition.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Protocol, TypeVar

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stoker import errors
from stoker.errors import InvalidRequestError

RUN_STATUSES = (
    "PENDING",
    "QUEUED",
    "ASSIGNED",
    "RUNNING",
    "EVICTED",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
)
"""Every status a task run can have (a workflow run: RUNNING or one of the last three)."""
WORKFLOW_RUN_STATUSES = ("RUNNING", "COMPLETED", "FAILED", "CANCELLED")

MIN_PRIORITY = 1
MAX_PRIORITY = 3
DEFAULT_PRIORITY = 1


class ConcurrencyLimitStrategy(StrEnum):
    """What happens to a run whose concurrency key already has ``max_runs`` runs."""

    GROUP_ROUND_ROBIN = "GROUP_ROUND_ROBIN"
    """It waits; waiting keys are served fairly."""
    CANCEL_IN_PROGRESS = "CANCEL_IN_PROGRESS"
    """It is admitted, and the oldest run of the key is cancelled."""
    CANCEL_NEWEST = "CANCEL_NEWEST"
    """It is cancelled."""


class ConcurrencyExpression(BaseModel):
    """A concurrency limit: at most ``max_runs`` runs per value of ``expression``.

    ``expression`` is CEL over ``input`` and ``additional_metadata``, e.g.
    ``"input.customer_id"``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    expression: str
    max_runs: int = Field(default=1, ge=1)
    limit_strategy: ConcurrencyLimitStrategy = ConcurrencyLimitStrategy.GROUP_ROUND_ROBIN


class RateLimitDuration(StrEnum):
    SECOND = "second"
    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"


DURATION_MS = {"second": 1_000, "minute": 60_000, "hour": 3_600_000, "day": 86_400_000}


class RateLimit(BaseModel):
    """Rate-limit units a run consumes when it starts.

    Either ``static_key`` (a limit created with ``app.rate_limits.put``) or ``dynamic_key``
    (CEL over ``input``/``additional_metadata``; then ``limit`` and ``duration`` are
    required). ``units`` and ``limit`` may be ints or CEL expressions.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    static_key: str | None = None
    dynamic_key: str | None = None
    units: int | str = 1
    limit: int | str | None = None
    duration: RateLimitDuration | None = None

    @model_validator(mode="after")
    def _one_key(self) -> RateLimit:
        if (self.static_key is None) == (self.dynamic_key is None):
            raise ValueError("a RateLimit needs exactly one of static_key and dynamic_key")
        if self.dynamic_key is not None and (self.limit is None or self.duration is None):
            raise ValueError("a dynamic RateLimit needs limit and duration")
        if self.static_key is not None and (self.limit is not None or self.duration is not None):
            raise ValueError(
                "a static RateLimit takes its limit from app.rate_limits.put(); "
                "do not pass limit or duration"
            )
        if isinstance(self.units, int) and self.units < 1:
            raise ValueError("units must be at least 1")
        return self


class WorkerLabelComparator(StrEnum):
    EQUAL = "EQUAL"
    NOT_EQUAL = "NOT_EQUAL"
    GREATER_THAN = "GREATER_THAN"
    GREATER_THAN_OR_EQUAL = "GREATER_THAN_OR_EQUAL"
    LESS_THAN = "LESS_THAN"
    LESS_THAN_OR_EQUAL = "LESS_THAN_OR_EQUAL"


class DesiredWorkerLabel(BaseModel):
    """A label a task wants on its worker: ``required``, or preferred with ``weight``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: str | int
    required: bool = False
    weight: int = Field(default=100, ge=0)
    comparator: WorkerLabelComparator = WorkerLabelComparator.EQUAL

    def matches(self, actual: Any) -> bool:
        """Whether a worker's label value satisfies this one."""
        if actual is None:
            return False
        c = self.comparator
        if c in (WorkerLabelComparator.EQUAL, WorkerLabelComparator.NOT_EQUAL):
            same = str(actual) == str(self.value)
            return same if c is WorkerLabelComparator.EQUAL else not same
        try:
            a, v = float(actual), float(self.value)
        except (TypeError, ValueError):
            return False
        if c is WorkerLabelComparator.GREATER_THAN:
            return a > v
        if c is WorkerLabelComparator.GREATER_THAN_OR_EQUAL:
            return a >= v
        if c is WorkerLabelComparator.LESS_THAN:
            return a < v
        return a <= v


class StickyStrategy(StrEnum):
    SOFT = "soft"
    """Prefer the worker that ran the run's earlier tasks."""
    HARD = "hard"
    """Only that worker."""


class CronSpec(BaseModel):
    """A cron declared on a task (``@app.task(on_crons=...)``), sent with its definition:
    the expression as written, its time zone (None: the expression's ``TZ=`` prefix, or
    UTC), the runs' input as JSON, and its policies when declared with ``Cron(...)``
    (``overlap`` None: a plain string, the cron keeps the policies set through the API)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    expression: str
    timezone: str | None = None
    input_json: str = "{}"
    overlap: str | None = None
    catch_up_window_s: int = Field(default=0, ge=0)
    catch_up_max: int = Field(default=0, ge=0)


class IdempotencyConfig(BaseModel):
    """A task's declared idempotency (``@app.task(idempotency=Idempotency(...))``) as sent
    with its definition: the CEL expression giving each run's key (None: only keys given
    at trigger time) and the keys' TTL (0: live until the run finishes)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    expression: str | None = None
    ttl_ms: int = Field(default=0, ge=0)


class FilterSpec(BaseModel):
    """A filter declared on a task or workflow (``default_filters=[...]``), sent with its
    definition: the CEL expression over the event, the scope it applies to (None: every
    scope) and the payload given to the runs it lets through."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    expression: str
    scope: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


class TaskConfig(BaseModel):
    """A task definition's options as registered with the engine (JSON in TaskDefinition)."""

    # Unknown keys are ignored so an older engine accepts a newer SDK's definitions.
    model_config = ConfigDict(extra="ignore", frozen=True)

    retries: int = Field(default=0, ge=0)
    backoff_factor: float | None = Field(default=None, gt=0)
    backoff_max_seconds: float = Field(default=3600.0, gt=0)
    execution_timeout_ms: int = Field(default=60_000, ge=0)
    schedule_timeout_ms: int = Field(default=300_000, ge=0)
    priority: int = Field(default=DEFAULT_PRIORITY, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    slot_cost: int = Field(default=1, ge=1)
    durable: bool = False
    concurrency: list[ConcurrencyExpression] = Field(default_factory=list)
    rate_limits: list[RateLimit] = Field(default_factory=list)
    desired_worker_labels: dict[str, DesiredWorkerLabel] = Field(default_factory=dict)
    sticky: StickyStrategy | None = None
    crons: list[CronSpec] = Field(default_factory=list)
    idempotency: IdempotencyConfig | None = None
    on_events: list[str] = Field(default_factory=list)
    default_filters: list[FilterSpec] = Field(default_factory=list)
    input_schema: dict[str, Any] | None = None
    """The JSON schema of the task's input model (None for raw JSON input): the
    dashboard builds its trigger form from it."""


# One gRPC message carries at most one payload's worth of data plus this much: room for the
# other fields of a batch (task names, metadata, ids). Batches are split to stay under it,
# and the engine refuses larger messages before holding them (README "Security").
MESSAGE_HEADROOM = 1024 * 1024


def message_limit(max_payload_bytes: int) -> int:
    """The largest gRPC message the engine accepts, for a payload limit."""
    return max_payload_bytes + MESSAGE_HEADROOM


ERROR_TYPE_KEY = "stoker-error"
"""The trailing-metadata key of a failed call that names the engine's error class."""


def _error_classes(root: type[errors.StokerError]) -> list[type[errors.StokerError]]:
    found = [root]
    for sub in root.__subclasses__():
        found += _error_classes(sub)
    return found


_ANSWERED_BY_NAME: dict[str, type[errors.StokerError]] = {
    cls.__name__: cls
    for cls in _error_classes(errors.StokerError)
    if cls.__module__ == errors.__name__ and cls.grpc_code != errors.StokerError.grpc_code
}
"""The errors a failed call brings back as themselves: those of :mod:`stoker.errors` with a
status code of their own (the others arrive as a plain :class:`~stoker.errors.StokerError`)."""

_ANSWERED_BY_CODE: dict[str, type[errors.StokerError]] = {
    cls.grpc_code: cls
    for cls in (
        errors.AuthenticationError,
        errors.NotFoundError,
        errors.PayloadTooLargeError,
        errors.InvalidRequestError,
    )
}
"""What a code means when the answer names no error class: gRPC refused the call itself
(a message over the size limit) or something between the SDK and the engine did. For a
code several classes share, the general one (NotFoundError, not UnknownTaskError)."""


def error_class(type_name: str, code_name: str) -> type[errors.StokerError] | None:
    """The Stoker error a failed call stands for: the class its :data:`ERROR_TYPE_KEY`
    names, else the one its status code (a ``grpc.StatusCode`` name) stands for; None when
    neither tells (an unreachable engine, an unexpected failure)."""
    return _ANSWERED_BY_NAME.get(type_name) or _ANSWERED_BY_CODE.get(code_name)


class _Sized(Protocol):
    def ByteSize(self) -> int: ...


S = TypeVar("S", bound=_Sized)

# Room for a request's fields outside its repeated items (ids, a parent reference).
_REQUEST_MARGIN = 4096


def split_batches(items: Sequence[S], limit: int, max_items: int) -> list[list[S]]:
    """Splits the items of a repeated field into requests of at most ``max_items`` items
    that each encode to at most ``limit`` bytes (an item too large alone gets a request of
    its own, which gRPC then refuses with a clear error before sending it)."""
    batches: list[list[S]] = []
    current: list[S] = []
    size = _REQUEST_MARGIN
    for item in items:
        n = item.ByteSize() + 10  # the field's tag and length prefix
        if current and (len(current) >= max_items or size + n > limit):
            batches.append(current)
            current, size = [], _REQUEST_MARGIN
        current.append(item)
        size += n
    if current:
        batches.append(current)
    return batches


# -- payload checks shared by the SDK (before enqueue) and the engine (at its edge) ----------

MAX_JSON_DEPTH = 100
"""How deeply arrays and objects may nest in a payload (input, metadata, output, event)."""

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")
# A ``\u0000`` escape in JSON re-dumped by Python: preceded by an even number of
# backslashes (an odd number would make it the text ``\u0000``, which is storable).
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text ``raw`` (a scalar is 0).

    Counts brackets outside strings without parsing, so a payload nested far too deep for a
    recursive parser is measured, not crashed on.
    """
    depth = deepest = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub(b"", raw)):
        if m[0] in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def json_problem(raw: bytes, *, serialized: bool = False) -> str | None:
    """What makes ``raw`` unacceptable as a stored JSON document, or None.

    Refused: text that is not JSON (or not UTF-8), nesting deeper than
    :data:`MAX_JSON_DEPTH`, and strings holding a NUL character (``\\u0000``) or a lone
    UTF-16 surrogate (``\\ud800``): Python's parser accepts those, but PostgreSQL cannot
    store them, so they are refused here rather than failing later.

    ``serialized``: ``raw`` was just produced by a JSON serializer, so it is valid JSON
    and only a ``\\u`` escape needs a closer look (the SDK's cheap check before enqueue).
    """
    # Counting brackets (C speed) bounds the depth; only a payload with more opening
    # brackets than the limit is measured.
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH:
        depth = json_depth(raw)
        if depth > MAX_JSON_DEPTH:
            return f"it nests {depth} levels deep, over the limit of {MAX_JSON_DEPTH}"
    if serialized and b"\\u" not in raw:
        return None
    if b"\\u" not in raw:
        # The common case, on the engine's hot path (every input and output): without an
        # escape a payload cannot spell NUL or a surrogate, so being UTF-8 and JSON is all
        # there is to check. pydantic-core's parser does that about ten times faster than
        # json.loads and accepts the same texts; on a refusal the full check below says why.
        try:
            raw.decode()
            pydantic_core.from_json(raw)
        except ValueError:
            pass
        else:
            return None
    try:
        # Strict UTF-8 first: json.loads(bytes) would also take UTF-16/32, a BOM, and
        # UTF-8-encoded surrogates, none of which PostgreSQL stores.
        value = json.loads(raw.decode())
    except RecursionError:
        return f"it nests too deep (the limit is {MAX_JSON_DEPTH} levels)"
    except UnicodeDecodeError as exc:
        return f"it is not UTF-8 text: {exc}"
    except ValueError as exc:
        return f"it is not JSON: {exc}"
    # Past strict UTF-8 decoding, a \u escape is the only way to spell either character;
    # payloads without one skip the second pass.
    if b"\\u" in raw:
        text = json.dumps(value, ensure_ascii=False)
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            return (
                f"it holds a lone UTF-16 surrogate ({text[exc.start]!r}), which is not "
                "valid Unicode text"
            )
        if "\\u0000" in text and _NUL_ESCAPE.search(text):
            return "a string in it holds a NUL character (\\u0000), which cannot be stored"
    return None


def text_problem(value: str) -> str | None:
    """What makes ``value`` unacceptable as stored text (a NUL character), or None."""
    if "\x00" in value:
        return "it holds a NUL character (\\x00), which cannot be stored"
    return None


def storable_text(value: str) -> str:
    """``value`` made storable: NUL becomes the visible ``\\x00`` and lone surrogates
    U+FFFD. For text reported after the fact (a worker's error), which cannot be refused."""
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    try:
        value.encode()
    except UnicodeEncodeError:
        value = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
    return value


def load_json(raw: bytes | str) -> Any:
    """A stored JSON document (an output, a payload) as Python values, as ``json.loads``
    gives them, about ten times faster (pydantic-core's parser: integers of any size stay
    exact, where orjson turns those past 64 bits into floats). Text that parser refuses
    (a lone surrogate escape, which PostgreSQL never returns) goes to ``json.loads``."""
    try:
        return pydantic_core.from_json(raw)
    except ValueError:
        return json.loads(raw)


def encode_json(value: Any, what: str) -> bytes:
    """``value`` as JSON the engine accepts (``json.dumps``); InvalidRequestError naming
    ``what`` otherwise, raised before anything is sent."""
    try:
        raw = json.dumps(value).encode()
    except RecursionError:
        raise InvalidRequestError(
            f"{what} is refused: it nests too deep (the limit is {MAX_JSON_DEPTH} levels)"
        ) from None
    return checked_json(raw, what)


def checked_json(raw: bytes, what: str) -> bytes:
    """``raw`` (just serialized) unchanged, or InvalidRequestError naming ``what`` when the
    engine would refuse it (:func:`json_problem`)."""
    problem = json_problem(raw, serialized=True)
    if problem is not None:
        raise InvalidRequestError(f"{what} is refused: {problem}")
    return raw
