"""Acting on runs over REST: cancel and replay one run, or many in a bulk operation.

``POST /api/v1/runs/{run_id}/cancel`` and ``/replay`` act on one run and answer what
happened to it. ``POST /api/v1/runs/bulk/cancel`` and ``/bulk/replay`` take run ids or a
filter and answer 202 with a bulk operation whose progress ``GET
/api/v1/bulk-operations/{operation_id}`` reads (engine/runs/bulk.py). A filter matching
more runs than the engine's bulk cap answers 409 naming the count and ``confirm``.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stoker.engine.api.deps import ApiState, Auth, DbDep, api_state
from stoker.engine.api.errors import ERROR_RESPONSES
from stoker.engine.api.models import ErrorBody
from stoker.engine.api.pages import aware
from stoker.engine.runs.bulk import BulkOps, BulkProgress, get_operation, list_operations
from stoker.engine.runs.ops import Outcome, RunFilter, RunOps
from stoker.errors import EngineUnavailableError, NotFoundError

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["run actions"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such run for this tenant"}
}


def _ops(state: Annotated[ApiState, Depends(api_state)]) -> RunOps:
    if state.ops is None:
        raise EngineUnavailableError("runs are changed by an engine; this API runs without one")
    return state.ops


def _bulk(state: Annotated[ApiState, Depends(api_state)]) -> BulkOps:
    if state.bulk is None:
        raise EngineUnavailableError("bulk operations run in an engine; this API has none")
    return state.bulk


Ops = Annotated[RunOps, Depends(_ops)]
Bulk = Annotated[BulkOps, Depends(_bulk)]


class RunActionOutcome(BaseModel):
    """What a cancel or replay did to one run: ``outcome`` is ``cancelled``, ``replayed``,
    ``already_finished`` (cancel of a finished run: nothing done), ``completed`` (replay of
    a completed run: nothing done) or ``not_finished`` (replay of an unfinished run)."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    outcome: str = Field(examples=["cancelled"])
    status: str = Field(examples=["CANCELLED"])
    message: str


class CancelBody(BaseModel):
    """Why the run is cancelled (kept in its error)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500, examples=["deploy rolled back"])


class ReplayBody(BaseModel):
    """Optional: replay a finished workflow run from one step, or any finished run with a
    new input (completed runs too)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"from_step": "charge"}, {"input": {"order": 42}}]},
    )

    from_step: str | None = Field(
        default=None,
        max_length=200,
        description="This step and every step downstream of it run again, and so do the "
        "failed and cancelled steps; the other steps keep their output.",
    )
    input: Any = Field(
        default=None,
        description="The run's new input (JSON); the whole run runs again with it. Sent "
        "as null or left out: the input is kept.",
    )


class RunFilterBody(BaseModel):
    """Which runs: every given criterion must hold (none given: every run)."""

    model_config = ConfigDict(extra="forbid")

    names: list[Annotated[str, Field(min_length=1, max_length=500)]] | None = Field(
        default=None, description="Task or workflow names", examples=[["send_email"]]
    )
    statuses: list[str] | None = Field(
        default=None, description="Run statuses", examples=[["FAILED"]]
    )
    since: datetime | None = Field(default=None, description="Created at or after")
    until: datetime | None = Field(default=None, description="Created before")
    additional_metadata: dict[str, Any] | None = Field(
        default=None,
        description="Metadata the runs' additional metadata must contain (k=v)",
        examples=[{"customer": "acme"}],
    )

    def run_filter(self) -> RunFilter:
        return RunFilter(
            self.names or None,
            self.statuses or None,
            aware(self.since),
            aware(self.until),
            self.additional_metadata or None,
        )


class BulkBody(BaseModel):
    """Runs by id, or a filter; ``confirm`` is needed when the filter matches more runs
    than the engine's bulk cap."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"filter": {"names": ["send_email"], "statuses": ["QUEUED"]}, "reason": "spam"},
                {"run_ids": ["0b7c1f1e-3f5e-4a53-9a43-0f1f7f6a7d10"]},
            ]
        },
    )

    run_ids: list[Annotated[str, Field(max_length=100)]] | None = None
    filter: RunFilterBody | None = None
    reason: str = Field(default="", max_length=500)
    confirm: bool = Field(default=False, description="Act on every match even beyond the bulk cap")

    @model_validator(mode="after")
    def _one_target(self) -> BulkBody:
        if bool(self.run_ids) == (self.filter is not None):
            raise ValueError("give run_ids or filter (one of them)")
        return self


class BulkOperation(BaseModel):
    """A bulk cancel or replay and its progress: ``state`` is RUNNING, COMPLETED or
    FAILED; ``done`` and ``failed`` of ``total`` runs were processed (failed: an unknown
    run, or a replay of a run still running)."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "operation_id": "5d0c9a57-1c1b-4f8e-9a37-2f2f2b3f9c11",
                    "action": "cancel",
                    "state": "RUNNING",
                    "total": 1200,
                    "done": 400,
                    "failed": 0,
                    "reason": "spam",
                    "filter": {"names": ["send_email"], "statuses": ["QUEUED"]},
                    "error": None,
                    "created_at": "2026-12-03T16:00:00Z",
                    "finished_at": None,
                }
            ]
        },
    )

    operation_id: str
    action: Literal["cancel", "replay"]
    state: Literal["RUNNING", "COMPLETED", "FAILED"]
    total: int
    done: int
    failed: int
    reason: str
    filter: dict[str, Any] | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class BulkOperationList(BaseModel):
    items: list[BulkOperation]


def _outcome(outcomes: list[Outcome], run_id: uuid.UUID) -> RunActionOutcome:
    if not outcomes or outcomes[0].outcome == "not_found":
        raise NotFoundError(f"no run with id {run_id}")
    o = outcomes[0]
    return RunActionOutcome(run_id=o.run_id, outcome=o.outcome, status=o.status, message=o.message)


def bulk_model(p: BulkProgress) -> BulkOperation:
    """A bulk operation as the API shows it (the fields are the same)."""
    return BulkOperation.model_validate(asdict(p))


_BULK_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorBody,
        "description": "The filter matches more runs than the bulk cap; the message names "
        "the count. Repeat with confirm=true.",
    }
}


async def _start(
    who: Auth, bulk: BulkOps, action: Literal["cancel", "replay"], body: BulkBody
) -> BulkOperation:
    flt = body.filter.run_filter() if body.filter is not None else None
    progress = await bulk.start_operation(
        who.tenant_id, action, body.run_ids, flt, reason=body.reason, confirm=body.confirm
    )
    return bulk_model(progress)


@router.post(
    "/runs/bulk/cancel", response_model=BulkOperation, status_code=202, responses=_BULK_RESPONSES
)
async def bulk_cancel(body: BulkBody, who: Auth, bulk: Bulk) -> BulkOperation:
    """Starts cancelling runs by id or every unfinished run the filter matches; answers the
    operation, whose progress ``GET /api/v1/bulk-operations/{operation_id}`` reads."""
    return await _start(who, bulk, "cancel", body)


@router.post(
    "/runs/bulk/replay", response_model=BulkOperation, status_code=202, responses=_BULK_RESPONSES
)
async def bulk_replay(body: BulkBody, who: Auth, bulk: Bulk) -> BulkOperation:
    """Starts replaying runs by id or every failed or cancelled run the filter matches."""
    return await _start(who, bulk, "replay", body)


# After the bulk routes: /runs/bulk/... must not be read as a run id.
@router.post("/runs/{run_id}/cancel", response_model=RunActionOutcome, responses=_NOT_FOUND)
async def cancel_run(
    run_id: uuid.UUID, who: Auth, ops: Ops, body: CancelBody | None = None
) -> RunActionOutcome:
    """Cancels a run (a workflow run or a task run), its unfinished tasks and its child
    runs; a finished run is left as it is (``already_finished``)."""
    reason = body.reason if body else ""
    return _outcome(await ops.cancel(who.tenant_id, [str(run_id)], None, reason), run_id)


@router.post("/runs/{run_id}/replay", response_model=RunActionOutcome, responses=_NOT_FOUND)
async def replay_run(
    run_id: uuid.UUID, who: Auth, ops: Ops, body: ReplayBody | None = None
) -> RunActionOutcome:
    """Runs a failed or cancelled run again from its failed and cancelled tasks (completed
    tasks keep their outputs). With ``from_step``: a finished workflow run (completed too)
    from that step and what is downstream of it. With ``input``: any finished run, with
    that input, from the start. The input is not checked against the task's model here
    (the worker validates it when the run starts); a durable task's run is refused both
    (reset it instead)."""
    if body is not None and (body.from_step is not None or body.input is not None):
        done = await ops.replay_from(
            who.tenant_id,
            str(run_id),
            step=body.from_step,
            input=body.input,
            with_input=body.input is not None,
        )
        return _outcome([done], run_id)
    return _outcome(await ops.replay(who.tenant_id, [str(run_id)], None), run_id)


@router.get(
    "/bulk-operations/{operation_id}",
    response_model=BulkOperation,
    responses={404: {"model": ErrorBody, "description": "No such operation for this tenant"}},
)
async def get_bulk_operation(operation_id: uuid.UUID, who: Auth, db: DbDep) -> BulkOperation:
    """A bulk operation's progress (any engine replica answers)."""
    return bulk_model(await get_operation(db, who.tenant_id, operation_id))


@router.get("/bulk-operations", response_model=BulkOperationList)
async def list_bulk_operations(
    who: Auth, db: DbDep, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> BulkOperationList:
    """The tenant's bulk operations, newest first."""
    return BulkOperationList(
        items=[bulk_model(p) for p in await list_operations(db, who.tenant_id, limit)]
    )
