"""Durable tasks: the log of a durable task's calls, its branches and settlements.

Statements of ``db/sql/durable.sql``; see :mod:`stoker.db.store`. A task's log is named by
``(task_id, created_at)`` — the run's id and creation time, which is also the partition key
of the three tables (docs/durable.md). Writers lock the log row first
(:data:`lock_durable_log` or :data:`claim_due_durable_timers`), then call the statements
that change entries, in the same transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from stoker.db.store import Exec, Many, NoParams, One


@dataclass(frozen=True, slots=True)
class CreateDurableLogs:
    task_ids: list[int]
    created_ats: list[datetime]
    tenant_ids: list[int]


class CreatedLog(TypedDict):
    """A log just opened (a task that had one already is not returned)."""

    task_id: int


create_durable_logs = Many[CreateDurableLogs, CreatedLog]("create_durable_logs")


@dataclass(frozen=True, slots=True)
class LockDurableLog:
    task_id: int
    created_at: datetime


class DurableLog(TypedDict):
    """A task's log row, locked."""

    task_id: int
    created_at: datetime
    tenant_id: int
    invocation: int
    active_branch: int
    satisfied_counter: int
    evicted_at: datetime | None


lock_durable_log = One[LockDurableLog, DurableLog]("lock_durable_log")
read_durable_log = One[LockDurableLog, DurableLog]("read_durable_log")


@dataclass(frozen=True, slots=True)
class LockDurableLogs:
    task_ids: list[int]
    created_ats: list[datetime]


lock_durable_logs = Many[LockDurableLogs, DurableLog]("lock_durable_logs")


@dataclass(frozen=True, slots=True)
class VisibleDurableLog:
    task_id: int
    created_at: datetime


class Entry(TypedDict):
    """One recorded call, as replay and the API see it."""

    branch: int
    position: int
    kind: str
    name: str
    fingerprint: str
    request: Any
    wake_at: datetime | None
    child_external_id: uuid.UUID | None
    status: str
    result: Any
    error: Any
    fired: str | None
    event_id: int | None
    satisfied_seq: int | None
    invocation: int
    recorded_at: datetime
    satisfied_at: datetime | None


visible_durable_log = Many[VisibleDurableLog, Entry]("visible_durable_log")


@dataclass(frozen=True, slots=True)
class AppendDurableEntries:
    """Calls to record, as parallel lists (one item per position).

    ``requests``, ``results`` and ``errors`` are JSON documents (or ``None``). A wait's
    deadline is ``wake_ats`` (absolute) or ``delays_ms`` from the database clock; a step
    that completed is appended with its final ``statuses`` ('ok' or 'error').
    """

    task_id: int
    created_at: datetime
    invocation: int
    positions: list[int]
    kinds: list[str]
    names: list[str]
    fingerprints: list[str]
    requests: list[str | None]
    delays_ms: list[int | None]
    wake_ats: list[datetime | None]
    child_external_ids: list[uuid.UUID | None]
    statuses: list[str]
    results: list[str | None]
    errors: list[str | None]


class Appended(Entry):
    """The entry at a requested position: the one just recorded (``inserted``), or the one
    recorded before, whose fingerprint the caller compares with the call's."""

    inserted: bool


append_durable_entries = Many[AppendDurableEntries, Appended]("append_durable_entries")


@dataclass(frozen=True, slots=True)
class SettleDurableEntries:
    """Settlements, as parallel lists; ``results`` and ``errors`` are JSON documents."""

    task_ids: list[int]
    created_ats: list[datetime]
    branches: list[int]
    positions: list[int]
    statuses: list[str]
    results: list[str | None]
    errors: list[str | None]
    fired: list[str | None]
    event_ids: list[int | None]


class Settled(TypedDict):
    """An entry just settled, and what its task's log says about delivering it."""

    task_id: int
    created_at: datetime
    branch: int
    position: int
    status: str
    satisfied_seq: int
    tenant_id: int
    invocation: int
    evicted_at: datetime | None
    """When the task was evicted, if it was when this settled (then it was restored)."""
    restored: bool
    """This statement queued the task again (it was evicted): signal its tenant's queue."""
    worker_id: int | None
    """The worker running the task's attempt now (None: none runs it)."""
    attempt: int | None
    """That attempt."""
    timed: bool
    """The task has an execution timeout (its deadline is re-armed once it is unblocked)."""


settle_durable_entries = Many[SettleDurableEntries, Settled]("settle_durable_entries")


@dataclass(frozen=True, slots=True)
class SetPlanCacheMode:
    mode: str


set_plan_cache_mode = Exec[SetPlanCacheMode]("set_plan_cache_mode")


@dataclass(frozen=True, slots=True)
class SettleReachedDurableWaits:
    """The waits an event push reached (parallel lists) and the push's event ids."""

    task_ids: list[int]
    created_ats: list[datetime]
    branches: list[int]
    positions: list[int]
    event_ids: list[int]


class SettledWaitRow(Settled):
    """A wait an event push settled, with its result (``{"fired": path, "payload": ...}``)."""

    result: dict[str, Any]


settle_reached_durable_waits = Many[SettleReachedDurableWaits, SettledWaitRow](
    "settle_reached_durable_waits"
)


@dataclass(frozen=True, slots=True)
class ClaimDueDurableTimers:
    limit: int


class DueTimer(TypedDict):
    """A pending entry whose deadline passed; its task's log is locked."""

    task_id: int
    created_at: datetime
    branch: int
    position: int
    wake_at: datetime
    tenant_id: int
    invocation: int
    evicted_at: datetime | None
    conditions: bool
    """A wait with conditions: its wake_at is when to look at its sleeps again."""


claim_due_durable_timers = Many[ClaimDueDurableTimers, DueTimer]("claim_due_durable_timers")


class NextWakeAt(TypedDict):
    """The earliest pending deadline, ``None`` when no entry has one."""

    wake_at: datetime | None


next_durable_wake_at = One[NoParams, NextWakeAt]("next_durable_wake_at")


@dataclass(frozen=True, slots=True)
class PendingChildEntries:
    child_external_ids: list[uuid.UUID]


class ChildEntry(TypedDict):
    """A pending entry waiting for a child run."""

    task_id: int
    created_at: datetime
    branch: int
    position: int
    child_external_id: uuid.UUID


pending_child_entries = Many[PendingChildEntries, ChildEntry]("pending_child_entries")


@dataclass(frozen=True, slots=True)
class EvictDurableTask:
    task_id: int
    created_at: datetime
    invocation: int
    last_seen_seq: int
    attempt: int
    worker_id: int


class Evicted(TypedDict):
    """An accepted eviction: the attempt ended, the task is EVICTED."""

    task_id: int
    tenant_id: int
    invocation: int
    evicted_at: datetime


evict_durable_task = One[EvictDurableTask, Evicted]("evict_durable_task")


@dataclass(frozen=True, slots=True)
class DurableTimeouts:
    task_ids: list[int]
    grace_ms: int


durable_timeouts = Exec[DurableTimeouts]("durable_timeouts")


@dataclass(frozen=True, slots=True)
class SetDurableDeadline:
    task_id: int
    created_at: datetime
    timeout_ms: int


set_durable_deadline = Exec[SetDurableDeadline]("set_durable_deadline")


@dataclass(frozen=True, slots=True)
class ExpireDurableRuns:
    limit: int
    error: str


class ExpiredRun(TypedDict):
    """A durable run failed at its whole-run deadline; ``worker_id`` and ``attempt`` are
    set when an attempt was running (to be told to stop)."""

    id: int
    external_id: uuid.UUID
    tenant_id: int
    dag_id: int | None
    worker_id: int | None
    attempt: int | None


expire_durable_runs = Many[ExpireDurableRuns, ExpiredRun]("expire_durable_runs")


@dataclass(frozen=True, slots=True)
class BumpDurableInvocations:
    task_ids: list[int]
    created_ats: list[datetime]


class Invocation(TypedDict):
    """The invocation a task's new assignment runs as, and where its log stands."""

    task_id: int
    invocation: int
    active_branch: int
    satisfied_counter: int


bump_durable_invocations = Many[BumpDurableInvocations, Invocation]("bump_durable_invocations")


@dataclass(frozen=True, slots=True)
class ResetDurableLog:
    task_id: int
    created_at: datetime
    position: int
    reason: str


class Reset(TypedDict):
    """The branch a reset made active, forked from ``parent_branch``."""

    branch: int
    parent_branch: int
    invocation: int
    tenant_id: int
    dropped: int


reset_durable_log = One[ResetDurableLog, Reset]("reset_durable_log")


@dataclass(frozen=True, slots=True)
class DurableAttempt:
    task_id: int
    attempt: int
    worker_id: int
    tenant_id: int


class AttemptRun(TypedDict):
    """The run a worker's durable request is about, and the database clock."""

    task_id: int
    created_at: datetime
    tenant_id: int
    db_now: datetime
    timed: bool
    """The task has an execution timeout (its deadline pauses while it is blocked)."""


durable_attempt = One[DurableAttempt, AttemptRun]("durable_attempt")


@dataclass(frozen=True, slots=True)
class DurableChildOutcomes:
    external_ids: list[uuid.UUID]


class ChildOutcome(TypedDict):
    """A finished child run: its status, output (COMPLETED) and error document."""

    external_id: uuid.UUID
    status: str
    output: Any
    error: Any


durable_child_outcomes = Many[DurableChildOutcomes, ChildOutcome]("durable_child_outcomes")


@dataclass(frozen=True, slots=True)
class SetDurableWakeAts:
    task_ids: list[int]
    created_ats: list[datetime]
    branches: list[int]
    positions: list[int]


class WakeAt(TypedDict):
    """A wait's next look (``None``: no sleep condition left to fire)."""

    task_id: int
    position: int
    wake_at: datetime | None


set_durable_wake_ats = Many[SetDurableWakeAts, WakeAt]("set_durable_wake_ats")


@dataclass(frozen=True, slots=True)
class DurableRunInput:
    task_id: int
    created_at: datetime


class RunInput(TypedDict):
    """A durable task's input and metadata, as a wait's expression sees them."""

    input: Any
    additional_metadata: Any


durable_run_input = One[DurableRunInput, RunInput]("durable_run_input")


@dataclass(frozen=True, slots=True)
class LockDurableRun:
    tenant_id: int
    run_id: uuid.UUID


class DurableRun(TypedDict):
    """The task of a run a reset is about, locked."""

    task_id: int
    created_at: datetime
    tenant_id: int
    status: str
    attempt: int
    dag_id: int | None
    task_name: str


lock_durable_run = One[LockDurableRun, DurableRun]("lock_durable_run")


class StepDag(TypedDict):
    """The workflow run a step belongs to (live or in history)."""

    dag_id: int
    external_id: uuid.UUID
    status: str


durable_step_dag = One[LockDurableRun, StepDag]("durable_step_dag")


@dataclass(frozen=True, slots=True)
class EndResetAttempt:
    task_id: int
    error: str


class EndedAttempt(TypedDict):
    """The running attempt a reset ended, and the worker that held it."""

    task_id: int
    attempt: int
    worker_id: int


end_reset_attempt = Many[EndResetAttempt, EndedAttempt]("end_reset_attempt")


@dataclass(frozen=True, slots=True)
class RequeueResetTask:
    task_id: int
    admitted: bool


class RequeuedTask(TypedDict):
    """The attempt a reset queued; ``gated`` when it waits for concurrency admission."""

    task_id: int
    attempt: int
    gated: bool


requeue_reset_task = One[RequeueResetTask, RequeuedTask]("requeue_reset_task")


@dataclass(frozen=True, slots=True)
class DurableRunLog:
    tenant_id: int
    run_id: uuid.UUID


class RunLog(TypedDict):
    """A run's task and its log row (``invocation`` None: no log was ever opened)."""

    task_id: int
    created_at: datetime
    status: str
    task_name: str
    dag_id: int | None
    invocation: int | None
    active_branch: int | None
    satisfied_counter: int | None
    evicted_at: datetime | None
    opened_at: datetime | None


durable_run_log = One[DurableRunLog, RunLog]("durable_run_log")


@dataclass(frozen=True, slots=True)
class DurableLogPage:
    task_id: int
    created_at: datetime
    after: int
    limit: int


durable_log_page = Many[DurableLogPage, Entry]("durable_log_page")


@dataclass(frozen=True, slots=True)
class DurableLogPending:
    task_id: int
    created_at: datetime


durable_log_pending = Many[DurableLogPending, Entry]("durable_log_pending")


@dataclass(frozen=True, slots=True)
class SettleDueDurableTimersOf:
    task_id: int
    created_at: datetime


class SettledTimer(TypedDict):
    """A timer settled before an append."""

    position: int


settle_due_durable_timers_of = Many[SettleDueDurableTimersOf, SettledTimer](
    "settle_due_durable_timers_of"
)
