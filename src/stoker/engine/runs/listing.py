"""Reading task runs for a client: a page of runs by status, task and creation time, and
one run with its input and output (the SDK's ``app.runs.list`` and ``app.runs.get``).

The same statements and keyset cursor as the REST API's ``GET /api/v1/runs``
(:mod:`stoker.engine.api.routes.runs`): each filter combination has its own statement so
every plan is a range scan of the index that fits it (see ``db/sql/read.sql``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stoker._core.status import RunStatus
from stoker.db import Executor
from stoker.db.store import read as read_store
from stoker.engine.api.pages import MAX_PAGE, decode_cursor, encode_cursor
from stoker.errors import InvalidRequestError, NotFoundError


@dataclass(frozen=True, slots=True)
class RunPage:
    """A page of runs and the cursor of the next one (None: this was the last)."""

    items: list[read_store.RunSummary]
    next_cursor: str | None


async def list_runs(
    db: Executor,
    tenant_id: int,
    *,
    statuses: Sequence[str] | None = None,
    task_name: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> RunPage:
    """The tenant's task runs, newest first, ``limit`` (1..500) at a time.

    InvalidRequestError for an unknown status, a limit out of range or a cursor this
    function did not return.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequestError(f"limit {limit} is outside 1..{MAX_PAGE}")
    asked = [s.upper() for s in statuses or []]
    unknown = sorted(set(asked) - {s.value for s in RunStatus})
    if unknown:
        raise InvalidRequestError(
            f"unknown run status {', '.join(unknown)}: use " + ", ".join(s.value for s in RunStatus)
        )
    after_at, after_id = decode_cursor(cursor) if cursor else (None, None)
    common: dict[str, Any] = {
        "tenant_id": tenant_id,
        "since": since,
        "until": until,
        "cursor_created_at": after_at,
        "cursor_run_id": after_id,
        "limit": limit + 1,  # one more than asked tells whether another page exists
    }
    wanted = list(dict.fromkeys(asked)) or [s.value for s in RunStatus]
    rows: Sequence[read_store.RunSummary]
    if task_name:
        rows = await read_store.api_list_runs_of_task(
            db, read_store.ApiListRunsOfTask(task_name=task_name, statuses=wanted, **common)
        )
    elif asked:
        rows = await read_store.api_list_runs_by_status(
            db, read_store.ApiListRunsByStatus(statuses=wanted, **common)
        )
    else:
        rows = await read_store.api_list_runs(db, read_store.ApiListRuns(**common))
    page = list(rows[:limit])
    next_cursor = None
    if len(rows) > limit:
        next_cursor = encode_cursor(page[-1]["created_at"], page[-1]["external_id"])
    return RunPage(page, next_cursor)


async def get_run(db: Executor, tenant_id: int, run_id: str | uuid.UUID) -> read_store.RunDetail:
    """One task run of the tenant with its input and output; NotFoundError otherwise."""
    try:
        rid = run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(run_id)
    except ValueError:
        raise NotFoundError(f"{run_id!r} is not a run id") from None
    row = await read_store.api_get_run(db, read_store.ApiGetRun(tenant_id, rid))
    if row is None:
        raise NotFoundError(f"no run with id {rid}")
    return row
