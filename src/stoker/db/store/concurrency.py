"""Concurrency strategies and slots: storing strategies, admitting runs.

Statements of ``db/sql/concurrency.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from stoker.db.store import Exec, Many


@dataclass(frozen=True, slots=True)
class UpsertConcurrencyStrategies:
    tenant_id: int
    scopes: list[str]
    idx: list[int]
    expressions: list[str]
    max_runs: list[int]
    limit_strategies: list[str]


upsert_concurrency_strategies = Exec[UpsertConcurrencyStrategies]("upsert_concurrency_strategies")


@dataclass(frozen=True, slots=True)
class GetConcurrencyStrategies:
    tenant_id: int


class Strategy(TypedDict):
    """A concurrency strategy of a task (scope: the task name)."""

    id: int
    scope: str
    idx: int
    expression: str
    max_runs: int
    limit_strategy: str


get_concurrency_strategies = Many[GetConcurrencyStrategies, Strategy]("get_concurrency_strategies")


@dataclass(frozen=True, slots=True)
class LockWaitingStrategies:
    tenant_id: int


class WaitingStrategy(TypedDict):
    """A strategy locked for admission."""

    id: int
    max_runs: int
    limit_strategy: str


lock_waiting_strategies = Many[LockWaitingStrategies, WaitingStrategy]("lock_waiting_strategies")


@dataclass(frozen=True, slots=True)
class AdmissionCandidates:
    tenant_id: int
    strategy_ids: list[int]
    limit: int


class Slot(TypedDict):
    """A run's slot with one strategy's key."""

    task_id: int
    strategy_id: int
    key: str


admission_candidates = Many[AdmissionCandidates, Slot]("admission_candidates")


@dataclass(frozen=True, slots=True)
class AdmittedSlots:
    strategy_ids: list[int]
    keys: list[str]


admitted_slots = Many[AdmittedSlots, Slot]("admitted_slots")


@dataclass(frozen=True, slots=True)
class AdmitSlots:
    task_ids: list[int]
    strategy_ids: list[int]


class AdmittedTask(TypedDict):
    """A task every strategy of which admitted it."""

    task_id: int


admit_slots = Many[AdmitSlots, AdmittedTask]("admit_slots")
