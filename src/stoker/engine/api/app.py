"""The engine's REST API: runs, workers and task definitions, read-only for now.

Every ``/api`` route needs ``authorization: Bearer <token>`` and sees only the token's
tenant. Runs and workers are named by their external UUIDs; the engine's bigint ids never
appear in a response or a cursor. Errors always have the shape of :class:`ErrorBody`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stoker._core.status import RunStatus
from stoker._core.wire import json_problem, text_problem
from stoker.db import Executor, NoParams
from stoker.db.store import read as read_store
from stoker.engine.api.models import (
    Attempt,
    ConcurrencySlot,
    ErrorBody,
    ErrorSummary,
    Health,
    RunDetail,
    RunError,
    RunPage,
    RunScheduling,
    RunSummary,
    TaskDef,
    TaskDefList,
    Worker,
    WorkerList,
    WorkerStatus,
)
from stoker.engine.auth import Principal, TokenAuth, bearer
from stoker.engine.dispatcher.served import ServedTasks
from stoker.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    StokerError,
)

log = logging.getLogger("stoker.engine.api")

MAX_PAGE = 500

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "The API token is missing, unknown or revoked"},
    422: {"model": ErrorBody, "description": "A parameter is invalid; the message names it"},
}


# --- params of the statements in db/sql/read.sql ------------------------------------------


# --- wiring -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _State:
    db: Executor
    auth: TokenAuth
    served: ServedTasks
    engine_id: str


def _state(request: Request) -> _State:
    state: _State = request.app.state.stoker
    return state


_bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API token of the tenant (`stoker lite` prints one).",
)


async def _principal(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer_scheme)],
) -> Principal:
    """The tenant a request acts for; 401 unless it carries a valid bearer token."""
    return await _state(request).auth.authenticate(bearer(request.headers.get("authorization")))


Auth = Annotated[Principal, Depends(_principal)]


async def _storable_query(request: Request) -> None:
    """422 for a query parameter holding NUL, which no filter can match (PostgreSQL text
    cannot hold it) and which would otherwise fail in the database driver."""
    for name, value in request.query_params.multi_items():
        if text_problem(name) or text_problem(value):
            raise InvalidRequestError(
                f"query parameter {name!r} is refused: it holds a NUL character (%00)"
            )


def _db(request: Request) -> Executor:
    return _state(request).db


DbDep = Annotated[Executor, Depends(_db)]
StateDep = Annotated[_State, Depends(_state)]


# --- converting rows ----------------------------------------------------------------------


def _run_error(value: Any) -> RunError | None:
    if not isinstance(value, dict):
        return None
    return RunError(
        type=str(value.get("type") or "Exception"),
        message=str(value.get("message") or ""),
        traceback=str(value.get("traceback") or ""),
    )


def _error_summary(value: Any) -> ErrorSummary | None:
    error = _run_error(value)
    return ErrorSummary(type=error.type, message=error.message) if error else None


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _duration_ms(started: datetime | None, finished: datetime | None) -> int | None:
    if started is None or finished is None:
        return None
    return max(0, round((finished - started).total_seconds() * 1000))


def _summary_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "run_id": row["external_id"],
        "task_name": row["task_name"],
        "status": row["status"],
        "error": _run_error(row["error"]),
        "additional_metadata": row["additional_metadata"] or {},
        "priority": row["priority"],
        "attempt": row["attempt"],
        "retry_count": row["retry_count"],
        "max_retries": row["max_retries"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "duration_ms": _duration_ms(row["started_at"], row["finished_at"]),
        "worker_id": row["worker_external_id"],
    }


def build_attempts(run: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> list[Attempt]:
    """The attempts of a run: one per ``task_event`` row, then the current attempt.

    Every attempt that ended other than by success left an event; the task row describes
    the attempt it is on now (queued, running, or its final outcome) unless an event
    already tells how that attempt ended.
    """
    attempts: list[Attempt] = []
    ended: set[int] = set()
    for event in events:
        data = event["data"] if isinstance(event["data"], dict) else {}
        attempts.append(
            Attempt(
                number=event["attempt"],
                status=event["kind"],
                error=_run_error(data.get("error")),
                worker_id=event["worker_external_id"],
                started_at=_timestamp(data.get("started_at")),
                finished_at=event["created_at"],
            )
        )
        ended.add(event["attempt"])
    if run["attempt"] not in ended:
        status = run["status"]
        attempts.append(
            Attempt(
                number=run["attempt"],
                status=status,
                # The task row keeps the previous attempt's error while a retry waits.
                error=_run_error(run["error"]) if status in ("FAILED", "CANCELLED") else None,
                worker_id=run["worker_external_id"],
                started_at=run["started_at"],
                finished_at=run["finished_at"],
            )
        )
    return attempts


# --- cursors ------------------------------------------------------------------------------


def encode_cursor(created_at: datetime, run_id: uuid.UUID) -> str:
    """An opaque cursor naming the last run of a page."""
    raw = json.dumps([created_at.isoformat(), str(run_id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The (created_at, run_id) of a cursor; InvalidRequestError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, run_id = json.loads(raw)
        at = datetime.fromisoformat(created)
        if at.tzinfo is None:
            raise ValueError("naive timestamp")
        return at, uuid.UUID(run_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(
            "query parameter 'cursor' is not a cursor this API returned "
            "(pass next_cursor from the previous page unchanged)"
        ) from exc


def _aware(value: datetime | None) -> datetime | None:
    """Timestamps without a zone are taken as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


# --- routes -------------------------------------------------------------------------------

health = APIRouter(tags=["health"])
api = APIRouter(prefix="/api/v1", responses=_ERRORS)


@health.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database cannot be reached"}},
)
async def healthz(db: DbDep) -> Any:
    """Liveness and database reachability; needs no token."""
    try:
        await read_store.api_ping(db, NoParams())
    except Exception as exc:
        log.warning("health check failed: %s", exc)
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return Health(status="ok")


@api.get(
    "/runs/{run_id}",
    response_model=RunDetail,
    tags=["runs"],
    responses={404: {"model": ErrorBody, "description": "No such run for this tenant"}},
)
async def get_run(request: Request, run_id: uuid.UUID, who: Auth, db: DbDep) -> RunDetail:
    """One run with its input, output, error and every attempt.

    A queued run whose task no live worker serves says so in ``waiting_reason``.
    """
    row = await read_store.api_get_run(db, read_store.ApiGetRun(who.tenant_id, run_id))
    if row is None:
        raise NotFoundError(f"no run with id {run_id}")
    events = await read_store.api_run_events(db, read_store.ApiRunEvents(who.tenant_id, row["id"]))
    slots = await read_store.api_run_concurrency(
        db, read_store.ApiRunConcurrency(who.tenant_id, row["id"])
    )
    config = row["task_config"] or {}
    return RunDetail(
        **_summary_fields(row),
        input=row["input"],
        output=row["output"],
        attempts=build_attempts(row, events),
        scheduling=RunScheduling(
            slot_cost=config.get("slot_cost", 1),
            durable=config.get("durable", False),
            sticky=config.get("sticky"),
            desired_worker_id=row["desired_worker_external_id"],
            desired_worker_labels=config.get("desired_worker_labels", {}),
            concurrency=[ConcurrencySlot(**s) for s in slots],
            rate_limits=row["rate_limits"] or [],
            assigned_at=row["assigned_at"],
        ),
        waiting_reason=await _waiting_reason(_state(request).served, who.tenant_id, row),
    )


async def _waiting_reason(
    served: ServedTasks, tenant_id: int, row: Mapping[str, Any]
) -> str | None:
    if row["status"] != RunStatus.QUEUED.value:
        return None
    name = row["task_name"]
    if not await served.unserved(tenant_id, [name]):
        return None
    return (
        f"no connected worker serves task {name!r}: the run waits until a worker that has "
        "it connects (or its schedule_timeout cancels it)"
    )


@api.get("/runs", response_model=RunPage, tags=["runs"])
async def list_runs(
    who: Auth,
    db: DbDep,
    status: Annotated[
        list[RunStatus] | None, Query(description="Only runs in these statuses (repeatable)")
    ] = None,
    task_name: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
    since: Annotated[
        datetime | None, Query(description="Created at or after (ISO 8601; UTC if no zone)")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="Created before (ISO 8601; UTC if no zone)")
    ] = None,
    cursor: Annotated[
        str | None, Query(description="next_cursor of the previous page", max_length=200)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> RunPage:
    """Runs, newest first, one page at a time."""
    after_at, after_id = decode_cursor(cursor) if cursor else (None, None)
    common: dict[str, Any] = {
        "tenant_id": who.tenant_id,
        "since": _aware(since),
        "until": _aware(until),
        "cursor_created_at": after_at,
        "cursor_run_id": after_id,
        "limit": limit + 1,  # one more than asked tells whether another page exists
    }
    # Each filter combination has its own statement so that every plan, even a generic
    # one, is a range scan of the index that fits it (see db/sql/read.sql).
    statuses = [s.value for s in dict.fromkeys(status or RunStatus)]
    rows: Sequence[read_store.RunSummary]
    if task_name is not None:
        rows = await read_store.api_list_runs_of_task(
            db, read_store.ApiListRunsOfTask(task_name=task_name, statuses=statuses, **common)
        )
    elif status:
        rows = await read_store.api_list_runs_by_status(
            db, read_store.ApiListRunsByStatus(statuses=statuses, **common)
        )
    else:
        rows = await read_store.api_list_runs(db, read_store.ApiListRuns(**common))
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = encode_cursor(last["created_at"], last["external_id"])
    items = [
        RunSummary(**(_summary_fields(r) | {"error": _error_summary(r["error"])})) for r in page
    ]
    return RunPage(items=items, next_cursor=next_cursor)


@api.get("/workers", response_model=WorkerList, tags=["workers"])
async def list_workers(
    who: Auth,
    db: DbDep,
    status: Annotated[
        list[WorkerStatus] | None, Query(description="Only workers in these statuses")
    ] = None,
) -> WorkerList:
    """The tenant's workers, their slots and how many attempts each is running."""
    statuses = [s.value for s in dict.fromkeys(status)] if status else None
    rows = await read_store.api_list_workers(db, read_store.ApiListWorkers(who.tenant_id, statuses))
    return WorkerList(
        items=[
            Worker(
                worker_id=r["external_id"],
                name=r["name"],
                status=r["status"],
                slots=r["slots"],
                running=r["running"],
                free_slots=max(0, r["slots"] - r["running"]) if r["status"] == "ACTIVE" else 0,
                task_names=list(r["task_names"]),
                last_heartbeat_at=r["last_heartbeat_at"],
                connected_at=r["connected_at"],
                labels=r["labels"],
                durable_slots=r["durable_slots"],
            )
            for r in rows
        ]
    )


@api.get("/tasks", response_model=TaskDefList, tags=["tasks"])
async def list_tasks(who: Auth, db: DbDep) -> TaskDefList:
    """The task definitions workers of the tenant have registered."""
    rows = await read_store.api_list_task_defs(db, read_store.ApiListTaskDefs(who.tenant_id))
    return TaskDefList(
        items=[
            TaskDef(name=r["name"], config=r["config"], updated_at=r["updated_at"]) for r in rows
        ]
    )


# --- errors -------------------------------------------------------------------------------


def _error(status: int, type_: str, message: str, **headers: str) -> JSONResponse:
    body = {"error": {"type": type_, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers or None)


async def _on_stoker_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StokerError)
    status = exc.http_status
    headers = {"www-authenticate": "Bearer"} if status == 401 else {}
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return _error(status, type(exc).__name__, exc.message, **headers)


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
    return _error(422, "InvalidRequestError", "; ".join(problems) or "invalid request")


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = "NotFoundError" if exc.status_code == 404 else "HTTPError"
    message = str(exc.detail)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see /docs"
    return _error(exc.status_code, type_, message, **(exc.headers or {}))


async def _on_refused_value(request: Request, exc: Exception) -> JSONResponse:
    return _error(422, "InvalidRequestError", f"the database refused a value: {exc}")


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s: database error: %s", request.method, request.url.path, exc)
    return _error(503, "DatabaseUnavailable", "the database is unavailable; retry shortly")


class _CatchAll:
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
            response = _error(500, "InternalError", "internal error; the engine log has details")
            await response(scope, receive, send)


class _GuardBodies:
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
            return _error(411, "LengthRequired", "send a request body with a content-length")
        if not length.isdigit():
            return _error(400, "InvalidRequestError", "content-length is not a number")
        if int(length) > self.limit:
            return _error(
                413,
                "PayloadTooLargeError",
                f"the request body is {length} bytes, over the limit of {self.limit} bytes",
            )
        if int(length) == 0 or not str(scope.get("path", "")).startswith("/api/"):
            return None
        try:
            await self.auth.authenticate(bearer(headers.get("authorization")))
        except AuthenticationError as exc:
            return _error(401, type(exc).__name__, exc.message, **{"www-authenticate": "Bearer"})
        except Exception as exc:
            log.warning("cannot verify an API token: %s", exc)
            return _error(503, "EngineUnavailableError", "cannot verify the API token now")
        return None


class _StorableBodies:
    """422 for a JSON request body that no route could use: nested deeper than
    :data:`~stoker._core.wire.MAX_JSON_DEPTH` (a recursive parser would fail on it), holding a
    NUL or a lone surrogate (PostgreSQL cannot store it), or not JSON. Checked before any
    route parses the body; :class:`_GuardBodies` has bounded its size already."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
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
            refusal = _error(422, "InvalidRequestError", f"the request body is refused: {problem}")
            await refusal(scope, receive, send)
            return
        pending = iter(messages)

        async def replay() -> Message:
            return next(pending, None) or await receive()

        await self.app(scope, replay, send)


DOCS_ASSETS = "/docs/assets"


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs`` from the assets installed with the engine, no CDN.

    Engines run on laptops without network and behind firewalls; a docs page that fetches
    its scripts from the internet is blank there. The ``swagger-ui-bundle-v2`` package
    ships Swagger UI's built files; they are served under ``/docs/assets``.
    """
    from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")
    redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="Stoker API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
            oauth2_redirect_url=redirect,
            # The default validator badge is an image from swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(redirect, include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


def create_app(
    db: Executor,
    auth: TokenAuth,
    *,
    version: str,
    served: ServedTasks | None = None,
    engine_id: str = "",
    max_body_bytes: int = 5 * 1024 * 1024,
) -> FastAPI:
    """The REST API over ``db``, authenticating with ``auth``; request bodies are at most
    ``max_body_bytes``.

    ``served`` tells which tasks have live workers (the engine shares its own; by default
    one of the API's own, reading the ``worker`` table).

    OpenAPI is served at ``/openapi.json`` and interactive docs at ``/docs``.
    """
    app = FastAPI(
        title="Stoker",
        version=version,
        # FastAPI's own pages load their scripts from a CDN; /docs is served below instead.
        docs_url=None,
        redoc_url=None,
        description="REST API of the Stoker engine: runs, workers and task definitions. "
        "Send `authorization: Bearer <token>` on every /api route.",
    )
    app.state.stoker = _State(db, auth, served or ServedTasks(db), engine_id)
    app.router.dependencies.append(Depends(_storable_query))
    app.include_router(health)
    app.include_router(api)
    from stoker.engine.api.workflows import router as workflows  # imports this module

    app.include_router(workflows)
    from stoker.engine.api.tokens import router as tokens  # imports this module

    app.include_router(tokens)
    _serve_docs(app)
    from stoker.engine.api.metrics import router as metrics

    app.include_router(metrics)
    app.add_exception_handler(StokerError, _on_stoker_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(psycopg.OperationalError, _on_database_error)
    app.add_exception_handler(psycopg.DataError, _on_refused_value)
    app.add_middleware(_StorableBodies)
    app.add_middleware(_CatchAll)
    app.add_middleware(_GuardBodies, auth=auth, limit=max_body_bytes)
    return app
