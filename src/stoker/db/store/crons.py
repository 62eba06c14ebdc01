"""Crons: code crons replaced on registration, run-time crons, the due ones the leader
fires, their fires, and paused tasks and workflows.

Statements of ``db/sql/crons.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from stoker.db.store import Exec, Many, NoParams, One


@dataclass(frozen=True, slots=True)
class DeleteCodeCrons:
    tenant_id: int
    task_names: list[str]
    workflow_names: list[str]
    keep_names: list[str]


delete_code_crons = Exec[DeleteCodeCrons]("delete_code_crons")


@dataclass(frozen=True, slots=True)
class UpsertCodeCrons:
    tenant_id: int
    names: list[str]
    task_names: list[str | None]
    workflow_names: list[str | None]
    expressions: list[str]
    timezones: list[str]
    inputs: list[str]
    next_fire_at: list[datetime | None]


upsert_code_crons = Exec[UpsertCodeCrons]("upsert_code_crons")


@dataclass(frozen=True, slots=True)
class DueCrons:
    limit: int


class DueCron(TypedDict):
    """A cron whose tick is due (or that holds a buffered tick), locked by the firing
    transaction."""

    id: int
    tenant_id: int
    name: str
    task_name: str | None
    workflow_name: str | None
    expression: str
    timezone: str
    input: Any
    additional_metadata: Any
    priority: int
    overlap: str
    catch_up_window_s: int
    catch_up_max: int
    next_fire_at: datetime | None
    buffered_tick: datetime | None
    paused: bool
    last_run_id: uuid.UUID | None


due_crons = Many[DueCrons, DueCron]("due_crons")


@dataclass(frozen=True, slots=True)
class AdvanceCron:
    id: int
    tick: datetime | None
    next_fire_at: datetime | None
    buffered_tick: datetime | None
    last_run_id: uuid.UUID | None = None


advance_cron = Exec[AdvanceCron]("advance_cron")


class NextFire(TypedDict):
    fire_at: datetime | None
    buffered: bool


next_cron_fire = One[NoParams, NextFire]("next_cron_fire")


@dataclass(frozen=True, slots=True)
class RecordCronFires:
    cron_ids: list[int]
    ticks: list[datetime]
    run_ids: list[uuid.UUID | None]
    outcomes: list[str]


record_cron_fires = Exec[RecordCronFires]("record_cron_fires")


@dataclass(frozen=True, slots=True)
class TrimCronFires:
    cron_ids: list[int]


trim_cron_fires = Exec[TrimCronFires]("trim_cron_fires")


@dataclass(frozen=True, slots=True)
class PruneCronFires:
    cutoff: datetime
    limit: int


prune_cron_fires = Exec[PruneCronFires]("prune_cron_fires")


@dataclass(frozen=True, slots=True)
class SetCronLastRun:
    id: int
    run_id: uuid.UUID


set_cron_last_run = Exec[SetCronLastRun]("set_cron_last_run")


@dataclass(frozen=True, slots=True)
class SetCodeCronPolicies:
    tenant_id: int
    names: list[str]
    overlaps: list[str]
    windows: list[int]
    maxes: list[int]


set_code_cron_policies = Exec[SetCodeCronPolicies]("set_code_cron_policies")


@dataclass(frozen=True, slots=True)
class RecentCronFires:
    tenant_id: int
    cron_ids: list[int]
    per_cron: int


class CronFire(TypedDict):
    """A tick a cron handled: its run (and the run's status), or why there is none."""

    cron_id: int
    tick: datetime
    run_id: uuid.UUID | None
    outcome: str
    created_at: datetime
    status: str | None


recent_cron_fires = Many[RecentCronFires, CronFire]("recent_cron_fires")


@dataclass(frozen=True, slots=True)
class ListCrons:
    tenant_id: int
    name: str | None = None


class CronRow(TypedDict):
    """A cron as stored."""

    id: int
    name: str
    task_name: str | None
    workflow_name: str | None
    expression: str
    timezone: str
    input: Any
    additional_metadata: Any
    priority: int
    overlap: str
    catch_up_window_s: int
    catch_up_max: int
    enabled: bool
    source: str
    next_fire_at: datetime | None
    buffered_tick: datetime | None
    created_at: datetime
    updated_at: datetime
    last_run_id: uuid.UUID | None


list_crons = Many[ListCrons, CronRow]("list_crons")


@dataclass(frozen=True, slots=True)
class LockCron:
    tenant_id: int
    name: str


lock_cron = One[LockCron, CronRow]("lock_cron")


@dataclass(frozen=True, slots=True)
class CreateCron:
    tenant_id: int
    name: str
    task_name: str | None
    workflow_name: str | None
    expression: str
    timezone: str
    input: str
    additional_metadata: str
    priority: int
    overlap: str
    catch_up_window_s: int
    catch_up_max: int
    enabled: bool
    next_fire_at: datetime | None


class CreatedCron(TypedDict):
    id: int


create_cron = One[CreateCron, CreatedCron]("create_cron")


@dataclass(frozen=True, slots=True)
class UpdateCron:
    id: int
    expression: str
    timezone: str
    input: str
    additional_metadata: str
    priority: int
    overlap: str
    catch_up_window_s: int
    catch_up_max: int
    enabled: bool
    next_fire_at: datetime | None


update_cron = Exec[UpdateCron]("update_cron")


@dataclass(frozen=True, slots=True)
class DeleteCron:
    id: int


delete_cron = Exec[DeleteCron]("delete_cron")


@dataclass(frozen=True, slots=True)
class Pause:
    tenant_id: int
    kind: str
    name: str
    drop_runs: bool


pause = Exec[Pause]("pause")


@dataclass(frozen=True, slots=True)
class Resume:
    tenant_id: int
    kind: str
    name: str


resume = Exec[Resume]("resume")


@dataclass(frozen=True, slots=True)
class ListPaused:
    tenant_id: int


class PausedRow(TypedDict):
    """A paused task or workflow."""

    kind: str
    name: str
    drop_runs: bool
    paused_at: datetime


list_paused = Many[ListPaused, PausedRow]("list_paused")


@dataclass(frozen=True, slots=True)
class CronFiresBetween:
    cron_id: int
    start: datetime
    end: datetime


class KnownFire(TypedDict):
    """A tick of a cron that has a record."""

    tick: datetime
    run_id: uuid.UUID | None
    outcome: str


cron_fires_between = Many[CronFiresBetween, KnownFire]("cron_fires_between")


class DroppingPause(TypedDict):
    """A task or workflow paused with drop."""

    tenant_id: int
    name: str


dropping_pauses = Many[NoParams, DroppingPause]("dropping_pauses")
