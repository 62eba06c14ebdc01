"""``GET /api/v1/crons``: the tenant's crons and their next fire times."""

from __future__ import annotations

from fastapi import APIRouter

from stoker.db.store import crons as cron_store
from stoker.engine.api.deps import Auth, DbDep
from stoker.engine.api.errors import ERROR_RESPONSES
from stoker.engine.api.models import Cron, CronList
from stoker.engine.definitions import NEXT_FIRES, upcoming

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["crons"])


@router.get("/crons", response_model=CronList)
async def list_crons(who: Auth, db: DbDep) -> CronList:
    """Every cron of the tenant (declared in code with ``on_crons``), by name."""
    rows = await cron_store.list_crons(db, cron_store.ListCrons(who.tenant_id))
    return CronList(
        items=[
            Cron(
                name=r["name"],
                task_name=r["task_name"],
                expression=r["expression"],
                timezone=r["timezone"],
                input=r["input"],
                enabled=r["enabled"],
                source=r["source"],
                next_fire_times=upcoming(r, NEXT_FIRES),
                created_at=r["created_at"],
                updated_at=r["updated_at"],
            )
            for r in rows
        ]
    )
