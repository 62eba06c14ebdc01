"""Triggering over REST: ``POST /api/v1/tasks/{name}/trigger`` and
``POST /api/v1/workflows/{name}/trigger`` create one run with the given input.

The run is validated as a gRPC trigger is (the same ingest): an unknown name answers 404
naming what is registered, an input or metadata over the payload limit 413 naming the
limit, a priority out of range 422. A run whose task no connected worker serves is created
all the same; ``unserved_task_names`` says so.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from stoker._core.wire import encode_json
from stoker.config import parse_duration
from stoker.engine.api.deps import ApiState, Auth, api_state
from stoker.engine.api.errors import ERROR_RESPONSES
from stoker.engine.api.models import ErrorBody
from stoker.engine.ingest import Ingest, TriggerInput
from stoker.engine.ingest.workflows import WorkflowIngest, WorkflowTriggerInput
from stoker.errors import DurationError, EngineUnavailableError, InvalidRequestError

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["triggers"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such task or workflow is registered"},
    413: {"model": ErrorBody, "description": "The input or metadata is over the payload limit"},
}


def _ingest(state: Annotated[ApiState, Depends(api_state)]) -> ApiState:
    if state.ingest is None or state.workflow_ingest is None:
        raise EngineUnavailableError("runs are created by an engine; this API runs without one")
    return state


Engine = Annotated[ApiState, Depends(_ingest)]


class TriggerBody(BaseModel):
    """One run: its input (any JSON the task or workflow accepts) and options."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "input": {"to": "ada@example.com"},
                    "additional_metadata": {"customer": "acme"},
                    "priority": 2,
                }
            ]
        },
    )

    input: Any = None
    additional_metadata: dict[str, Any] | None = None
    priority: int = Field(default=0, description="1 (lowest) to 4; 0: the default")
    idempotency_key: str = Field(
        default="", max_length=500, description="A live run with this key is returned instead"
    )
    idempotency_ttl: str | float | None = Field(
        default=None, description="How long the key is remembered ('1h', seconds)"
    )


class Triggered(BaseModel):
    """The run created (or, for an idempotency key naming a live run, that run)."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    deduplicated: bool = Field(description="An idempotency key named an existing run")
    unserved_task_names: list[str] = Field(
        description="Tasks of the run that no connected worker serves yet"
    )


def _options(name: str, body: TriggerBody) -> tuple[bytes, bytes, int]:
    raw = encode_json(body.input, f"{name!r}: input")
    meta = (
        encode_json(body.additional_metadata, f"{name!r}: additional_metadata")
        if body.additional_metadata
        else b""
    )
    try:
        ttl = parse_duration(body.idempotency_ttl, "idempotency_ttl")
    except DurationError as exc:
        raise InvalidRequestError(exc.message) from None
    ttl_ms = int(ttl.total_seconds() * 1000) if ttl is not None else 0
    if ttl_ms < 0:
        raise InvalidRequestError("idempotency_ttl must be positive")
    return raw, meta, ttl_ms


@router.post(
    "/tasks/{name}/trigger", response_model=Triggered, status_code=201, responses=_RESPONSES
)
async def trigger_task(name: str, body: TriggerBody, who: Auth, engine: Engine) -> Triggered:
    """Creates one run of a task."""
    raw, meta, ttl_ms = _options(name, body)
    ingest: Ingest | None = engine.ingest
    assert ingest is not None
    item = TriggerInput(
        name,
        raw,
        meta,
        body.priority,
        idempotency_key=body.idempotency_key,
        idempotency_ttl_ms=ttl_ms,
    )
    ids = await ingest.trigger(who.tenant_id, [item])
    unserved = await engine.served.report(who.tenant_id, {name})
    return Triggered(run_id=ids[0], deduplicated=ids.deduplicated[0], unserved_task_names=unserved)


@router.post(
    "/workflows/{name}/trigger", response_model=Triggered, status_code=201, responses=_RESPONSES
)
async def trigger_workflow(name: str, body: TriggerBody, who: Auth, engine: Engine) -> Triggered:
    """Creates one run of a workflow."""
    raw, meta, ttl_ms = _options(name, body)
    flows: WorkflowIngest | None = engine.workflow_ingest
    assert flows is not None
    item = WorkflowTriggerInput(name, raw, meta, body.priority, body.idempotency_key, ttl_ms)
    ids = await flows.trigger(who.tenant_id, [item])
    return Triggered(run_id=ids[0], deduplicated=ids.deduplicated[0], unserved_task_names=[])
