"""How the REST API answers a failure: always a JSON :class:`~stoker.engine.api.models.ErrorBody`.

A Stoker error answers with the HTTP status its class names (:mod:`stoker.errors`, the same
table the gRPC side reads) and its class name as the type; a request FastAPI cannot
validate 422 naming the parameter; an unknown route 404; a value the database refuses 422;
a database outage 503.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from stoker.engine.api.models import ErrorBody
from stoker.errors import StokerError

log = logging.getLogger("stoker.engine.api")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "The API token is missing, unknown or revoked"},
    422: {"model": ErrorBody, "description": "A parameter is invalid; the message names it"},
}
"""The OpenAPI responses every authenticated route can give."""


def error_response(status: int, type_: str, message: str, **headers: str) -> JSONResponse:
    """An :class:`ErrorBody` answer."""
    body = {"error": {"type": type_, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def stoker_error_response(exc: StokerError) -> JSONResponse:
    """The answer to a request that failed with ``exc``: its class's status and name."""
    status = exc.http_status
    headers = {"www-authenticate": "Bearer"} if status == 401 else {}
    return error_response(status, type(exc).__name__, exc.message, **headers)


async def _on_stoker_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StokerError)
    if exc.http_status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return stoker_error_response(exc)


def _where(loc: tuple[int | str, ...]) -> str:
    kinds = {"query": "query parameter", "path": "path parameter", "header": "header"}
    if len(loc) >= 2 and loc[0] in kinds:
        return f"{kinds[str(loc[0])]} {loc[1]!r}"
    return ".".join(map(str, loc)) or "request"


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{_where(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in exc.errors()
    ]
    return error_response(422, "InvalidRequestError", "; ".join(problems) or "invalid request")


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = "NotFoundError" if exc.status_code == 404 else "HTTPError"
    message = str(exc.detail)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see /docs"
    return error_response(exc.status_code, type_, message, **(exc.headers or {}))


async def _on_refused_value(request: Request, exc: Exception) -> JSONResponse:
    return error_response(422, "InvalidRequestError", f"the database refused a value: {exc}")


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s: database error: %s", request.method, request.url.path, exc)
    return error_response(503, "DatabaseUnavailable", "the database is unavailable; retry shortly")


def add_error_handlers(app: FastAPI) -> None:
    """Installs the answers above on ``app``."""
    app.add_exception_handler(StokerError, _on_stoker_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(psycopg.OperationalError, _on_database_error)
    app.add_exception_handler(psycopg.DataError, _on_refused_value)
