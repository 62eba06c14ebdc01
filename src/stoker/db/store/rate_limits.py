"""Rate limits: static and dynamic limits, their locking and consumption by a round.

Statements of ``db/sql/rate_limits.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

from stoker.db.store import Exec, Many


@dataclass(frozen=True, slots=True)
class PutRateLimit:
    tenant_id: int
    key: str
    limit_value: int
    window_ms: int


put_rate_limit = Exec[PutRateLimit]("put_rate_limit")


@dataclass(frozen=True, slots=True)
class StaticRateLimitKeys:
    tenant_id: int


class RateLimitKey(TypedDict):
    """A static rate limit's key."""

    key: str


static_rate_limit_keys = Many[StaticRateLimitKeys, RateLimitKey]("static_rate_limit_keys")


@dataclass(frozen=True, slots=True)
class EnsureDynamicRateLimits:
    tenant_id: int
    keys: list[str]
    limits: list[int]
    windows_ms: list[int]


ensure_dynamic_rate_limits = Exec[EnsureDynamicRateLimits]("ensure_dynamic_rate_limits")


@dataclass(frozen=True, slots=True)
class LockRateLimits:
    tenant_id: int
    keys: list[str]


class LockedLimit(TypedDict):
    """A locked rate limit: its recent starts (JSON text), clock, and the database's now."""

    key: str
    limit_value: int
    window_ms: int
    recent: str
    clock: datetime
    now: datetime


lock_rate_limits = Many[LockRateLimits, LockedLimit]("lock_rate_limits")


@dataclass(frozen=True, slots=True)
class ConsumeRateLimits:
    tenant_id: int
    keys: list[str]
    recents: list[str]
    clock: datetime


consume_rate_limits = Exec[ConsumeRateLimits]("consume_rate_limits")
