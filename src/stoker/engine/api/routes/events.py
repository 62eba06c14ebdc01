"""``/api/v1/events`` and ``/api/v1/filters``: push events (one or many), list and read
them with the runs they started, replay one; manage the filters of event subscribers."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from stoker.db.store.events import EventRunRow, EventSummary, FilterInfo
from stoker.engine.api.deps import ApiState, Auth, api_state
from stoker.engine.api.errors import ERROR_RESPONSES
from stoker.engine.api.models import (
    Event,
    EventBulkPush,
    EventList,
    EventPush,
    EventPushed,
    EventPushedList,
    EventReplayed,
    EventRunInfo,
    Filter,
    FilterCreate,
    FilterList,
    FilterUpdate,
)
from stoker.engine.api.pages import aware
from stoker.engine.events import MAX_LIST, EventAdmin, EventFilter
from stoker.engine.ingest.workflows import EventInput
from stoker.engine.schedules import check_metadata
from stoker.errors import EngineUnavailableError

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["events"])


def _admin(state: Annotated[ApiState, Depends(api_state)]) -> EventAdmin:
    if state.events is None:
        raise EngineUnavailableError("events are handled by an engine; this API runs without one")
    return state.events


Admin = Annotated[EventAdmin, Depends(_admin)]


def _input(e: EventPush) -> EventInput:
    return EventInput(
        e.key,
        json.dumps(e.payload).encode(),
        json.dumps(e.additional_metadata or {}).encode(),
        e.scope or "",
        e.priority or 0,
    )


@router.post("/events", response_model=EventPushed, status_code=201)
async def push_event(body: EventPush, who: Auth, admin: Admin) -> EventPushed:
    """Pushes one event: it is stored, starts a run of every subscribed task and workflow
    (as their filters allow) and satisfies the waits for it, in one transaction."""
    pushed = await admin.push(who.tenant_id, [_input(body)])
    (e,) = pushed.events
    return EventPushed(
        id=uuid.UUID(e.event_id), run_ids=[uuid.UUID(r) for r in e.run_ids], satisfied=e.satisfied
    )


@router.post("/events/bulk", response_model=EventPushedList, status_code=201)
async def push_events(body: EventBulkPush, who: Auth, admin: Admin) -> EventPushedList:
    """Pushes many events in one transaction (all or none are stored)."""
    pushed = await admin.push(who.tenant_id, [_input(e) for e in body.events])
    return EventPushedList(
        items=[
            EventPushed(
                id=uuid.UUID(e.event_id),
                run_ids=[uuid.UUID(r) for r in e.run_ids],
                satisfied=e.satisfied,
            )
            for e in pushed.events
        ],
        satisfied=pushed.satisfied,
    )


def _summary(r: EventSummary) -> Event:
    return Event(
        id=r["external_id"],
        key=r["key"],
        scope=r["scope"],
        additional_metadata=r["additional_metadata"],
        priority=r["priority"],
        created_at=r["created_at"],
        run_count=r["runs"],
    )


def _run(r: EventRunRow) -> EventRunInfo:
    return EventRunInfo(
        run_id=r["run_id"],
        task_name=r["task_name"],
        workflow_name=r["workflow_name"],
        filter_id=r["filter_id"],
        replay=r["replay"],
        status=r["status"],
        triggered_at=r["triggered_at"],
    )


@router.get("/events", response_model=EventList)
async def list_events(
    who: Auth,
    admin: Admin,
    key: Annotated[str | None, Query(description="The exact event key")] = None,
    scope: str | None = None,
    additional_metadata: Annotated[
        str | None, Query(description='A JSON object the metadata contains: {"tenant": "a"}')
    ] = None,
    since: Annotated[datetime | None, Query(description="Pushed at or after")] = None,
    until: Annotated[datetime | None, Query(description="Pushed before")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
) -> EventList:
    """Events, newest first."""
    rows = await admin.list_events(
        who.tenant_id,
        EventFilter(
            key=key,
            scope=scope,
            metadata=check_metadata((additional_metadata or "").encode(), "additional_metadata"),
            since=aware(since),
            until=aware(until),
            limit=limit,
        ),
    )
    return EventList(items=[_summary(r) for r in rows])


@router.get("/events/{event_id}", response_model=Event)
async def get_event(event_id: uuid.UUID, who: Auth, admin: Admin) -> Event:
    """One event with its payload, metadata and the runs it started with their status."""
    found = await admin.get(who.tenant_id, str(event_id))
    r = found.row
    return Event(
        id=r["external_id"],
        key=r["key"],
        scope=r["scope"],
        additional_metadata=r["additional_metadata"],
        priority=r["priority"],
        created_at=r["created_at"],
        run_count=len(found.runs),
        payload=r["payload"],
        runs=[_run(x) for x in found.runs],
    )


@router.post("/events/{event_id}/replay", response_model=EventReplayed)
async def replay_event(event_id: uuid.UUID, who: Auth, admin: Admin) -> EventReplayed:
    """Starts the event's runs again (its subscribers and filters as they are now)."""
    ids = await admin.replay(who.tenant_id, str(event_id))
    return EventReplayed(run_ids=[uuid.UUID(i) for i in ids])


def _filter(r: FilterInfo) -> Filter:
    return Filter(
        id=r["external_id"],
        task_name=r["task_name"],
        workflow_name=r["workflow_name"],
        scope=r["scope"],
        expression=r["expression"],
        payload=r["payload"],
        source=r["source"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


@router.post("/filters", response_model=Filter, status_code=201)
async def create_filter(body: FilterCreate, who: Auth, admin: Admin) -> Filter:
    """Creates a filter (422 for invalid CEL, 404 for an unknown task or workflow)."""
    row = await admin.create_filter(
        who.tenant_id,
        task_name=body.task_name or "",
        workflow_name=body.workflow_name or "",
        expression=body.expression,
        scope=body.scope or "",
        payload=json.dumps(body.payload).encode() if body.payload is not None else b"",
    )
    return _filter(row)


@router.get("/filters", response_model=FilterList)
async def list_filters(
    who: Auth,
    admin: Admin,
    task_name: str | None = None,
    workflow_name: str | None = None,
    scope: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
) -> FilterList:
    """Filters, oldest first."""
    rows = await admin.list_filters(
        who.tenant_id,
        task_name=task_name or "",
        workflow_name=workflow_name or "",
        scope=scope or "",
        limit=limit,
    )
    return FilterList(items=[_filter(r) for r in rows])


@router.get("/filters/{filter_id}", response_model=Filter)
async def get_filter(filter_id: uuid.UUID, who: Auth, admin: Admin) -> Filter:
    return _filter(await admin.get_filter(who.tenant_id, str(filter_id)))


@router.patch("/filters/{filter_id}", response_model=Filter)
async def update_filter(
    filter_id: uuid.UUID, body: FilterUpdate, who: Auth, admin: Admin
) -> Filter:
    """Changes a filter's expression, scope or payload (a code filter is refused)."""
    row = await admin.update_filter(
        who.tenant_id,
        str(filter_id),
        expression=body.expression,
        scope=body.scope,
        payload=json.dumps(body.payload).encode() if body.payload is not None else None,
    )
    return _filter(row)


@router.delete("/filters/{filter_id}", status_code=204)
async def delete_filter(filter_id: uuid.UUID, who: Auth, admin: Admin) -> Response:
    await admin.delete_filter(who.tenant_id, str(filter_id))
    return Response(status_code=204)
