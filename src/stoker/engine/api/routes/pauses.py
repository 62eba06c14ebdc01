"""Pausing tasks and workflows: ``POST /api/v1/tasks/{name}/pause`` (and ``/resume``), the
same under ``/api/v1/workflows``, and ``GET /api/v1/paused``.

A paused task's runs stay queued (none is assigned to a worker) and its crons do not fire;
with ``{"drop": true}`` its queued runs are cancelled instead, now and while it stays
paused. Resuming lets the queued runs be assigned again.
"""

from __future__ import annotations

from fastapi import APIRouter

from stoker.engine.api.deps import Auth
from stoker.engine.api.errors import ERROR_RESPONSES
from stoker.engine.api.models import PauseBody, Paused, PausedList, PauseResult
from stoker.engine.api.routes.crons import Admin

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["pauses"])


@router.get("/paused", response_model=PausedList)
async def list_paused(who: Auth, crons: Admin) -> PausedList:
    """The tenant's paused tasks and workflows."""
    rows = await crons.paused(who.tenant_id)
    return PausedList(
        items=[
            Paused(kind=r["kind"], name=r["name"], drop=r["drop_runs"], paused_at=r["paused_at"])
            for r in rows
        ]
    )


@router.post("/tasks/{name}/pause", response_model=PauseResult)
async def pause_task(
    who: Auth, crons: Admin, name: str, body: PauseBody | None = None
) -> PauseResult:
    """Pauses a task (404 for an unknown one)."""
    drop = body.drop if body else False
    return PauseResult(dropped=await crons.pause(who.tenant_id, "task", name, drop=drop))


@router.post("/tasks/{name}/resume", status_code=204)
async def resume_task(who: Auth, crons: Admin, name: str) -> None:
    """Resumes a task: its queued runs are assigned again and its crons fire."""
    await crons.resume(who.tenant_id, "task", name)


@router.post("/workflows/{name}/pause", response_model=PauseResult)
async def pause_workflow(
    who: Auth, crons: Admin, name: str, body: PauseBody | None = None
) -> PauseResult:
    """Pauses a workflow: none of its steps' runs is assigned, its crons do not fire."""
    drop = body.drop if body else False
    return PauseResult(dropped=await crons.pause(who.tenant_id, "workflow", name, drop=drop))


@router.post("/workflows/{name}/resume", status_code=204)
async def resume_workflow(who: Auth, crons: Admin, name: str) -> None:
    """Resumes a workflow."""
    await crons.resume(who.tenant_id, "workflow", name)
