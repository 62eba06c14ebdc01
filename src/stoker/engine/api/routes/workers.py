"""``GET /api/v1/workers``: the tenant's workers, their slots and what they run."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from stoker.db.store import read as read_store
from stoker.engine.api.deps import Auth, DbDep
from stoker.engine.api.errors import ERROR_RESPONSES
from stoker.engine.api.models import Worker, WorkerList, WorkerStatus

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["workers"])


@router.get("/workers", response_model=WorkerList)
async def list_workers(
    who: Auth,
    db: DbDep,
    status: Annotated[
        list[WorkerStatus] | None, Query(description="Only workers in these statuses")
    ] = None,
) -> WorkerList:
    """The tenant's workers, their slots and how many attempts each is running."""
    statuses = [s.value for s in dict.fromkeys(status)] if status else None
    rows = await read_store.api_list_workers(db, read_store.ApiListWorkers(who.tenant_id, statuses))
    return WorkerList(
        items=[
            Worker(
                worker_id=r["external_id"],
                name=r["name"],
                status=r["status"],
                slots=r["slots"],
                running=r["running"],
                free_slots=max(0, r["slots"] - r["running"]) if r["status"] == "ACTIVE" else 0,
                task_names=list(r["task_names"]),
                last_heartbeat_at=r["last_heartbeat_at"],
                connected_at=r["connected_at"],
                labels=r["labels"],
                durable_slots=r["durable_slots"],
            )
            for r in rows
        ]
    )
