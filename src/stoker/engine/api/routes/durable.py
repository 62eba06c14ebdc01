"""A durable run's log over REST (docs/durable.md).

``GET /api/v1/runs/{run_id}/log`` shows the log a durable task's run replays — position,
kind, name, status, times, result or error of every visible call — and what the task waits
for now (its pending entries), a page of positions at a time. ``POST
/api/v1/runs/{run_id}/reset`` branches the log at a position and runs the task again from
there (``app.runs.reset``). Both see only the token's tenant: another tenant's run is 404.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from stoker.db.store import durable as durable_store
from stoker.engine.api.deps import Auth, DbDep, StateDep
from stoker.engine.api.errors import ERROR_RESPONSES
from stoker.engine.api.models import ErrorBody, RunError
from stoker.engine.api.rows import run_error
from stoker.errors import EngineUnavailableError, InvalidRequestError, NotFoundError

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["durable"])

MAX_LOG_PAGE = 1000


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class DurableEntry(_Model):
    """One recorded call of a durable task."""

    position: int = Field(description="Its place in the body's call order, from 1.")
    branch: int = Field(description="The branch of the log it was recorded on.")
    kind: str = Field(description="step, wait or child.")
    name: str = Field(description="The step's name, the wait's kind (sleep, event), ...")
    status: str = Field(description="pending, ok or error.")
    invocation: int = Field(description="The invocation that recorded it.")
    recorded_at: datetime
    satisfied_at: datetime | None = Field(description="When it settled; null while pending.")
    wake_at: datetime | None = Field(description="A sleep's deadline (never moves).")
    result: Any = Field(default=None, description="The recorded result (JSON), when ok.")
    error: RunError | None = Field(default=None, description="The recorded error, when error.")
    request: Any = Field(default=None, description="What the call asked for (conditions).")
    fired: str | None = Field(default=None, description="Which condition of a wait fired.")
    child_run_id: uuid.UUID | None = Field(default=None, description="A child call's run.")


class DurableLogPage(_Model):
    """A durable run's visible log, a page of positions at a time, and what it waits for."""

    run_id: uuid.UUID
    task_name: str
    status: str = Field(description="The run's status.")
    invocation: int = Field(description="The log's current invocation (the fence).")
    branch: int = Field(description="The active branch (1 until a reset).")
    evicted_at: datetime | None = Field(description="Set while the task is evicted.")
    entries: list[DurableEntry]
    waiting_for: list[DurableEntry] = Field(
        description="The pending calls the task waits for now (every page has them all)."
    )
    next_cursor: int | None = Field(
        description="Pass as `after` for the next page; null on the last page."
    )


class ResetRequest(_Model):
    """Where to branch the log: earlier positions replay, this one and later run again."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    position: int = Field(ge=1, le=2**31 - 1, description="1 .. last position + 1.")
    reason: str = Field(default="", max_length=1000)


class ResetResult(_Model):
    """What a reset did."""

    run_id: uuid.UUID
    position: int
    branch: int = Field(description="The branch the reset made active.")
    invocation: int = Field(description="The invocation the log was fenced to.")
    dropped: int = Field(description="How many pending waits of the old branch it dropped.")
    status: str = Field(description="The run's status afterwards.")


def _entry(e: durable_store.Entry) -> DurableEntry:
    return DurableEntry(
        position=e["position"],
        branch=e["branch"],
        kind=e["kind"],
        name=e["name"],
        status=e["status"],
        invocation=e["invocation"],
        recorded_at=e["recorded_at"],
        satisfied_at=e["satisfied_at"],
        wake_at=e["wake_at"],
        result=e["result"],
        error=run_error(e["error"]),
        request=e["request"],
        fired=e["fired"],
        child_run_id=e["child_external_id"],
    )


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such run for this tenant"}
}


@router.get("/runs/{run_id}/log", response_model=DurableLogPage, responses=_NOT_FOUND)
async def get_durable_log(
    run_id: uuid.UUID,
    who: Auth,
    db: DbDep,
    after: Annotated[int, Query(ge=0, le=2**31 - 1, description="Entries after this position")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LOG_PAGE)] = 200,
) -> DurableLogPage:
    """The log of a durable task's run, in position order, and what it waits for now.

    422 for a run that has no log (not a durable task, or not started yet).
    """
    run = await durable_store.durable_run_log(
        db, durable_store.DurableRunLog(who.tenant_id, run_id)
    )
    if run is None:
        raise NotFoundError(f"no run with id {run_id}")
    if run["invocation"] is None or run["active_branch"] is None:
        raise InvalidRequestError(
            f"run {run_id} has no durable log: task {run['task_name']!r} is not a durable "
            "task, or the run has not started yet"
        )
    key = (run["task_id"], run["created_at"])
    rows = await durable_store.durable_log_page(
        db, durable_store.DurableLogPage(*key, after, limit + 1)
    )
    pending = await durable_store.durable_log_pending(db, durable_store.DurableLogPending(*key))
    page = rows[:limit]
    return DurableLogPage(
        run_id=run_id,
        task_name=run["task_name"],
        status=run["status"],
        invocation=run["invocation"],
        branch=run["active_branch"],
        evicted_at=run["evicted_at"],
        entries=[_entry(e) for e in page],
        waiting_for=[_entry(e) for e in pending],
        next_cursor=page[-1]["position"] if len(rows) > limit else None,
    )


@router.post("/runs/{run_id}/reset", response_model=ResetResult, responses=_NOT_FOUND)
async def reset_run(
    run_id: uuid.UUID, body: ResetRequest, who: Auth, state: StateDep
) -> ResetResult:
    """Branches a durable run's log at ``position`` and runs its task again from there
    (``app.runs.reset``). 422 for a position out of range or a run that is not durable."""
    if state.ops is None:
        raise EngineUnavailableError("this API is not served by an engine; reset is not available")
    done = await state.ops.reset(who.tenant_id, str(run_id), body.position, body.reason)
    return ResetResult(
        run_id=uuid.UUID(done.run_id),
        position=done.position,
        branch=done.branch,
        invocation=done.invocation,
        dropped=done.dropped,
        status=done.status,
    )
