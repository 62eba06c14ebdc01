"""``/api/v1/workers``: the tenant's workers, their slots and what they run; pausing and
resuming one (a paused worker keeps running what it has and is assigned nothing new)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query

from stoker.engine import workers as worker_admin
from stoker.engine.api.deps import Auth, DbDep, StateDep
from stoker.engine.api.errors import ERROR_RESPONSES
from stoker.engine.api.models import ErrorBody, Worker, WorkerList, WorkerStatus

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["workers"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such worker for this tenant"}
}


def worker_model(w: worker_admin.WorkerInfo) -> Worker:
    """A worker as the API shows it."""
    return Worker(
        worker_id=uuid.UUID(w.worker_id),
        name=w.name,
        status=WorkerStatus(w.status),
        slots=w.slots,
        running=w.running,
        free_slots=w.free_slots,
        task_names=w.task_names,
        last_heartbeat_at=w.last_heartbeat_at,
        connected_at=w.connected_at,
        labels=w.labels,
        durable_slots=w.durable_slots,
        heartbeat_age_s=w.heartbeat_age_s,
        paused=w.paused,
        paused_at=w.paused_at,
        current_runs=[uuid.UUID(r) for r in w.current_runs],
    )


@router.get("/workers", response_model=WorkerList)
async def list_workers(
    who: Auth,
    db: DbDep,
    status: Annotated[
        list[WorkerStatus] | None, Query(description="Only workers in these statuses")
    ] = None,
) -> WorkerList:
    """The tenant's workers, their slots, whether they are paused and the runs each holds."""
    statuses = [s.value for s in dict.fromkeys(status)] if status else None
    rows = await worker_admin.list_workers(db, who.tenant_id, statuses)
    return WorkerList(items=[worker_model(w) for w in rows])


@router.get("/workers/{worker_id}", response_model=Worker, responses=_NOT_FOUND)
async def get_worker(worker_id: uuid.UUID, who: Auth, db: DbDep) -> Worker:
    """One worker: heartbeat age, slots, labels and the runs it holds now."""
    return worker_model(await worker_admin.get_worker(db, who.tenant_id, worker_id))


@router.post("/workers/{worker_id}/pause", response_model=Worker, responses=_NOT_FOUND)
async def pause_worker(worker_id: uuid.UUID, who: Auth, state: StateDep) -> Worker:
    """Pauses a worker: it gets no new runs and finishes what it runs. It stays paused
    across reconnects until resumed."""
    w = await worker_admin.pause_worker(
        state.db, who.tenant_id, worker_id, dispatcher=state.dispatcher
    )
    return worker_model(w)


@router.post("/workers/{worker_id}/drain", response_model=Worker, responses=_NOT_FOUND)
async def drain_worker(worker_id: uuid.UUID, who: Auth, state: StateDep) -> Worker:
    """Drains a live worker: it gets no new runs (it is paused at once), and its next
    heartbeat's answer tells it to stop; it finishes what it runs and exits."""
    w = await worker_admin.drain_worker(
        state.db, who.tenant_id, worker_id, dispatcher=state.dispatcher
    )
    return worker_model(w)


@router.post("/workers/{worker_id}/resume", response_model=Worker, responses=_NOT_FOUND)
async def resume_worker(worker_id: uuid.UUID, who: Auth, state: StateDep) -> Worker:
    """Resumes a paused worker: it is assigned runs again."""
    w = await worker_admin.resume_worker(
        state.db, who.tenant_id, worker_id, dispatcher=state.dispatcher
    )
    return worker_model(w)
