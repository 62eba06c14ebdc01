"""The engine's gRPC front: authenticates each call and hands it to the right service.

Stoker errors become gRPC status codes with the error's message as details (the SDK turns
them back into the same exception types); a database outage becomes UNAVAILABLE, which the
SDK retries; anything unexpected becomes INTERNAL without taking the engine down.
Malformed messages are rejected by gRPC itself before they reach a handler, and
:class:`AuthInterceptor` refuses calls without a valid token before their request is read.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from stoker._core.wire import ERROR_TYPE_KEY
from stoker._proto import engine_pb2 as pb
from stoker._proto import engine_pb2_grpc as pb_grpc
from stoker.engine import faults
from stoker.engine.auth import Principal, TokenAuth, bearer
from stoker.engine.dispatcher import Dispatcher
from stoker.engine.dispatcher.served import ServedTasks
from stoker.engine.ingest import Ingest, TriggerInput
from stoker.engine.ingest.requests import RequestKey
from stoker.engine.runs.watcher import RunWatcher
from stoker.errors import (
    AuthenticationError,
    EngineUnavailableError,
    InvalidRequestError,
    NotFoundError,
    StokerError,
)

log = logging.getLogger("stoker.engine.server")

T = TypeVar("T")

MAX_AWAIT_MS = 60_000


def status_for(exc: StokerError) -> grpc.StatusCode:
    """The status code a call failing with ``exc`` answers with (:mod:`stoker.errors`)."""
    return grpc.StatusCode[exc.grpc_code]


def _token(context: grpc.aio.ServicerContext) -> str | None:
    header = dict(context.invocation_metadata() or ()).get("authorization")
    return bearer(header if isinstance(header, str) else None)


# How often a worker stream's token is checked again (answers come from TokenAuth's cache,
# which a revocation clears at once), so a revoked token's worker is cut off within a second.
_STREAM_RECHECK_S = 0.25


async def _until_refused(
    stream: AsyncIterator[T], auth: TokenAuth, token: str | None
) -> AsyncIterator[T]:
    """The messages of ``stream`` until the token stops authenticating (revoked or expired):
    then the stream is closed, as when its peer goes away, and AuthenticationError raised."""
    refused: asyncio.Future[AuthenticationError] = asyncio.get_running_loop().create_future()

    async def watch() -> None:
        while True:
            await asyncio.sleep(_STREAM_RECHECK_S)
            try:
                await auth.authenticate(token)
            except AuthenticationError as exc:
                refused.set_result(exc)
                return

    watcher = asyncio.create_task(watch(), name="stoker-stream-auth")
    step: asyncio.Future[T] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(stream))
            await asyncio.wait((step, refused), return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                raise refused.result()
            try:
                message = step.result()
            except StopAsyncIteration:
                return
            yield message
    finally:
        # Whatever ends this (a refusal, the peer going away), the stream's pending step
        # is cancelled first: the stream then ends as when a worker disconnects.
        watcher.cancel()
        if step is not None and not step.done():
            step.cancel()
        await asyncio.gather(watcher, *([step] if step is not None else []), return_exceptions=True)
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


class Handlers:
    """What every servicer of the engine shares: who is calling, and how errors leave."""

    _auth: TokenAuth

    async def _principal(self, context: grpc.aio.ServicerContext) -> Principal:
        return await self._auth.authenticate(_token(context))

    async def _fail(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        """Aborts the call: a Stoker error with its status and type, anything else INTERNAL.

        A database outage is UNAVAILABLE (the SDK retries it as it retries an unreachable
        engine) and a value the database refuses INVALID_ARGUMENT
        (:func:`~stoker.engine.faults.for_caller`).
        """
        exc = faults.for_caller(exc)
        if isinstance(exc, EngineUnavailableError):
            log.warning("answering UNAVAILABLE: %s", exc.message)
        if isinstance(exc, StokerError):
            context.set_trailing_metadata(((ERROR_TYPE_KEY, type(exc).__name__),))
            await context.abort(status_for(exc), exc.message)
        log.exception("unexpected error in a gRPC handler")
        await context.abort(
            grpc.StatusCode.INTERNAL, f"internal engine error: {type(exc).__name__}"
        )


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls without a valid token before their request is read.

    gRPC runs interceptors when a call's headers arrive; the handler reads the request
    message only afterwards. A refused call is answered by a handler that never reads its
    request stream, so an unauthenticated peer's body stays in the transport's flow-control
    window (which stops the peer from sending more) and is dropped with the call: it is
    never assembled into a message in the engine's memory, whatever size it claims.
    """

    def __init__(self, auth: TokenAuth) -> None:
        self._auth = auth

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        error_type: StokerError | None
        metadata = dict(handler_call_details.invocation_metadata or ())
        header = metadata.get("authorization")
        try:
            await self._auth.authenticate(bearer(header if isinstance(header, str) else None))
        except AuthenticationError as exc:
            code, message, error_type = grpc.StatusCode.UNAUTHENTICATED, exc.message, exc
        except Exception as exc:
            # The database cannot answer: the caller may retry (UNAVAILABLE is retried by
            # the SDK), but its request is not read either.
            log.warning("cannot verify an API token: %s", exc)
            code, message = grpc.StatusCode.UNAVAILABLE, "cannot verify the API token now"
            error_type = None
            if faults.transient(exc):
                unavailable = faults.unavailable(exc)
                message = f"cannot verify the API token now: {unavailable.message}"
                error_type = unavailable
        else:
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        return _refusal(handler, code, message, error_type) if handler is not None else None


def _refusal(
    handler: grpc.RpcMethodHandler,
    code: grpc.StatusCode,
    message: str,
    error: StokerError | None,
) -> grpc.RpcMethodHandler:
    """A handler of the same response shape that aborts at once with ``code``, declared
    request-streaming so that gRPC does not read the request before calling it."""

    async def refuse(_requests: object, context: grpc.aio.ServicerContext) -> None:
        if error is not None:
            context.set_trailing_metadata(((ERROR_TYPE_KEY, type(error).__name__),))
        await context.abort(code, message)

    if handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    return grpc.stream_unary_rpc_method_handler(refuse)


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
            key = RequestKey.of(request.request_key, "trigger", request_content(request))
            ids = await self._ingest.trigger(p.tenant_id, items, key)
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
            stream = self._dispatcher.connect(p.tenant_id, request_iterator)
            async for msg in _until_refused(stream, self._auth, _token(context)):
                yield msg
        except Exception as exc:
            await self._fail(context, exc)

    async def Heartbeat(
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatResponse:
        known = False
        try:
            p = await self._principal(context)
            try:
                worker = uuid.UUID(request.worker_id)
            except ValueError:
                raise InvalidRequestError(
                    f"worker_id {request.worker_id!r} is not a UUID"
                ) from None
            known = await self._dispatcher.heartbeat(p.tenant_id, worker)
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


def request_content(request: Message) -> bytes:
    """What a request key's fingerprint covers: the request as parsed, serialized the same
    way whatever client sent it."""
    return request.SerializeToString(deterministic=True)


def _result(row: Mapping[str, object]) -> pb.RunResult:
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
