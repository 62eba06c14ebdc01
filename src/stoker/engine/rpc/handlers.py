"""What every gRPC handler of the engine shares: who is calling, and how errors leave.

A handler is written as ``async def Method(self, request, caller)`` under :func:`rpc` (or
an async generator ``Method(self, requests, context, caller)`` under :func:`stream_rpc`):
the decorator authenticates the call's token, passes the caller's :class:`Principal` in,
and turns any exception into the call's status (:func:`fail`). Stoker errors answer with
the status code their class names (:mod:`stoker.errors`) and their type in the trailing
metadata, which the SDK turns back into the same exception; a database outage answers
UNAVAILABLE, which the SDK retries; anything unexpected answers INTERNAL without taking the
engine down.

Malformed messages are rejected by gRPC itself before they reach a handler, and
:class:`AuthInterceptor` refuses calls without a valid token before their request is read.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import NoReturn, TypeVar

import grpc
from grpc.aio import ServicerContext as Context

from stoker._core.wire import ERROR_TYPE_KEY
from stoker.engine import faults
from stoker.engine.auth import Principal, TokenAuth, bearer
from stoker.errors import AuthenticationError, EngineUnavailableError, StokerError

log = logging.getLogger("stoker.engine.server")


class Servicer:
    """A gRPC servicer of the engine: its handlers answer as the tenant of the call's token."""

    def __init__(self, auth: TokenAuth) -> None:
        self.auth = auth


S = TypeVar("S", bound=Servicer)
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def token_of(context: Context) -> str | None:
    """The bearer token a call carries, if any."""
    header = dict(context.invocation_metadata() or ()).get("authorization")
    return bearer(header if isinstance(header, str) else None)


def status_for(exc: StokerError) -> grpc.StatusCode:
    """The status code a call failing with ``exc`` answers with (:mod:`stoker.errors`)."""
    return grpc.StatusCode[exc.grpc_code]


async def fail(context: Context, exc: BaseException) -> NoReturn:
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
    else:
        log.exception("unexpected error in a gRPC handler")
        await context.abort(
            grpc.StatusCode.INTERNAL, f"internal engine error: {type(exc).__name__}"
        )
    raise AssertionError("context.abort returned")  # it raises to end the call


def rpc(
    handler: Callable[[S, Req, Principal], Awaitable[Resp]],
) -> Callable[[S, Req, Context], Awaitable[Resp]]:
    """A unary handler ``(self, request, caller)`` as gRPC calls it, ``(self, request,
    context)``: authenticated, with every exception answered by :func:`fail`."""

    @functools.wraps(handler)
    async def answer(self: S, request: Req, context: Context) -> Resp:
        try:
            caller = await self.auth.authenticate(token_of(context))
            return await handler(self, request, caller)
        except Exception as exc:
            await fail(context, exc)

    return answer


def stream_rpc(
    handler: Callable[[S, AsyncIterator[Req], Context, Principal], AsyncGenerator[Resp]],
) -> Callable[[S, AsyncIterator[Req], Context], AsyncGenerator[Resp]]:
    """A streaming handler ``(self, requests, context, caller)`` as gRPC calls it: the
    same as :func:`rpc`, for an async generator of response messages."""

    @functools.wraps(handler)
    async def answer(
        self: S, requests: AsyncIterator[Req], context: Context
    ) -> AsyncGenerator[Resp]:
        try:
            caller = await self.auth.authenticate(token_of(context))
            # However the call ends, the handler's generator is closed with it.
            async with contextlib.aclosing(handler(self, requests, context, caller)) as replies:
                async for reply in replies:
                    yield reply
        except Exception as exc:
            await fail(context, exc)

    return answer


def server_stream_rpc(
    handler: Callable[[S, Req, Principal], Awaitable[AsyncIterator[Resp]]],
) -> Callable[[S, Req, Context], AsyncGenerator[Resp]]:
    """A server-streaming handler ``async (self, request, caller)`` returning an async iterator
    of replies, as gRPC calls it: the same as :func:`rpc`. An async generator the handler
    returns is closed with the call (a client that went away frees what it held)."""

    @functools.wraps(handler)
    async def answer(self: S, request: Req, context: Context) -> AsyncGenerator[Resp]:
        try:
            caller = await self.auth.authenticate(token_of(context))
            replies = await handler(self, request, caller)
            try:
                async for reply in replies:
                    yield reply
            finally:
                close = getattr(replies, "aclose", None)
                if close is not None:
                    await close()
        except Exception as exc:
            await fail(context, exc)

    return answer


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
            code, message, error_type = status_for(exc), exc.message, exc
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

    async def refuse(_requests: object, context: Context) -> None:
        if error is not None:
            context.set_trailing_metadata(((ERROR_TYPE_KEY, type(error).__name__),))
        await context.abort(code, message)

    if handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    return grpc.stream_unary_rpc_method_handler(refuse)
