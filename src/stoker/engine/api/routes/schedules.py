"""``/api/v1/schedules``: scheduled runs — create, list, read, reschedule or change, delete
(one, or many by filter). The same operations as the SDK's ``app.schedules``, through
:class:`~stoker.engine.schedules.Schedules`."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from stoker.db.store.schedules import ScheduledRunRow
from stoker.engine.api.deps import Auth, StateDep
from stoker.engine.api.errors import ERROR_RESPONSES
from stoker.engine.api.pages import aware
from stoker.engine.schedules import MAX_LIST, ScheduleFilter, ScheduleInput
from stoker.errors import InvalidRequestError

router = APIRouter(prefix="/api/v1/schedules", responses=ERROR_RESPONSES, tags=["schedules"])


class ScheduledRun(BaseModel):
    """A scheduled run: what it starts, when, and (once fired) the run it started."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    task_name: str | None
    workflow_name: str | None
    run_at: datetime
    input: Any
    additional_metadata: dict[str, Any]
    priority: int
    status: str = Field(description="SCHEDULED, then FIRED (run_id) or FAILED (error)")
    run_id: uuid.UUID | None
    error: str | None
    created_at: datetime
    fired_at: datetime | None


class ScheduledRunList(BaseModel):
    items: list[ScheduledRun]


class CreateSchedule(BaseModel):
    """A run to start at ``run_at`` (UTC if no zone): of a task or of a workflow."""

    model_config = ConfigDict(extra="forbid")

    task_name: str | None = None
    workflow_name: str | None = None
    input: Any = None
    additional_metadata: dict[str, Any] = Field(default_factory=dict)
    priority: int = 0
    run_at: datetime
    strict: bool = Field(default=False, description="Refuse a time in the past")


class UpdateSchedule(BaseModel):
    """What to change (absent: unchanged)."""

    model_config = ConfigDict(extra="forbid")

    run_at: datetime | None = None
    input: Any = None
    additional_metadata: dict[str, Any] | None = None
    strict: bool = False


class DeleteSchedules(BaseModel):
    """Which runs not fired yet to delete: by id, or every one matching the filter."""

    model_config = ConfigDict(extra="forbid")

    ids: list[uuid.UUID] = Field(default_factory=list)
    names: list[str] = Field(default_factory=list, description="Task or workflow names")
    since: datetime | None = Field(default=None, description="Due at or after")
    until: datetime | None = Field(default=None, description="Due before")
    additional_metadata: dict[str, Any] | None = None


class Deleted(BaseModel):
    ids: list[uuid.UUID]


def _ms(at: datetime) -> int:
    value = aware(at)
    assert value is not None
    return int(value.timestamp() * 1000)


def _model(r: ScheduledRunRow) -> ScheduledRun:
    return ScheduledRun(
        id=r["external_id"],
        task_name=r["task_name"],
        workflow_name=r["workflow_name"],
        run_at=r["run_at"],
        input=r["input"],
        additional_metadata=r["additional_metadata"],
        priority=r["priority"],
        status=r["status"],
        run_id=r["run_id"],
        error=r["error"],
        created_at=r["created_at"],
        fired_at=r["fired_at"],
    )


@router.post("", response_model=ScheduledRun, status_code=201)
async def create_schedule(body: CreateSchedule, who: Auth, state: StateDep) -> ScheduledRun:
    """Stores a run the engine starts at ``run_at`` (a past time fires at once, unless
    ``strict``)."""
    (row,) = await state.schedules.create(
        who.tenant_id,
        [
            ScheduleInput(
                body.task_name or "",
                body.workflow_name or "",
                json.dumps(body.input).encode(),
                json.dumps(body.additional_metadata).encode(),
                body.priority,
                _ms(body.run_at),
            )
        ],
        strict=body.strict,
    )
    return _model(row)


@router.get("", response_model=ScheduledRunList)
async def list_schedules(
    who: Auth,
    state: StateDep,
    name: Annotated[list[str] | None, Query(description="Task or workflow names")] = None,
    status: Annotated[list[str] | None, Query(description="SCHEDULED, FIRED, FAILED")] = None,
    since: Annotated[datetime | None, Query(description="Due at or after")] = None,
    until: Annotated[datetime | None, Query(description="Due before")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 1000,
) -> ScheduledRunList:
    """Scheduled runs by due time."""
    rows = await state.schedules.list(
        who.tenant_id,
        ScheduleFilter(
            [],
            name or [],
            [s.upper() for s in status or []],
            aware(since),
            aware(until),
            None,
            limit,
        ),
    )
    return ScheduledRunList(items=[_model(r) for r in rows])


@router.get("/{schedule_id}", response_model=ScheduledRun)
async def get_schedule(schedule_id: uuid.UUID, who: Auth, state: StateDep) -> ScheduledRun:
    """One scheduled run (404 for an unknown id)."""
    return _model(await state.schedules.get(who.tenant_id, schedule_id))


@router.patch("/{schedule_id}", response_model=ScheduledRun)
async def update_schedule(
    schedule_id: uuid.UUID, body: UpdateSchedule, who: Auth, state: StateDep
) -> ScheduledRun:
    """Reschedules a run not fired yet, or replaces its input or metadata (422 once fired)."""
    given = body.model_fields_set
    row = await state.schedules.update(
        who.tenant_id,
        schedule_id,
        run_at_ms=_ms(body.run_at) if body.run_at is not None else 0,
        input=json.dumps(body.input).encode() if "input" in given else b"",
        additional_metadata=json.dumps(body.additional_metadata).encode()
        if body.additional_metadata is not None
        else b"",
        strict=body.strict,
    )
    return _model(row)


@router.delete("/{schedule_id}", status_code=204)
async def delete_schedule(schedule_id: uuid.UUID, who: Auth, state: StateDep) -> Response:
    """Deletes a run not fired yet (404 for an unknown id, 422 once fired)."""
    current = await state.schedules.get(who.tenant_id, schedule_id)
    deleted = await state.schedules.delete(
        who.tenant_id, ScheduleFilter([schedule_id], [], [], None, None, None)
    )
    if not deleted:
        raise InvalidRequestError(
            f"scheduled run {schedule_id} can no longer be deleted: it is {current['status']}"
        )
    return Response(status_code=204)


@router.post("/delete", response_model=Deleted)
async def delete_schedules(body: DeleteSchedules, who: Auth, state: StateDep) -> Deleted:
    """Deletes the runs not fired yet with these ids or matching the filter (an empty
    filter is refused)."""
    ids = await state.schedules.delete(
        who.tenant_id,
        ScheduleFilter(
            body.ids,
            body.names,
            [],
            aware(body.since),
            aware(body.until),
            json.dumps(body.additional_metadata) if body.additional_metadata else None,
        ),
    )
    return Deleted(ids=[uuid.UUID(i) for i in ids])
