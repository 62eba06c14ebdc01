"""Retention: archiving finished runs to history, partitions, pruning, vacuum.

Statements of ``db/sql/retention.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TypedDict

from stoker.db.store import Exec, Many, NoParams, One


@dataclass(frozen=True, slots=True)
class ArchiveRuns:
    after_ms: int
    limit: int


class Archived(TypedDict):
    """How many DAG runs and tasks moved to history."""

    dags: int
    tasks: int


archive_runs = One[ArchiveRuns, Archived]("archive_runs")


@dataclass(frozen=True, slots=True)
class EnsurePartitions:
    first: date
    days: int


class CreatedPartitions(TypedDict):
    """How many partitions were created."""

    created: int


ensure_partitions = One[EnsurePartitions, CreatedPartitions]("ensure_partitions")


@dataclass(frozen=True, slots=True)
class DropExpiredPartitions:
    before: date


class DroppedPartition(TypedDict):
    """A partition dropped, by its parent table."""

    parent: str
    dropped: str


drop_expired_partitions = Many[DropExpiredPartitions, DroppedPartition]("drop_expired_partitions")


@dataclass(frozen=True, slots=True)
class PruneChildRuns:
    before: date
    limit: int


prune_child_runs = Exec[PruneChildRuns]("prune_child_runs")
prune_run_filter_payloads = Exec[PruneChildRuns]("prune_run_filter_payloads")


vacuum_live_runs = Exec[NoParams]("vacuum_live_runs")


@dataclass(frozen=True, slots=True)
class AnalyzeDay:
    day: date


analyze_day = Exec[AnalyzeDay]("analyze_day")

analyze_durable_day = Exec[NoParams]("analyze_durable_day")
