"""What an SDK client calls to read and replay events and to manage filters: the
``Events`` service (pushing is ``Workflows.PushEvents``)."""

from __future__ import annotations

import json
from datetime import datetime

from stoker._proto import events_pb2 as epb
from stoker.db.store.events import EventRunRow, EventSummary, FilterInfo
from stoker.engine.auth import Principal, TokenAuth
from stoker.engine.events import DEFAULT_LIST, EventAdmin, EventFilter
from stoker.engine.rpc.handlers import Servicer, rpc
from stoker.engine.schedules import at_ms, check_metadata


class EventService(Servicer):
    """Hands each call to :class:`~stoker.engine.events.EventAdmin`."""

    def __init__(self, auth: TokenAuth, admin: EventAdmin) -> None:
        super().__init__(auth)
        self._admin = admin

    @rpc
    async def ListEvents(
        self, request: epb.ListEventsRequest, caller: Principal
    ) -> epb.ListEventsResponse:
        rows = await self._admin.list_events(
            caller.tenant_id,
            EventFilter(
                key=request.key or None,
                scope=request.scope or None,
                metadata=check_metadata(request.additional_metadata, "additional_metadata"),
                since=at_ms(request.since_ms, "since_ms") if request.since_ms else None,
                until=at_ms(request.until_ms, "until_ms") if request.until_ms else None,
                limit=request.limit or DEFAULT_LIST,
            ),
        )
        return epb.ListEventsResponse(events=[summary(r) for r in rows])

    @rpc
    async def GetEvent(self, request: epb.GetEventRequest, caller: Principal) -> epb.EventInfo:
        event = await self._admin.get(caller.tenant_id, request.id)
        r = event.row
        return epb.EventInfo(
            id=str(r["external_id"]),
            key=r["key"],
            scope=r["scope"] or "",
            additional_metadata=json.dumps(r["additional_metadata"]).encode(),
            priority=r["priority"],
            created_at_ms=ms(r["created_at"]),
            run_count=len(event.runs),
            payload=json.dumps(r["payload"]).encode(),
            runs=[event_run(x) for x in event.runs],
        )

    @rpc
    async def ReplayEvent(
        self, request: epb.ReplayEventRequest, caller: Principal
    ) -> epb.ReplayEventResponse:
        return epb.ReplayEventResponse(
            run_ids=await self._admin.replay(caller.tenant_id, request.id)
        )

    @rpc
    async def CreateFilter(
        self, request: epb.CreateFilterRequest, caller: Principal
    ) -> epb.FilterInfo:
        row = await self._admin.create_filter(
            caller.tenant_id,
            task_name=request.task_name,
            workflow_name=request.workflow_name,
            name=request.name,
            expression=request.expression,
            scope=request.scope,
            payload=request.payload,
        )
        return filter_info(row)

    @rpc
    async def ListFilters(
        self, request: epb.ListFiltersRequest, caller: Principal
    ) -> epb.ListFiltersResponse:
        rows = await self._admin.list_filters(
            caller.tenant_id,
            filter_id=request.id,
            task_name=request.task_name,
            workflow_name=request.workflow_name,
            scope=request.scope,
            limit=request.limit or DEFAULT_LIST,
        )
        return epb.ListFiltersResponse(filters=[filter_info(r) for r in rows])

    @rpc
    async def UpdateFilter(
        self, request: epb.UpdateFilterRequest, caller: Principal
    ) -> epb.FilterInfo:
        row = await self._admin.update_filter(
            caller.tenant_id,
            request.id,
            expression=request.expression if request.HasField("expression") else None,
            scope=request.scope if request.HasField("scope") else None,
            payload=request.payload if request.HasField("payload") else None,
        )
        return filter_info(row)

    @rpc
    async def DeleteFilter(
        self, request: epb.DeleteFilterRequest, caller: Principal
    ) -> epb.DeleteFilterResponse:
        await self._admin.delete_filter(caller.tenant_id, request.id)
        return epb.DeleteFilterResponse()


def ms(at: datetime | None) -> int:
    return int(at.timestamp() * 1000) if at else 0


def summary(r: EventSummary) -> epb.EventInfo:
    return epb.EventInfo(
        id=str(r["external_id"]),
        key=r["key"],
        scope=r["scope"] or "",
        additional_metadata=json.dumps(r["additional_metadata"]).encode(),
        priority=r["priority"],
        created_at_ms=ms(r["created_at"]),
        run_count=int(r["runs"]),
    )


def event_run(r: EventRunRow) -> epb.EventRun:
    return epb.EventRun(
        run_id=str(r["run_id"]),
        task_name=r["task_name"] or "",
        workflow_name=r["workflow_name"] or "",
        filter_id=str(r["filter_id"]) if r["filter_id"] else "",
        replay=r["replay"],
        status=r["status"] or "",
        triggered_at_ms=ms(r["triggered_at"]),
    )


def filter_info(r: FilterInfo) -> epb.FilterInfo:
    return epb.FilterInfo(
        id=str(r["external_id"]),
        task_name=r["task_name"] or "",
        workflow_name=r["workflow_name"] or "",
        scope=r["scope"] or "",
        expression=r["expression"],
        payload=json.dumps(r["payload"]).encode(),
        source=r["source"],
        created_at_ms=ms(r["created_at"]),
        updated_at_ms=ms(r["updated_at"]),
    )
