"""What a route depends on: the app's shared state, the caller's tenant, the database.

Every ``/api`` route takes :data:`Auth` (the :class:`~stoker.engine.auth.Principal` of the
request's bearer token; 401 without a valid one) and reads through :data:`DbDep`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from stoker._core.wire import text_problem
from stoker.db import Executor
from stoker.engine.auth import Principal, TokenAuth, bearer
from stoker.engine.crons import CronAdmin
from stoker.engine.dispatcher.served import ServedTasks
from stoker.engine.schedules import Schedules

if TYPE_CHECKING:
    from stoker.engine.events import EventAdmin
    from stoker.engine.ingest import Ingest
    from stoker.engine.ingest.workflows import WorkflowIngest
    from stoker.engine.observe import Observe
    from stoker.engine.ratelimits import LimitWriter
    from stoker.engine.runs.bulk import BulkOps
    from stoker.engine.runs.ops import RunOps
    from stoker.engine.webhooks import Webhooks
    from stoker.engine.workers import PauseTarget
from stoker.errors import InvalidRequestError


@dataclass(frozen=True, slots=True)
class ApiState:
    """What the app's routes share, kept on ``app.state.stoker``."""

    db: Executor
    auth: TokenAuth
    served: ServedTasks
    engine_id: str
    schedules: Schedules
    # The engine's run operations (reset); None for an API served without an engine.
    ops: RunOps | None = None
    crons: CronAdmin | None = None
    """Cron management and pauses (the engine's; None for an API without an engine)."""
    events: EventAdmin | None = None
    """Events and filters (the engine's; None for an API without an engine)."""
    webhooks: Webhooks | None = None
    """Incoming webhooks (the engine's; None for an API without an engine)."""
    bulk: BulkOps | None = None
    """Bulk cancel and replay (the engine's; None for an API without an engine)."""
    dispatcher: PauseTarget | None = None
    """Applies worker pauses to the streams held here (None: at the next heartbeat)."""
    ingest: Ingest | None = None
    """Creates task runs (the engine's; REST triggers answer 503 without it)."""
    workflow_ingest: WorkflowIngest | None = None
    """Creates workflow runs (the engine's)."""
    definitions: LimitWriter | None = None
    """Writes rate limits and refreshes the engine's caches (None: written directly)."""
    observe: Observe | None = None
    """Task logs, streams and run events (the engine's, or the API's own reader)."""


def api_state(request: Request) -> ApiState:
    """The state of the app serving ``request``."""
    state: ApiState = request.app.state.stoker
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
    return await api_state(request).auth.authenticate(bearer(request.headers.get("authorization")))


async def storable_query(request: Request) -> None:
    """422 for a query parameter holding NUL, which no filter can match (PostgreSQL text
    cannot hold it) and which would otherwise fail in the database driver."""
    for name, value in request.query_params.multi_items():
        if text_problem(name) or text_problem(value):
            raise InvalidRequestError(
                f"query parameter {name!r} is refused: it holds a NUL character (%00)"
            )


def _db(request: Request) -> Executor:
    return api_state(request).db


Auth = Annotated[Principal, Depends(_principal)]
DbDep = Annotated[Executor, Depends(_db)]
StateDep = Annotated[ApiState, Depends(api_state)]
