"""What every handler of the Hatchet front door shares: the caller, and how errors leave.

Calls carry ``authorization: Bearer <Hatchet token>`` (:mod:`.tokens`); a handler under
:func:`hatchet_rpc` gets the :class:`Caller` (the Stoker principal and the token's claims)
and its failures are answered as the engine's own handlers answer them
(:func:`stoker.engine.rpc.handlers.fail`). Methods of Hatchet's services the front door does
not implement answer ``UNIMPLEMENTED`` with the feature they belong to (:func:`missing`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from grpc.aio import ServicerContext as Context

from stoker.engine.auth import Principal, TokenAuth, bearer
from stoker.engine.hatchet import tokens
from stoker.engine.rpc.handlers import fail
from stoker.errors import AuthenticationError, UnsupportedFeatureError


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a Hatchet call acts for: the Stoker principal of the token, and its claims."""

    principal: Principal
    claims: tokens.HatchetClaims

    @property
    def tenant_id(self) -> int:
        return self.principal.tenant_id


class HatchetAuth:
    """Authenticates Hatchet tokens: their shape and signature here, the API token inside
    them with the engine's :class:`TokenAuth` (cache, revocation, expiry)."""

    def __init__(self, auth: TokenAuth) -> None:
        self._auth = auth

    async def authenticate(self, context: Context) -> Caller:
        header = dict(context.invocation_metadata() or ()).get("authorization")
        token = bearer(header if isinstance(header, str) else None)
        if not token:
            raise AuthenticationError(
                "missing Hatchet token: set HATCHET_CLIENT_TOKEN to one made by "
                "`stoker token create --hatchet`"
            )
        claims = tokens.decode(token)
        return Caller(await self._auth.authenticate(claims.stoker_token), claims)


class HatchetServicer:
    """A servicer of one of Hatchet's services, answering as the caller of the token."""

    def __init__(self, auth: HatchetAuth) -> None:
        self.auth = auth


S = TypeVar("S", bound=HatchetServicer)
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def hatchet_rpc(
    handler: Callable[[S, Req, Caller], Awaitable[Resp]],
) -> Callable[[S, Req, Context], Awaitable[Resp]]:
    """A unary handler ``(self, request, caller)`` as gRPC calls it."""

    @functools.wraps(handler)
    async def answer(self: S, request: Req, context: Context) -> Resp:
        try:
            return await handler(self, request, await self.auth.authenticate(context))
        except Exception as exc:
            await fail(context, exc)

    return answer


def hatchet_stream(
    handler: Callable[[S, Req, Caller], AsyncIterator[Resp]],
) -> Callable[[S, Req, Context], AsyncGenerator[Resp]]:
    """A server-streaming handler ``(self, request, caller)`` (an async generator) as gRPC
    calls it; the generator is closed with the call."""

    @functools.wraps(handler)
    async def answer(self: S, request: Req, context: Context) -> AsyncGenerator[Resp]:
        try:
            caller = await self.auth.authenticate(context)
            replies = handler(self, request, caller)
            async with contextlib.aclosing(replies):  # type: ignore[type-var]
                async for reply in replies:
                    yield reply
        except Exception as exc:
            await fail(context, exc)

    return answer


def missing(service: str, method: str, feature: str, streaming: bool) -> Callable[..., Any]:
    """A handler answering ``UNIMPLEMENTED``, naming the feature, for a method the front
    door does not implement (after authenticating, so a bad token still hears why)."""
    message = (
        f"Stoker's Hatchet front door does not support {feature} yet ({service}.{method}); "
        "docs/hatchet.md lists what it supports"
    )

    async def refuse(self: HatchetServicer, request: object, context: Context) -> Any:
        try:
            await self.auth.authenticate(context)
            raise UnsupportedFeatureError(message)
        except Exception as exc:
            await fail(context, exc)

    if not streaming:
        return refuse

    async def refuse_stream(
        self: HatchetServicer, request: object, context: Context
    ) -> AsyncGenerator[Any]:
        await refuse(self, request, context)
        yield  # pragma: no cover - refuse always aborts

    return refuse_stream
