"""``GET /api/v1/tasks``: the task definitions the tenant's workers registered."""

from __future__ import annotations

from fastapi import APIRouter

from stoker.db.store import read as read_store
from stoker.engine.api.deps import Auth, DbDep
from stoker.engine.api.errors import ERROR_RESPONSES
from stoker.engine.api.models import TaskDef, TaskDefList

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["tasks"])


@router.get("/tasks", response_model=TaskDefList)
async def list_tasks(who: Auth, db: DbDep) -> TaskDefList:
    """The task definitions workers of the tenant have registered."""
    rows = await read_store.api_list_task_defs(db, read_store.ApiListTaskDefs(who.tenant_id))
    return TaskDefList(
        items=[
            TaskDef(name=r["name"], config=r["config"], updated_at=r["updated_at"]) for r in rows
        ]
    )
