"""Conditions of waiting workflow steps and durable waits (task_wait): registering, firing
sleeps, matching events.

Statements of ``db/sql/conditions.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from stoker.db.store import Exec, Many, NoParams, One


@dataclass(frozen=True, slots=True)
class InsertWaits:
    task_ids: list[int]
    conds: list[str]
    tenant_ids: list[int]
    dag_ids: list[int]
    kinds: list[str]
    sleeps_ms: list[int]
    event_keys: list[str]
    expressions: list[str]


insert_waits = Exec[InsertWaits]("insert_waits")


@dataclass(frozen=True, slots=True)
class ClearWaits:
    task_ids: list[int]


clear_waits = Exec[ClearWaits]("clear_waits")


@dataclass(frozen=True, slots=True)
class LogConditionErrors:
    task_ids: list[int]
    errors: list[str]


log_condition_errors = Exec[LogConditionErrors]("log_condition_errors")


@dataclass(frozen=True, slots=True)
class DueSleepDags:
    limit: int


class DueDag(TypedDict):
    """A DAG run with an elapsed sleep."""

    dag_id: int


due_sleep_dags = Many[DueSleepDags, DueDag]("due_sleep_dags")


@dataclass(frozen=True, slots=True)
class FireSleeps:
    dag_ids: list[int]


fire_sleeps = Exec[FireSleeps]("fire_sleeps")


class NextSleep(TypedDict):
    """When the next sleep fires (None: no sleep waits)."""

    fire_at: datetime | None


next_sleep = One[NoParams, NextSleep]("next_sleep")


@dataclass(frozen=True, slots=True)
class WaitsForEvents:
    tenant_id: int
    keys: list[str]


class EventWait(TypedDict):
    """An event condition waiting on a key, with what its expression sees of the run."""

    task_id: int
    cond: str
    dag_id: int | None
    """None for a durable wait's condition."""
    event_key: str
    expression: str | None
    created_at: datetime
    run_created_at: datetime | None
    branch: int | None
    position: int | None
    scope: str | None
    dag_external_id: str | None
    run_input: Any
    run_metadata: Any


waits_for_events = Many[WaitsForEvents, EventWait]("waits_for_events")


@dataclass(frozen=True, slots=True)
class SatisfyWaits:
    task_ids: list[int]
    conds: list[str]


satisfy_waits = Exec[SatisfyWaits]("satisfy_waits")


@dataclass(frozen=True, slots=True)
class RecordWaitErrors:
    task_ids: list[int]
    conds: list[str]
    errors: list[str]


record_wait_errors = Exec[RecordWaitErrors]("record_wait_errors")


@dataclass(frozen=True, slots=True)
class InsertDurableWaits:
    task_ids: list[int]
    run_created_ats: list[datetime]
    tenant_ids: list[int]
    branches: list[int]
    positions: list[int]
    paths: list[str]
    kinds: list[str]
    sleeps_ms: list[int]
    event_keys: list[str]
    expressions: list[str]
    scopes: list[str]
    lookbacks_ms: list[int]


insert_durable_waits = Exec[InsertDurableWaits]("insert_durable_waits")


@dataclass(frozen=True, slots=True)
class DurableWaitConditions:
    task_ids: list[int]
    created_ats: list[datetime]
    branches: list[int]
    positions: list[int]


class DurableCondition(TypedDict):
    """One condition of a durable wait, with its entry's request and status."""

    task_id: int
    run_created_at: datetime
    branch: int
    position: int
    path: str
    kind: str
    fire_at: datetime | None
    event_key: str | None
    expression: str | None
    scope: str | None
    since: datetime | None
    satisfied_at: datetime | None
    event_id: int | None
    request: Any
    status: str
    payload: Any


durable_wait_conditions = Many[DurableWaitConditions, DurableCondition]("durable_wait_conditions")


@dataclass(frozen=True, slots=True)
class SatisfyDurableWaits:
    task_ids: list[int]
    conds: list[str]
    event_ids: list[int | None]


class SatisfiedCondition(TypedDict):
    """A condition of a durable wait that was just satisfied."""

    task_id: int
    run_created_at: datetime
    branch: int
    position: int
    path: str
    event_id: int | None


satisfy_durable_waits = Many[SatisfyDurableWaits, SatisfiedCondition]("satisfy_durable_waits")


@dataclass(frozen=True, slots=True)
class FireDurableSleeps:
    task_ids: list[int]
    branches: list[int]
    positions: list[int]


class FiredSleep(TypedDict):
    """A sleep condition of a durable wait that just elapsed."""

    task_id: int
    run_created_at: datetime
    branch: int
    position: int
    path: str
    fire_at: datetime


fire_durable_sleeps = Many[FireDurableSleeps, FiredSleep]("fire_durable_sleeps")
