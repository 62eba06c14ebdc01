"""``GET /healthz``: liveness and database reachability, without a token."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from stoker.db import NoParams
from stoker.db.store import read as read_store
from stoker.engine.api.deps import DbDep
from stoker.engine.api.models import Health

log = logging.getLogger("stoker.engine.api")

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database cannot be reached"}},
)
async def healthz(db: DbDep) -> Any:
    """Liveness and database reachability; needs no token."""
    try:
        await read_store.api_ping(db, NoParams())
    except Exception as exc:
        log.warning("health check failed: %s", exc)
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return Health(status="ok")
