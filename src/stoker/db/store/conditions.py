"""Conditions of waiting workflow steps (task_wait): registering, firing sleeps, matching events.

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
    dag_id: int
    event_key: str
    expression: str | None
    created_at: datetime
    dag_external_id: str
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
