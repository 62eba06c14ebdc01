"""``/api/v1/rate-limits``: list the tenant's rate limits with their current use, and put
or delete one by key (engine/ratelimits)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from stoker.engine import ratelimits
from stoker.engine.api.deps import Auth, DbDep, StateDep
from stoker.engine.api.errors import ERROR_RESPONSES
from stoker.engine.api.models import ErrorBody
from stoker.engine.definitions.registry import Definitions

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["rate limits"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No rate limit with this key"}
}


class RateLimit(BaseModel):
    """At most ``limit`` units start in any ``duration_s`` window; ``used`` started in the
    window ending now. ``dynamic``: made by runs that name it, not put by a person."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "key": "openai",
                    "limit": 60,
                    "duration_s": 60.0,
                    "dynamic": False,
                    "used": 12,
                    "updated_at": "2026-12-03T16:00:00Z",
                }
            ]
        },
    )

    key: str
    limit: int
    duration_s: float
    dynamic: bool
    used: int
    updated_at: datetime


class RateLimitList(BaseModel):
    items: list[RateLimit]


class PutRateLimit(BaseModel):
    """The limit: ``limit`` units per ``duration`` (seconds, or '1s', '1m', '1h')."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"limit": 60, "duration": "1m"}]}
    )

    limit: int = Field(ge=1, le=2**31 - 1)
    duration: str | float = Field(default="1s")


class DeletedRateLimit(BaseModel):
    """A deleted limit; ``waiting_runs`` queued runs still name it and wait until a limit
    of that key is put again."""

    model_config = ConfigDict(frozen=True)

    key: str
    waiting_runs: int


def _model(r: ratelimits.RateLimitInfo) -> RateLimit:
    return RateLimit(
        key=r.key,
        limit=r.limit,
        duration_s=r.duration_s,
        dynamic=r.dynamic,
        used=r.used,
        updated_at=r.updated_at,
    )


@router.get("/rate-limits", response_model=RateLimitList)
async def list_rate_limits(who: Auth, db: DbDep) -> RateLimitList:
    """The tenant's rate limits, by key, with the units used in the current window."""
    return RateLimitList(
        items=[_model(r) for r in await ratelimits.list_rate_limits(db, who.tenant_id)]
    )


@router.get("/rate-limits/{key}", response_model=RateLimit, responses=_NOT_FOUND)
async def get_rate_limit(key: str, who: Auth, db: DbDep) -> RateLimit:
    """One rate limit."""
    return _model(await ratelimits.get_rate_limit(db, who.tenant_id, key))


@router.put("/rate-limits/{key}", response_model=RateLimit)
async def put_rate_limit(key: str, body: PutRateLimit, who: Auth, state: StateDep) -> RateLimit:
    """Creates or updates a static rate limit; runs it held back are looked at again now."""
    info = await ratelimits.put_rate_limit(
        state.db, who.tenant_id, key, body.limit, body.duration, definitions=state.definitions
    )
    return _model(info)


@router.post("/rate-limits/{key}/reset", response_model=RateLimit, responses=_NOT_FOUND)
async def reset_rate_limit(key: str, who: Auth, state: StateDep) -> RateLimit:
    """Empties a limit's window (the starts it counted no longer count); the runs it held
    back are ready at once."""
    definitions = state.definitions
    await ratelimits.reset_rate_limit(
        state.db,
        who.tenant_id,
        key,
        on_change=definitions.limits_changed if isinstance(definitions, Definitions) else None,
    )
    return _model(await ratelimits.get_rate_limit(state.db, who.tenant_id, key))


@router.delete("/rate-limits/{key}", response_model=DeletedRateLimit, responses=_NOT_FOUND)
async def delete_rate_limit(key: str, who: Auth, db: DbDep) -> DeletedRateLimit:
    """Deletes a rate limit; queued runs that name it wait until it is put again."""
    gone = await ratelimits.delete_rate_limit(db, who.tenant_id, key)
    return DeletedRateLimit(key=gone.key, waiting_runs=gone.waiting_runs)
