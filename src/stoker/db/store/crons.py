"""Crons: code crons replaced on registration, the due ones the leader fires, reads.

Statements of ``db/sql/crons.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from stoker.db.store import Exec, Many, NoParams, One


@dataclass(frozen=True, slots=True)
class DeleteCodeCrons:
    tenant_id: int
    task_names: list[str]
    keep_names: list[str]


delete_code_crons = Exec[DeleteCodeCrons]("delete_code_crons")


@dataclass(frozen=True, slots=True)
class UpsertCodeCrons:
    tenant_id: int
    names: list[str]
    task_names: list[str]
    expressions: list[str]
    timezones: list[str]
    inputs: list[str]
    next_fire_at: list[datetime | None]


upsert_code_crons = Exec[UpsertCodeCrons]("upsert_code_crons")


@dataclass(frozen=True, slots=True)
class DueCrons:
    limit: int


class DueCron(TypedDict):
    """A cron whose tick is due, locked by the firing transaction."""

    id: int
    tenant_id: int
    name: str
    task_name: str
    expression: str
    timezone: str
    input: Any
    next_fire_at: datetime


due_crons = Many[DueCrons, DueCron]("due_crons")


@dataclass(frozen=True, slots=True)
class AdvanceCron:
    id: int
    tick: datetime
    next_fire_at: datetime | None


advance_cron = Exec[AdvanceCron]("advance_cron")


class NextFire(TypedDict):
    fire_at: datetime | None


next_cron_fire = One[NoParams, NextFire]("next_cron_fire")


@dataclass(frozen=True, slots=True)
class ListCrons:
    tenant_id: int


class CronRow(TypedDict):
    """A cron as stored."""

    name: str
    task_name: str | None
    workflow_name: str | None
    expression: str
    timezone: str
    input: Any
    enabled: bool
    source: str
    next_fire_at: datetime | None
    created_at: datetime
    updated_at: datetime


list_crons = Many[ListCrons, CronRow]("list_crons")
