"""Scheduled runs: created through the API, fired by the leader when due, managed by id
or filter.

Statements of ``db/sql/schedules.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from stoker.db.store import Exec, Many, NoParams, One


class ScheduledRunRow(TypedDict):
    """A scheduled run as the API shows it."""

    external_id: uuid.UUID
    task_name: str | None
    workflow_name: str | None
    run_at: datetime
    input: Any
    additional_metadata: Any
    priority: int
    status: str
    run_id: uuid.UUID | None
    error: str | None
    created_at: datetime
    fired_at: datetime | None


@dataclass(frozen=True, slots=True)
class InsertScheduledRuns:
    tenant_id: int
    external_ids: list[uuid.UUID]
    task_names: list[str]
    workflow_names: list[str]
    run_ats: list[datetime]
    inputs: list[str]
    metadata: list[str]
    priorities: list[int]


insert_scheduled_runs = Many[InsertScheduledRuns, ScheduledRunRow]("insert_scheduled_runs")


@dataclass(frozen=True, slots=True)
class FireDueScheduledRuns:
    limit: int


class FiredScheduledRun(TypedDict):
    """A scheduled run that fell due, claimed and marked FIRED by the firing transaction,
    with the id its run gets."""

    id: int
    tenant_id: int
    external_id: uuid.UUID
    task_name: str | None
    workflow_name: str | None
    run_at: datetime
    input: str
    metadata: str
    """The run's additional metadata: the schedule's, with ``stoker_schedule``."""
    priority: int
    run_id: uuid.UUID


fire_due_scheduled_runs = Many[FireDueScheduledRuns, FiredScheduledRun]("fire_due_scheduled_runs")


class FiredPlainRuns(TypedDict):
    """How many runs of plain tasks (no concurrency or rate-limit policy) a tenant got; in
    the row without tenant, how many due rows the statement locked."""

    tenant_id: int | None
    runs: int


fire_due_plain_task_runs = Many[FireDueScheduledRuns, FiredPlainRuns]("fire_due_plain_task_runs")


@dataclass(frozen=True, slots=True)
class FailScheduledRuns:
    ids: list[int]
    errors: list[str]


fail_scheduled_runs = Exec[FailScheduledRuns]("fail_scheduled_runs")


class NextScheduledRun(TypedDict):
    run_at: datetime | None


next_scheduled_run = One[NoParams, NextScheduledRun]("next_scheduled_run")


@dataclass(frozen=True, slots=True)
class ListScheduledRuns:
    tenant_id: int
    ids: list[uuid.UUID]
    names: list[str]
    statuses: list[str]
    since: datetime | None
    until: datetime | None
    metadata: str | None
    limit: int


list_scheduled_runs = Many[ListScheduledRuns, ScheduledRunRow]("list_scheduled_runs")


@dataclass(frozen=True, slots=True)
class UpdateScheduledRun:
    tenant_id: int
    external_id: uuid.UUID
    run_at: datetime | None
    input: str | None
    metadata: str | None


update_scheduled_run = One[UpdateScheduledRun, ScheduledRunRow]("update_scheduled_run")


@dataclass(frozen=True, slots=True)
class DeleteScheduledRuns:
    tenant_id: int
    ids: list[uuid.UUID]
    names: list[str]
    since: datetime | None
    until: datetime | None
    metadata: str | None


class DeletedScheduledRun(TypedDict):
    external_id: uuid.UUID


delete_scheduled_runs = Many[DeleteScheduledRuns, DeletedScheduledRun]("delete_scheduled_runs")


@dataclass(frozen=True, slots=True)
class PruneFiredScheduledRuns:
    cutoff: datetime
    limit: int


prune_fired_scheduled_runs = Exec[PruneFiredScheduledRuns]("prune_fired_scheduled_runs")
