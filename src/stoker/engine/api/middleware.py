"""ASGI middleware of the REST API: what is checked before any route runs.

:class:`GuardBodies` (outermost) refuses a request body before it is read: no declared
length, too large, or no valid token on ``/api``. :class:`CatchAll` turns a bug into a 500
that says nothing about internals. :class:`StorableBodies` refuses a JSON body no route
could store.
"""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stoker._core.wire import json_problem
from stoker.engine.api.errors import error_response, stoker_error_response
from stoker.engine.auth import TokenAuth, bearer
from stoker.errors import (
    AuthenticationError,
    EngineUnavailableError,
    InvalidRequestError,
    PayloadTooLargeError,
)

log = logging.getLogger("stoker.engine.api")


class CatchAll:
    """Turns an unexpected exception into a 500 that says nothing about internals.

    Starlette's own last-resort handler re-raises after answering, which would make every
    bug an error in the server loop; the details go to the log instead.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            response = error_response(
                500, "InternalError", "internal error; the engine log has details"
            )
            await response(scope, receive, send)


class GuardBodies:
    """Checks a request that carries a body before the body is read: it must declare its
    length, within ``limit`` bytes, and on ``/api`` carry a valid token. The server reads
    a body only as the app asks for it, so a refused one is never held in memory."""

    def __init__(self, app: ASGIApp, auth: TokenAuth, limit: int) -> None:
        self.app = app
        self.auth = auth
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = await self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _refusal(self, scope: Scope) -> JSONResponse | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length")
        if length is None:
            if "chunked" not in headers.get("transfer-encoding", ""):
                return None
            return error_response(
                411, "LengthRequired", "send a request body with a content-length"
            )
        if not length.isdigit():
            return error_response(400, "InvalidRequestError", "content-length is not a number")
        if int(length) > self.limit:
            return stoker_error_response(
                PayloadTooLargeError(
                    f"the request body is {length} bytes, over the limit of {self.limit} bytes"
                )
            )
        if int(length) == 0 or not str(scope.get("path", "")).startswith("/api/"):
            return None
        try:
            await self.auth.authenticate(bearer(headers.get("authorization")))
        except AuthenticationError as exc:
            return stoker_error_response(exc)
        except Exception as exc:
            log.warning("cannot verify an API token: %s", exc)
            return stoker_error_response(EngineUnavailableError("cannot verify the API token now"))
        return None


class StorableBodies:
    """422 for a JSON request body that no route could use: nested deeper than
    :data:`~stoker._core.wire.MAX_JSON_DEPTH` (a recursive parser would fail on it), holding a
    NUL or a lone surrogate (PostgreSQL cannot store it), or not JSON. Checked before any
    route parses the body; :class:`GuardBodies` has bounded its size already. Incoming
    webhooks (``/webhooks/...``) are left to their route, which checks the signature first."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") not in ("POST", "PUT", "PATCH")
            # An incoming webhook checks its body itself, after the request's signature.
            or str(scope.get("path", "")).startswith("/webhooks/")
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if b"json" not in headers.get(b"content-type", b""):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        problem = json_problem(body) if body else None
        if problem is not None:
            refusal = stoker_error_response(
                InvalidRequestError(f"the request body is refused: {problem}")
            )
            await refusal(scope, receive, send)
            return
        pending = iter(messages)

        async def replay() -> Message:
            return next(pending, None) or await receive()

        await self.app(scope, replay, send)
