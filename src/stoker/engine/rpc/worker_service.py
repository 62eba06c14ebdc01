"""What a worker calls: its stream (``Connect``) and its heartbeats.

A worker's stream stays up for as long as the worker runs, so its token is checked again
while it is open: a revoked or expired token's worker is cut off within a second, as when
it goes away (the dispatcher requeues what it held).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

from grpc.aio import ServicerContext

from stoker._proto import engine_pb2 as pb
from stoker.engine.auth import Principal, TokenAuth
from stoker.engine.dispatcher import Dispatcher
from stoker.engine.rpc.handlers import Servicer, rpc, stream_rpc, token_of
from stoker.errors import AuthenticationError, InvalidRequestError

T = TypeVar("T")

# How often a worker stream's token is checked again (answers come from TokenAuth's cache,
# which a revocation clears at once), so a revoked token's worker is cut off within a second.
_STREAM_RECHECK_S = 0.25


class WorkerService(Servicer):
    """The worker-facing half of the ``Engine`` service: the stream, owned by the
    dispatcher, and heartbeats."""

    def __init__(self, auth: TokenAuth, dispatcher: Dispatcher) -> None:
        super().__init__(auth)
        self._dispatcher = dispatcher

    @stream_rpc
    async def Connect(
        self,
        requests: AsyncIterator[pb.WorkerMessage],
        context: ServicerContext,
        caller: Principal,
    ) -> AsyncGenerator[pb.EngineMessage]:
        stream = self._dispatcher.connect(caller.tenant_id, requests)
        async for message in _until_refused(stream, self.auth, token_of(context)):
            yield message

    @rpc
    async def Heartbeat(
        self, request: pb.HeartbeatRequest, caller: Principal
    ) -> pb.HeartbeatResponse:
        try:
            worker = uuid.UUID(request.worker_id)
        except ValueError:
            raise InvalidRequestError(f"worker_id {request.worker_id!r} is not a UUID") from None
        known, drain = await self._dispatcher.heartbeat(caller.tenant_id, worker)
        return pb.HeartbeatResponse(known=known, drain=drain)


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
