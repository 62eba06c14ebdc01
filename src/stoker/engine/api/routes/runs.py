"""``/api/v1/runs``: one run with every attempt, and runs newest first, a page at a time."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from stoker._core.status import RunStatus
from stoker.db.store import read as read_store
from stoker.engine.api.deps import Auth, DbDep, StateDep
from stoker.engine.api.errors import ERROR_RESPONSES
from stoker.engine.api.models import (
    ConcurrencySlot,
    ErrorBody,
    RunDetail,
    RunPage,
    RunScheduling,
    RunSummary,
)
from stoker.engine.api.pages import MAX_PAGE, aware, decode_cursor, encode_cursor
from stoker.engine.api.rows import build_attempts, error_summary, summary_fields
from stoker.engine.dispatcher.served import ServedTasks
from stoker.errors import NotFoundError

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["runs"])


@router.get(
    "/runs/{run_id}",
    response_model=RunDetail,
    responses={404: {"model": ErrorBody, "description": "No such run for this tenant"}},
)
async def get_run(run_id: uuid.UUID, who: Auth, db: DbDep, state: StateDep) -> RunDetail:
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
        **summary_fields(row),
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
        waiting_reason=await _waiting_reason(state.served, who.tenant_id, row),
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


@router.get("/runs", response_model=RunPage)
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
        "since": aware(since),
        "until": aware(until),
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
    items = [RunSummary(**(summary_fields(r) | {"error": error_summary(r["error"])})) for r in page]
    return RunPage(items=items, next_cursor=next_cursor)
