"""Rate limits as an operator manages them: list (with the units used in the current
window), get, put and delete.

Request-driven (the REST API, the CLI and the SDK's gRPC calls use these functions with an
executor and the caller's tenant). Putting goes through
:meth:`~stoker.engine.definitions.Definitions.put_rate_limit` when the caller has the
engine's definitions (its caches are refreshed and the scheduler looks again at once);
without them the limit is written directly and the scheduler sees it at its next poll.

Deleting a limit that queued runs still name leaves those runs waiting — as for a limit
never put — until a limit of that key exists again; the answer says how many there are.
New runs of a task that declares the deleted static limit are refused until it is put
again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from stoker._core.wire import text_problem
from stoker.config import parse_duration
from stoker.db import Executor
from stoker.db.store import rate_limit_admin as store
from stoker.db.store import rate_limits as rate_limit_store
from stoker.engine.scheduler.rate_limits import SlidingWindow, to_us
from stoker.errors import DurationError, InvalidRequestError, NotFoundError

MAX_KEY = 200


class LimitWriter(Protocol):
    """What writes a limit and tells the engine (the engine's definitions)."""

    async def put_rate_limit(
        self, tenant_id: int, key: str, limit: int, window_ms: int
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """A rate limit: at most ``limit`` units start in any ``duration_s`` window; ``used``
    units started in the window ending now. ``dynamic``: created by runs that name it
    (``RateLimit(key_expr=..., limit=...)``), not put by a person."""

    key: str
    limit: int
    duration_s: float
    dynamic: bool
    used: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DeletedLimit:
    """A deleted limit and how many queued runs still name it."""

    key: str
    waiting_runs: int


def _info(row: store.RateLimitRow) -> RateLimitInfo:
    window = SlidingWindow.load(
        row["limit_value"], row["window_ms"], row["recent"], to_us(row["clock"])
    )
    window.advance(max(to_us(row["now"]), window.clock))
    return RateLimitInfo(
        key=row["key"],
        limit=row["limit_value"],
        duration_s=row["window_ms"] / 1000,
        dynamic=row["dynamic"],
        used=window.used(),
        updated_at=row["updated_at"],
    )


def check_key(key: str) -> str:
    """``key`` if it can name a limit; InvalidRequestError otherwise."""
    if not key or len(key) > MAX_KEY or text_problem(key):
        raise InvalidRequestError(
            f"rate limit key {key[:50]!r} must be 1 to {MAX_KEY} characters, without NUL"
        )
    return key


async def list_rate_limits(db: Executor, tenant_id: int) -> list[RateLimitInfo]:
    """The tenant's rate limits, by key."""
    rows = await store.admin_list_rate_limits(db, store.AdminListRateLimits(tenant_id, None))
    return [_info(r) for r in rows]


async def get_rate_limit(db: Executor, tenant_id: int, key: str) -> RateLimitInfo:
    """One of the tenant's limits; NotFoundError for a key with none."""
    rows = await store.admin_list_rate_limits(
        db, store.AdminListRateLimits(tenant_id, check_key(key))
    )
    if not rows:
        raise NotFoundError(f"no rate limit with key {key!r}")
    return _info(rows[0])


async def put_rate_limit(
    db: Executor,
    tenant_id: int,
    key: str,
    limit: int,
    duration: str | float | timedelta,
    *,
    definitions: LimitWriter | None = None,
) -> RateLimitInfo:
    """Creates or updates a static limit: ``limit`` units per ``duration`` (seconds, or a
    duration such as ``"1m"``). Runs it deferred are looked at again at once, so a raised
    limit takes effect now. InvalidRequestError for a bad key, limit or duration."""
    check_key(key)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidRequestError(f"rate limit {key!r}: limit must be an integer >= 1")
    try:
        window = parse_duration(duration, f"rate limit {key!r} duration")
    except DurationError as exc:
        raise InvalidRequestError(exc.message) from None
    window_ms = int(window.total_seconds() * 1000) if window is not None else 0
    if window_ms < 1:
        raise InvalidRequestError(f"rate limit {key!r}: the duration must be positive")
    if definitions is not None:
        await definitions.put_rate_limit(tenant_id, key, limit, window_ms)
    else:
        await rate_limit_store.put_rate_limit(
            db, rate_limit_store.PutRateLimit(tenant_id, key, limit, window_ms)
        )
    return await get_rate_limit(db, tenant_id, key)


async def reset_rate_limit(
    db: Executor, tenant_id: int, key: str, *, on_change: Callable[[int], None] | None = None
) -> int:
    """Empties a limit's window: the starts it counted no longer count, so it has its whole
    limit free now; the queued runs it deferred are made ready at once (``on_change``, the
    engine's, wakes the scheduler). How many deferred runs were made ready; NotFoundError
    for a key with no limit."""
    row = await store.admin_reset_rate_limit(
        db, store.AdminResetRateLimit(tenant_id, check_key(key))
    )
    if row is None:
        raise NotFoundError(f"no rate limit with key {key!r}")
    if on_change is not None:
        on_change(tenant_id)
    return int(row["ready_runs"])


async def delete_rate_limit(db: Executor, tenant_id: int, key: str) -> DeletedLimit:
    """Deletes a limit; NotFoundError for a key with none."""
    row = await store.admin_delete_rate_limit(
        db, store.AdminDeleteRateLimit(tenant_id, check_key(key))
    )
    if row is None:
        raise NotFoundError(f"no rate limit with key {key!r}")
    return DeletedLimit(row["key"], int(row["waiting_runs"]))


__all__ = [
    "DeletedLimit",
    "LimitWriter",
    "RateLimitInfo",
    "delete_rate_limit",
    "get_rate_limit",
    "list_rate_limits",
    "put_rate_limit",
    "reset_rate_limit",
]
