"""The engine's gRPC front: authenticates each call and hands it to the right service.

Stoker errors become gRPC status codes with the error's message as details (the SDK turns
them back into the same exception types); anything unexpected becomes INTERNAL without
taking the engine down. Malformed messages are rejected by gRPC itself before they reach
a handler.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

import grpc

from stoker._proto import engine_pb2 as pb
from stoker._proto import engine_pb2_grpc as pb_grpc
from stoker.engine.auth import Principal, TokenAuth, bearer
from stoker.engine.dispatcher import Dispatcher
from stoker.engine.dispatcher.served import ServedTasks
from stoker.engine.ingest import Ingest, TriggerInput
from stoker.engine.runs import RunWatcher
from stoker.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    StokerError,
    UnknownTaskError,
)

log = logging.getLogger("stoker.engine.server")

_CODES: list[tuple[type[StokerError], grpc.StatusCode]] = [
    (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (UnknownTaskError, grpc.StatusCode.NOT_FOUND),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (PayloadTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
]

# The SDK maps this trailing metadata key back to the exception class.
ERROR_TYPE_KEY = "stoker-error"

MAX_AWAIT_MS = 60_000


def status_for(exc: StokerError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return grpc.StatusCode.FAILED_PRECONDITION


class Handlers:
    """What every servicer of the engine shares: who is calling, and how errors leave."""

    _auth: TokenAuth

    async def _principal(self, context: grpc.aio.ServicerContext) -> Principal:
        header = dict(context.invocation_metadata() or ()).get("authorization")
        token = bearer(header if isinstance(header, str) else None)
        return await self._auth.authenticate(token)

    async def _fail(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        """Aborts the call: a Stoker error with its status and type, anything else INTERNAL."""
        if isinstance(exc, StokerError):
            context.set_trailing_metadata(((ERROR_TYPE_KEY, type(exc).__name__),))
            await context.abort(status_for(exc), exc.message)
        log.exception("unexpected error in a gRPC handler")
        await context.abort(
            grpc.StatusCode.INTERNAL, f"internal engine error: {type(exc).__name__}"
        )


class EngineServicer(Handlers, pb_grpc.EngineServicer):
    def __init__(
        self,
        auth: TokenAuth,
        ingest: Ingest,
        dispatcher: Dispatcher,
        watcher: RunWatcher,
        served: ServedTasks,
    ) -> None:
        self._auth = auth
        self._ingest = ingest
        self._dispatcher = dispatcher
        self._watcher = watcher
        self._served = served

    async def RegisterTasks(
        self, request: pb.RegisterTasksRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterTasksResponse:
        try:
            p = await self._principal(context)
            await self._ingest.register_tasks(
                p.tenant_id, [(t.name, t.config) for t in request.tasks]
            )
        except Exception as exc:
            await self._fail(context, exc)
        return pb.RegisterTasksResponse()

    async def Trigger(
        self, request: pb.TriggerRequest, context: grpc.aio.ServicerContext
    ) -> pb.TriggerResponse:
        try:
            p = await self._principal(context)
            items = [
                TriggerInput(
                    i.task_name,
                    i.input,
                    i.additional_metadata,
                    i.priority,
                    i.run_at_ms,
                    i.desired_worker_id,
                )
                for i in request.items
            ]
            ids = await self._ingest.trigger(p.tenant_id, items)
        except Exception as exc:
            await self._fail(context, exc)
        unserved = await self._served.report(p.tenant_id, {i.task_name for i in items})
        return pb.TriggerResponse(run_ids=ids, unserved_task_names=unserved)

    async def AwaitRuns(
        self, request: pb.AwaitRunsRequest, context: grpc.aio.ServicerContext
    ) -> pb.AwaitRunsResponse:
        try:
            p = await self._principal(context)
            try:
                ids = [uuid.UUID(r) for r in request.run_ids]
            except ValueError:
                raise NotFoundError(f"not a run id: {list(request.run_ids)[:5]}") from None
            timeout = min(max(request.timeout_ms, 0), MAX_AWAIT_MS) / 1000
            rows = await self._watcher.wait(p.tenant_id, ids, timeout)
        except Exception as exc:
            await self._fail(context, exc)
        return pb.AwaitRunsResponse(results=[_result(r) for r in rows])

    async def Connect(
        self,
        request_iterator: AsyncIterator[pb.WorkerMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.EngineMessage]:
        try:
            p = await self._principal(context)
            async for msg in self._dispatcher.connect(p.tenant_id, request_iterator):
                yield msg
        except Exception as exc:
            await self._fail(context, exc)

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatResponse:
        known = False
        try:
            await self._principal(context)
            try:
                worker = uuid.UUID(request.worker_id)
            except ValueError:
                raise InvalidRequestError(
                    f"worker_id {request.worker_id!r} is not a UUID"
                ) from None
            known = await self._dispatcher.heartbeat(worker)
        except Exception as exc:
            await self._fail(context, exc)
        return pb.HeartbeatResponse(known=known)

    async def PutRateLimit(
        self,
        request: pb.PutRateLimitRequest,
        context: grpc.aio.ServicerContext,
    ) -> pb.PutRateLimitResponse:
        try:
            p = await self._principal(context)
            await self._ingest.put_rate_limit(
                p.tenant_id, request.key, request.limit, request.duration_ms
            )
        except Exception as exc:
            await self._fail(context, exc)
        return pb.PutRateLimitResponse()


def _result(row: dict[str, object]) -> pb.RunResult:
    error = row.get("error")
    res = pb.RunResult(run_id=str(row["external_id"]), status=str(row["status"]))
    if row.get("output") is not None:
        res.output = str(row["output"]).encode()
    if isinstance(error, dict):
        res.error.CopyFrom(
            pb.RunError(
                type=str(error.get("type", "")),
                message=str(error.get("message", "")),
                traceback=str(error.get("traceback", "")),
            )
        )
    return res
