"""What an SDK client calls to manage scheduled runs: the ``Schedules`` service."""

from __future__ import annotations

import json
from datetime import datetime

from stoker._proto import schedules_pb2 as spb
from stoker.db.store.schedules import ScheduledRunRow
from stoker.engine.auth import Principal, TokenAuth
from stoker.engine.ingest.requests import RequestKey
from stoker.engine.rpc.client_service import request_content
from stoker.engine.rpc.handlers import Servicer, rpc
from stoker.engine.schedules import (
    DEFAULT_LIST,
    ScheduleFilter,
    ScheduleInput,
    Schedules,
    at_ms,
    check_metadata,
    parse_ids,
)


class ScheduleService(Servicer):
    """Hands each call to :class:`~stoker.engine.schedules.Schedules`."""

    def __init__(self, auth: TokenAuth, schedules: Schedules) -> None:
        super().__init__(auth)
        self._schedules = schedules

    @rpc
    async def CreateSchedules(
        self, request: spb.CreateSchedulesRequest, caller: Principal
    ) -> spb.CreateSchedulesResponse:
        rows = await self._schedules.create(
            caller.tenant_id,
            [
                ScheduleInput(
                    i.task_name,
                    i.workflow_name,
                    i.input,
                    i.additional_metadata,
                    i.priority,
                    i.run_at_ms,
                )
                for i in request.items
            ],
            strict=request.strict,
            request=RequestKey.of(request.request_key, "schedules", request_content(request)),
        )
        return spb.CreateSchedulesResponse(schedules=[info(r) for r in rows])

    @rpc
    async def ListSchedules(
        self, request: spb.ListSchedulesRequest, caller: Principal
    ) -> spb.ListSchedulesResponse:
        rows = await self._schedules.list(caller.tenant_id, schedule_filter(request.filter))
        return spb.ListSchedulesResponse(schedules=[info(r) for r in rows])

    @rpc
    async def UpdateSchedule(
        self, request: spb.UpdateScheduleRequest, caller: Principal
    ) -> spb.ScheduleInfo:
        (external_id,) = parse_ids([request.id])
        row = await self._schedules.update(
            caller.tenant_id,
            external_id,
            run_at_ms=request.run_at_ms,
            input=request.input,
            additional_metadata=request.additional_metadata,
            strict=request.strict,
        )
        return info(row)

    @rpc
    async def DeleteSchedules(
        self, request: spb.DeleteSchedulesRequest, caller: Principal
    ) -> spb.DeleteSchedulesResponse:
        ids = await self._schedules.delete(caller.tenant_id, schedule_filter(request.filter))
        return spb.DeleteSchedulesResponse(ids=ids)


def schedule_filter(f: spb.ScheduleFilter) -> ScheduleFilter:
    """The filter of a list or delete call, checked."""
    return ScheduleFilter(
        ids=parse_ids(list(f.ids)),
        names=list(f.names),
        statuses=[s.upper() for s in f.statuses],
        since=at_ms(f.since_ms, "since_ms") if f.since_ms else None,
        until=at_ms(f.until_ms, "until_ms") if f.until_ms else None,
        metadata=check_metadata(f.additional_metadata, "filter additional_metadata"),
        limit=f.limit or DEFAULT_LIST,
    )


def _ms(at: datetime | None) -> int:
    return int(at.timestamp() * 1000) if at else 0


def info(r: ScheduledRunRow) -> spb.ScheduleInfo:
    """A stored scheduled run on the wire."""
    return spb.ScheduleInfo(
        id=str(r["external_id"]),
        task_name=r["task_name"] or "",
        workflow_name=r["workflow_name"] or "",
        run_at_ms=_ms(r["run_at"]),
        input=json.dumps(r["input"]).encode(),
        additional_metadata=json.dumps(r["additional_metadata"]).encode(),
        priority=r["priority"],
        status=r["status"],
        run_id=str(r["run_id"]) if r["run_id"] else "",
        error=r["error"] or "",
        created_at_ms=_ms(r["created_at"]),
        fired_at_ms=_ms(r["fired_at"]),
    )
