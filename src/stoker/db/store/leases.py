"""Named leases (leadership) and the leader's upkeep probe.

Statements of ``db/sql/leases.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from stoker.db.store import Exec, One


@dataclass(frozen=True, slots=True)
class AcquireLease:
    name: str
    holder: str
    ttl_ms: int


class LeaseHolder(TypedDict):
    """The holder of a lease just taken."""

    holder: str


acquire_lease = One[AcquireLease, LeaseHolder]("acquire_lease")


@dataclass(frozen=True, slots=True)
class ReleaseLease:
    name: str
    holder: str


release_lease = Exec[ReleaseLease]("release_lease")


@dataclass(frozen=True, slots=True)
class UpkeepDue:
    dead_after_ms: int


class Upkeep(TypedDict):
    """Which upkeep the leader has to do now."""

    schedule_timeouts: bool
    execution_timeouts: bool
    dead_workers: bool


upkeep_due = One[UpkeepDue, Upkeep]("upkeep_due")
