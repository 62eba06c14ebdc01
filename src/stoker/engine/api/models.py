"""The REST API's response models (they are the OpenAPI schema clients see)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stoker._core.status import RunStatus


class WorkerStatus(StrEnum):
    """Whether a worker is connected."""

    ACTIVE = "ACTIVE"
    DEAD = "DEAD"
    STOPPED = "STOPPED"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class Health(_Model):
    """The answer of ``GET /healthz``."""

    status: str = Field(examples=["ok"])


class ErrorDetail(_Model):
    """What went wrong: ``type`` is a stable name, ``message`` says what to do."""

    type: str = Field(examples=["NotFoundError"])
    message: str


class ErrorBody(_Model):
    """Every 4xx/5xx answer of the API has this shape."""

    error: ErrorDetail


class ErrorSummary(_Model):
    """What ended an attempt, as run lists show it (without the traceback)."""

    type: str
    message: str


class RunError(ErrorSummary):
    """The exception that ended an attempt (raised on the worker, or the engine's reason)."""

    traceback: str = ""


class Attempt(_Model):
    """One attempt of a run.

    ``status`` is the run's status for the current attempt, else how the attempt ended:
    FAILED, TIMED_OUT, WORKER_LOST, WORKER_STOPPED, ASSIGNMENT_LOST, CANCELLED or
    SCHEDULE_TIMEOUT.
    """

    number: int
    status: str
    error: RunError | None = None
    worker_id: uuid.UUID | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RunSummary(_Model):
    """A run as listed: everything but its input, output and attempts."""

    run_id: uuid.UUID
    task_name: str
    status: RunStatus
    error: ErrorSummary | None = None
    additional_metadata: dict[str, Any] = Field(default_factory=dict)
    priority: int
    attempt: int
    retry_count: int
    max_retries: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = Field(
        default=None, description="finished_at - started_at, once the run has finished"
    )
    worker_id: uuid.UUID | None = Field(
        default=None, description="The worker holding (or that last held) the run"
    )


class ConcurrencySlot(_Model):
    """A concurrency limit an active run holds (admitted) or waits for."""

    expression: str
    key: str
    max_runs: int
    limit_strategy: str
    admitted: bool


class RunScheduling(_Model):
    """The scheduling policy that applies to a run."""

    slot_cost: int = 1
    durable: bool = False
    sticky: str | None = None
    desired_worker_id: uuid.UUID | None = None
    desired_worker_labels: dict[str, Any] = Field(default_factory=dict)
    concurrency: list[ConcurrencySlot] = Field(
        default_factory=list, description="Held or awaited while the run is active"
    )
    rate_limits: list[dict[str, Any]] = Field(
        default_factory=list, description="Units the run consumes of each limit when it starts"
    )
    assigned_at: datetime | None = None


class RunDetail(RunSummary):
    """A run with its input, output, full error and the story of its attempts."""

    error: RunError | None = None
    input: Any = None
    output: Any = None
    attempts: list[Attempt] = Field(default_factory=list)
    scheduling: RunScheduling = Field(default_factory=RunScheduling)
    waiting_reason: str | None = Field(
        default=None,
        description="Why a queued run cannot start now, such as no connected worker "
        "serving its task; null when nothing is known to hold it back",
    )


class RunPage(_Model):
    """One page of runs, newest first; pass ``next_cursor`` back as ``cursor`` for the next."""

    items: list[RunSummary]
    next_cursor: str | None = None


class Worker(_Model):
    """A worker of the tenant and how busy it is."""

    worker_id: uuid.UUID
    name: str
    status: WorkerStatus
    slots: int
    running: int = Field(description="Attempts assigned to the worker and not yet ended")
    free_slots: int
    task_names: list[str]
    last_heartbeat_at: datetime
    connected_at: datetime
    labels: dict[str, Any] = Field(default_factory=dict)
    durable_slots: int = 0
    heartbeat_age_s: float = Field(default=0.0, description="Seconds since its last heartbeat")
    paused: bool = Field(default=False, description="Paused: assigned no new runs")
    paused_at: datetime | None = None
    current_runs: list[uuid.UUID] = Field(
        default_factory=list, description="The runs it holds now (task run ids)"
    )


class WorkerList(_Model):
    items: list[Worker]


class TaskDef(_Model):
    """A task definition as workers registered it."""

    name: str
    config: dict[str, Any]
    updated_at: datetime


class TaskDefList(_Model):
    items: list[TaskDef]


class CronFire(_Model):
    """A tick a cron handled: the run it started (``run_id``, its ``status``) or why it
    started none (``outcome`` skipped or paused)."""

    tick: datetime
    run_id: uuid.UUID | None
    outcome: str = Field(examples=["started"])
    status: str | None = None


class Cron(_Model):
    """A cron: what it starts, when, its policies, next fire times (UTC) and last runs."""

    name: str
    task_name: str | None
    workflow_name: str | None = None
    expression: str
    timezone: str
    input: Any
    additional_metadata: dict[str, Any] = {}
    priority: int = 0
    overlap: str = Field("allow", examples=["allow", "skip", "cancel_previous", "buffer_one"])
    catch_up_window_s: int = 0
    catch_up_max: int = 0
    enabled: bool
    source: str = Field(examples=["code", "api"])
    next_fire_times: list[datetime]
    last_runs: list[CronFire] = []
    created_at: datetime
    updated_at: datetime


class CronCreate(BaseModel):
    """A cron to create: a name, the task or workflow it starts, its expression."""

    model_config = ConfigDict(extra="forbid")

    name: str
    task_name: str | None = None
    workflow_name: str | None = None
    expression: str = Field(examples=["*/5 * * * *", "TZ=Europe/Berlin 0 9 * * MON-FRI"])
    timezone: str | None = None
    input: Any = None
    additional_metadata: dict[str, Any] | None = None
    priority: int | None = None
    overlap: str | None = None
    catch_up_window_s: int | None = None
    catch_up_max: int | None = None
    enabled: bool | None = None


class CronUpdate(BaseModel):
    """The fields of a cron to change (absent ones stay)."""

    model_config = ConfigDict(extra="forbid")

    expression: str | None = None
    timezone: str | None = None
    input: Any = None
    additional_metadata: dict[str, Any] | None = None
    priority: int | None = None
    overlap: str | None = None
    catch_up_window_s: int | None = None
    catch_up_max: int | None = None
    enabled: bool | None = None


class CronTriggered(_Model):
    """The run ``POST /api/v1/crons/{name}/trigger`` started."""

    run_id: uuid.UUID
    tick: datetime


class Backfill(BaseModel):
    """A past range of a cron's ticks to create the runs of (both ends included)."""

    model_config = ConfigDict(extra="forbid")

    start: datetime
    end: datetime


class BackfillRun(_Model):
    tick: datetime
    run_id: uuid.UUID
    existing: bool = Field(description="The tick already had this run; none was created.")


class BackfillResult(_Model):
    items: list[BackfillRun]


class PauseBody(BaseModel):
    """``drop``: cancel the queued runs (now and while paused) instead of keeping them."""

    model_config = ConfigDict(extra="forbid")

    drop: bool = False


class Paused(_Model):
    """A paused task or workflow."""

    kind: str = Field(examples=["task", "workflow"])
    name: str
    drop: bool
    paused_at: datetime


class PausedList(_Model):
    items: list[Paused]


class PauseResult(_Model):
    """A pause: ``dropped`` queued runs were cancelled now (with ``drop``)."""

    dropped: int


class CronList(_Model):
    items: list[Cron]


class EventPush(BaseModel):
    """An event to push: its key, payload, scope, metadata and the priority of its runs."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(examples=["order:created"])
    payload: Any = None
    scope: str | None = None
    additional_metadata: dict[str, Any] | None = None
    priority: int | None = None


class EventBulkPush(BaseModel):
    """Events to push in one transaction."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventPush]


class EventPushed(_Model):
    """A stored event: its id, the runs it started and the waiting conditions it satisfied."""

    id: uuid.UUID
    run_ids: list[uuid.UUID]
    satisfied: int


class EventPushedList(_Model):
    items: list[EventPushed]
    satisfied: int


class EventRunInfo(_Model):
    """A run an event started (``replay`` 0: by its push; n: by its n-th replay)."""

    run_id: uuid.UUID
    task_name: str | None
    workflow_name: str | None
    filter_id: uuid.UUID | None
    replay: int
    status: str | None
    triggered_at: datetime


class Event(_Model):
    """A stored event; ``payload`` and ``runs`` only when read by id."""

    id: uuid.UUID
    key: str
    scope: str | None
    additional_metadata: dict[str, Any]
    priority: int
    created_at: datetime
    run_count: int
    payload: Any = None
    runs: list[EventRunInfo] = []


class EventList(_Model):
    items: list[Event]


class EventReplayed(_Model):
    run_ids: list[uuid.UUID]


class Filter(_Model):
    """A filter of an event subscriber (``source`` "code": declared with default_filters)."""

    id: uuid.UUID
    task_name: str | None
    workflow_name: str | None
    scope: str | None
    expression: str
    payload: dict[str, Any]
    source: str
    created_at: datetime
    updated_at: datetime


class FilterList(_Model):
    items: list[Filter]


class FilterCreate(BaseModel):
    """A filter to create on a task or a workflow (exactly one of the names)."""

    model_config = ConfigDict(extra="forbid")

    task_name: str | None = None
    workflow_name: str | None = None
    expression: str = Field(examples=["input.amount > 100"])
    scope: str | None = None
    payload: dict[str, Any] | None = None


class FilterUpdate(BaseModel):
    """What to change in a filter (``scope: ""`` applies it to every scope)."""

    model_config = ConfigDict(extra="forbid")

    expression: str | None = None
    scope: str | None = None
    payload: dict[str, Any] | None = None
