"""What an SDK client calls to read logs, streams and run events: the ``Observe`` service
(:mod:`stoker.engine.observe`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

from stoker._proto import observe_pb2 as opb
from stoker.db.store.observe import LogRow
from stoker.engine.auth import Principal, TokenAuth
from stoker.engine.observe import Observe
from stoker.engine.observe.logs import level_name
from stoker.engine.rpc.handlers import Servicer, rpc, server_stream_rpc
from stoker.engine.schedules import check_metadata
from stoker.errors import InvalidRequestError


def run_uuid(value: str) -> uuid.UUID:
    """A run id from a request; InvalidRequestError when it is not a UUID."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidRequestError(f"run id {value!r} is not a UUID") from None


def log_entry(row: LogRow) -> opb.LogEntry:
    """A stored line as the SDK gets it."""
    return opb.LogEntry(
        run_id=str(row["run_id"]),
        task_run_id=str(row["task_run_id"]),
        task_name=row["task_name"],
        attempt=row["attempt"],
        level=level_name(row["level"]),
        logger=row["logger"],
        message=row["message"],
        at_ms=row["at_ms"],
    )


class ObserveService(Servicer):
    """Hands each call to :class:`~stoker.engine.observe.Observe`."""

    def __init__(self, auth: TokenAuth, observe: Observe) -> None:
        super().__init__(auth)
        self._observe = observe

    @rpc
    async def ListLogs(
        self, request: opb.ListLogsRequest, caller: Principal
    ) -> opb.ListLogsResponse:
        page, finished = await self._observe.run_logs(
            caller.tenant_id,
            run_uuid(request.run_id),
            request.cursor,
            request.limit or 1000,
        )
        return opb.ListLogsResponse(
            lines=[log_entry(r) for r in page.rows],
            next_cursor=page.next_cursor or "",
            finished=finished,
        )

    @server_stream_rpc
    async def ReadStream(
        self, request: opb.ReadStreamRequest, caller: Principal
    ) -> AsyncIterator[opb.StreamChunk]:
        attempt, chunks = await self._observe.stream(
            caller.tenant_id, run_uuid(request.run_id), request.attempt, request.after_seq
        )

        async def replies() -> AsyncIterator[opb.StreamChunk]:
            try:
                async for c in chunks:
                    yield opb.StreamChunk(
                        data=c["data"], text=c["is_text"], seq=c["seq"], attempt=attempt
                    )
            finally:
                await chunks.aclose()

        return replies()

    @server_stream_rpc
    async def WatchRuns(
        self, request: opb.WatchRunsRequest, caller: Principal
    ) -> AsyncIterator[opb.RunEvent]:
        text = check_metadata(request.additional_metadata, "additional_metadata")
        metadata = json.loads(text) if text else None
        events = await self._observe.events(
            caller.tenant_id,
            run_id=run_uuid(request.run_id) if request.run_id else None,
            task_name=request.task_name or None,
            metadata=metadata,
            resume=request.resume,
        )

        async def replies() -> AsyncIterator[opb.RunEvent]:
            try:
                async for e in events:
                    yield opb.RunEvent(
                        run_id=e.run_id,
                        task_run_id=e.task_run_id,
                        task_name=e.task_name,
                        kind=e.kind,
                        attempt=e.attempt,
                        worker_id=e.worker_id,
                        worker_name=e.worker_name,
                        status=e.status,
                        error=e.error,
                        at_ms=int(e.at.timestamp() * 1000),
                        cursor=e.cursor,
                    )
            finally:
                await events.aclose()

        return replies()
