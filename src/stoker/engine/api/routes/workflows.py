"""REST views of workflow runs: one run as its DAG, and runs filtered by metadata.

``GET /api/v1/workflow-runs/{run_id}`` returns the run with every step (status — SKIPPED
and WAITING shown as such —, attempts, timings, error, output, the sleep/event conditions
it waits on, the child runs it spawned) and the DAG's edges. ``GET /api/v1/workflow-runs``
lists runs newest first, filtered by workflow, status and additional metadata
(``?metadata=tenant:acme``, repeatable; the run's metadata must contain every pair).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from stoker._core.dag import WorkflowSpec
from stoker._core.wire import WORKFLOW_RUN_STATUSES
from stoker.db.store import read as read_store
from stoker.engine.api.deps import Auth, DbDep
from stoker.engine.api.models import Attempt, ErrorBody, RunError
from stoker.engine.api.pages import MAX_PAGE, decode_cursor, encode_cursor
from stoker.engine.api.rows import build_attempts, run_error
from stoker.errors import InvalidRequestError, NotFoundError


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class StepWait(_Model):
    """A sleep or event condition a step waits (or waited) on."""

    cond: str = Field(description="The condition's place, e.g. wait_for.0 or wait_for.1.0")
    kind: str
    fire_at: datetime | None = None
    event_key: str | None = None
    expression: str | None = None
    satisfied_at: datetime | None = None
    error: str | None = None


class ChildRun(_Model):
    """A run spawned by a step."""

    run_id: uuid.UUID
    child_index: int
    child_key: str | None = None
    is_workflow: bool


class WorkflowStep(_Model):
    """One step of a workflow run."""

    step: str
    task_name: str
    role: str = Field(description="step, on_failure or on_success")
    status: str = Field(
        description="QUEUED, ASSIGNED, RUNNING, COMPLETED, FAILED, CANCELLED, SKIPPED, "
        "PENDING (waiting for parents) or WAITING (for a sleep or event)"
    )
    parents: list[str]
    task_run_id: uuid.UUID
    output: Any = None
    error: RunError | None = None
    attempts: list[Attempt]
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    worker_id: uuid.UUID | None = None
    waits: list[StepWait] = Field(default_factory=list)
    children: list[ChildRun] = Field(default_factory=list)


class Edge(_Model):
    """``parent`` must finish before ``child`` starts."""

    parent: str
    child: str


class WorkflowRunDetail(_Model):
    """A workflow run with its DAG."""

    run_id: uuid.UUID
    workflow_name: str
    status: str
    input: Any = None
    additional_metadata: dict[str, Any] = Field(default_factory=dict)
    error: RunError | None = None
    created_at: datetime
    finished_at: datetime | None = None
    steps: list[WorkflowStep]
    edges: list[Edge]


class WorkflowRunSummary(_Model):
    """A workflow run as listed."""

    run_id: uuid.UUID
    workflow_name: str
    status: str
    additional_metadata: dict[str, Any] = Field(default_factory=dict)
    error: RunError | None = None
    created_at: datetime
    finished_at: datetime | None = None


class WorkflowRunPage(_Model):
    items: list[WorkflowRunSummary]
    next_cursor: str | None = None


router = APIRouter(prefix="/api/v1", tags=["workflows"])


def _status(row: Mapping[str, Any]) -> str:
    if row["skipped"]:
        return "SKIPPED"
    if row["status"] == "PENDING" and any(w["satisfied_at"] is None for w in row["waits"]):
        return "WAITING"
    return str(row["status"])


def _metadata(pairs: list[str] | None) -> str | None:
    if not pairs:
        return None
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise InvalidRequestError(
                f"query parameter 'metadata': {pair!r} is not key:value (e.g. tenant:acme)"
            )
        found[key] = value
    return json.dumps(found)


@router.get(
    "/workflow-runs/{run_id}",
    response_model=WorkflowRunDetail,
    responses={404: {"model": ErrorBody, "description": "No such workflow run"}},
)
async def get_workflow_run(run_id: uuid.UUID, who: Auth, db: DbDep) -> WorkflowRunDetail:
    """A workflow run: every step with its status, attempts, timings, error, output,
    conditions and children, and the DAG's edges."""
    run = await read_store.api_get_workflow_run(
        db, read_store.ApiGetWorkflowRun(who.tenant_id, run_id)
    )
    if run is None:
        raise NotFoundError(f"no workflow run with id {run_id}")
    dag_id = run["id"]
    rows = await read_store.api_workflow_steps(
        db, read_store.ApiWorkflowSteps(who.tenant_id, dag_id)
    )
    events: dict[int, list[read_store.StepEvent]] = {}
    step_events = read_store.ApiWorkflowStepEvents(who.tenant_id, dag_id)
    for e in await read_store.api_workflow_step_events(db, step_events):
        events.setdefault(int(e["task_id"]), []).append(e)
    spec = WorkflowSpec.model_validate(run["config"])
    by_step = {s.name: s for s in spec.steps}
    steps = []
    for r in rows:
        s = by_step.get(str(r["step"]))
        started, finished = r["started_at"], r["finished_at"]
        steps.append(
            WorkflowStep(
                step=str(r["step"]),
                task_name=r["task_name"],
                role=s.role if s else "step",
                status=_status(r),
                parents=list(s.parents) if s else [],
                task_run_id=r["external_id"],
                output=r["output"],
                error=run_error(r["error"]),
                attempts=build_attempts(r, events.get(int(r["id"]), [])),
                created_at=r["created_at"],
                started_at=started,
                finished_at=finished,
                duration_ms=round((finished - started).total_seconds() * 1000)
                if started and finished
                else None,
                worker_id=r["worker_external_id"],
                waits=[StepWait(**w) for w in r["waits"]],
                children=[ChildRun(**c) for c in r["children"]],
            )
        )
    return WorkflowRunDetail(
        run_id=run["external_id"],
        workflow_name=run["workflow_name"],
        status=run["status"],
        input=run["input"],
        additional_metadata=run["additional_metadata"] or {},
        error=run_error(run["error"]),
        created_at=run["created_at"],
        finished_at=run["finished_at"],
        steps=steps,
        edges=[Edge(parent=p, child=s.name) for s in spec.steps for p in s.parents],
    )


@router.get("/workflow-runs", response_model=WorkflowRunPage)
async def list_workflow_runs(
    who: Auth,
    db: DbDep,
    workflow: Annotated[list[str] | None, Query(description="Workflow names")] = None,
    status: Annotated[
        list[str] | None,
        Query(description="Run statuses: " + ", ".join(WORKFLOW_RUN_STATUSES) + " (repeatable)"),
    ] = None,
    metadata: Annotated[
        list[str] | None,
        Query(description="key:value pairs the run's additional metadata must contain"),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> WorkflowRunPage:
    """Workflow runs, newest first, filtered by workflow, status and additional metadata."""
    after_at, after_id = decode_cursor(cursor) if cursor else (None, None)
    statuses = [s.upper() for s in status] if status else None
    for s in statuses or ():
        if s not in WORKFLOW_RUN_STATUSES:
            raise InvalidRequestError(
                f"query parameter 'status': {s!r} is not a workflow run status; use one of "
                + ", ".join(WORKFLOW_RUN_STATUSES)
            )
    rows = await read_store.api_list_workflow_runs(
        db,
        read_store.ApiListWorkflowRuns(
            who.tenant_id,
            workflow or None,
            statuses,
            _metadata(metadata),
            after_at,
            after_id,
            limit + 1,
        ),
    )
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["external_id"])
    return WorkflowRunPage(
        items=[
            WorkflowRunSummary(
                run_id=r["external_id"],
                workflow_name=r["workflow_name"],
                status=r["status"],
                additional_metadata=r["additional_metadata"] or {},
                error=run_error(r["error"]),
                created_at=r["created_at"],
                finished_at=r["finished_at"],
            )
            for r in page
        ],
        next_cursor=next_cursor,
    )
