"""Rate limits as an operator sees and manages them: listing with usage, deleting.

Statements of ``db/sql/rate_limit_admin.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

from stoker.db.store import Many, One


@dataclass(frozen=True, slots=True)
class AdminListRateLimits:
    tenant_id: int
    key: str | None


class RateLimitRow(TypedDict):
    """A rate limit with its recent starts."""

    key: str
    limit_value: int
    window_ms: int
    dynamic: bool
    updated_at: datetime
    recent: str
    clock: datetime
    now: datetime


admin_list_rate_limits = Many[AdminListRateLimits, RateLimitRow]("admin_list_rate_limits")


@dataclass(frozen=True, slots=True)
class AdminDeleteRateLimit:
    tenant_id: int
    key: str


class DeletedRateLimit(TypedDict):
    """A deleted limit and the queued runs that still name it."""

    key: str
    waiting_runs: int


admin_delete_rate_limit = One[AdminDeleteRateLimit, DeletedRateLimit]("admin_delete_rate_limit")


@dataclass(frozen=True, slots=True)
class AdminResetRateLimit:
    tenant_id: int
    key: str


class ResetLimit(TypedDict):
    """A limit whose window was emptied, and how many deferred runs it made ready."""

    key: str
    ready_runs: int


admin_reset_rate_limit = One[AdminResetRateLimit, ResetLimit]("admin_reset_rate_limit")
