"""``/api/v1/crons``: the tenant's crons — list, read, create, change, delete, run one now,
backfill a past range.

A cron's name goes in the path URL-encoded (code crons are named ``"<task>:<expression>"``
and hold spaces and slashes: ``/api/v1/crons/report%3A0%209%20*%20*%20*``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from stoker.engine.api.deps import ApiState, Auth, api_state
from stoker.engine.api.errors import ERROR_RESPONSES
from stoker.engine.api.models import (
    Backfill,
    BackfillResult,
    BackfillRun,
    Cron,
    CronCreate,
    CronFire,
    CronList,
    CronTriggered,
    CronUpdate,
    ErrorBody,
)
from stoker.engine.crons import CronAdmin, CronFields, CronView
from stoker.errors import EngineUnavailableError

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["crons"])


def _admin(state: Annotated[ApiState, Depends(api_state)]) -> CronAdmin:
    if state.crons is None:
        raise EngineUnavailableError("crons are managed by an engine; this API runs without one")
    return state.crons


Admin = Annotated[CronAdmin, Depends(_admin)]


def cron_model(v: CronView) -> Cron:
    """A cron as the API shows it."""
    r = v.row
    return Cron(
        name=r["name"],
        task_name=r["task_name"],
        workflow_name=r["workflow_name"],
        expression=r["expression"],
        timezone=r["timezone"],
        input=r["input"],
        additional_metadata=r["additional_metadata"],
        priority=r["priority"],
        overlap=r["overlap"],
        catch_up_window_s=r["catch_up_window_s"],
        catch_up_max=r["catch_up_max"],
        enabled=r["enabled"],
        source=r["source"],
        next_fire_times=v.next_fire_times,
        last_runs=[
            CronFire(tick=f["tick"], run_id=f["run_id"], outcome=f["outcome"], status=f["status"])
            for f in v.last_fires
        ],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


def _fields(body: CronCreate | CronUpdate) -> CronFields:
    sent = body.model_fields_set

    def raw(value: Any, key: str) -> bytes | None:
        return json.dumps(value).encode() if key in sent and value is not None else None

    return CronFields(
        expression=body.expression,
        timezone=body.timezone,
        input=raw(body.input, "input"),
        additional_metadata=raw(body.additional_metadata, "additional_metadata"),
        priority=body.priority,
        overlap=body.overlap,
        catch_up_window_s=body.catch_up_window_s,
        catch_up_max=body.catch_up_max,
        enabled=body.enabled,
    )


@router.get("/crons", response_model=CronList)
async def list_crons(
    who: Auth, crons: Admin, name: Annotated[str | None, Query()] = None
) -> CronList:
    """Every cron of the tenant (declared in code, or created through the API), by name,
    with its next fire times and last runs; ``name`` picks one (404 when there is none)."""
    return CronList(items=[cron_model(v) for v in await crons.list(who.tenant_id, name)])


@router.post(
    "/crons",
    response_model=Cron,
    status_code=status.HTTP_201_CREATED,
    responses={409: {"model": ErrorBody, "description": "A cron of that name exists"}},
)
async def create_cron(who: Auth, crons: Admin, body: CronCreate) -> Cron:
    """Creates a cron of a task (``task_name``) or a workflow (``workflow_name``); a name
    that exists is a 409 naming it, an invalid expression or time zone a 422 with the
    reason."""
    view = await crons.create(
        who.tenant_id, body.name, body.task_name or "", body.workflow_name or "", _fields(body)
    )
    return cron_model(view)


@router.post(
    "/crons/{name:path}/trigger",
    response_model=CronTriggered,
    responses={409: {"model": ErrorBody, "description": "The overlap policy refuses a run"}},
)
async def trigger_cron(
    who: Auth,
    crons: Admin,
    name: str,
    force: Annotated[bool, Query(description="Start a run whatever the overlap policy")] = False,
) -> CronTriggered:
    """Starts one run of the cron now, outside its schedule, under its overlap policy: while
    its previous run still runs, ``skip`` and ``buffer_one`` refuse (409) unless ``force``,
    ``cancel_previous`` cancels that run first."""
    fired = await crons.trigger_now(who.tenant_id, name, force=force)
    return CronTriggered(run_id=fired.run_id, tick=fired.tick)


@router.post("/crons/{name:path}/backfill", response_model=BackfillResult)
async def backfill_cron(who: Auth, crons: Admin, name: str, body: Backfill) -> BackfillResult:
    """Creates the runs of the cron's ticks between ``start`` and ``end`` (past, both
    included; at most 1,000); a tick that has its run already is not run again."""
    fired = await crons.backfill(who.tenant_id, name, body.start, body.end)
    return BackfillResult(
        items=[BackfillRun(tick=f.tick, run_id=f.run_id, existing=f.existing) for f in fired]
    )


@router.get("/crons/{name:path}", response_model=Cron)
async def get_cron(who: Auth, crons: Admin, name: str) -> Cron:
    """One cron, by name."""
    return cron_model(await crons.one(who.tenant_id, name))


@router.patch("/crons/{name:path}", response_model=Cron)
async def update_cron(who: Auth, crons: Admin, name: str, body: CronUpdate) -> Cron:
    """Changes a cron (the fields sent); its next tick is recomputed when its schedule
    changed. A code cron takes only ``enabled``, ``overlap`` and the catch-up fields."""
    return cron_model(await crons.update(who.tenant_id, name, _fields(body)))


@router.delete("/crons/{name:path}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_cron(who: Auth, crons: Admin, name: str) -> None:
    """Deletes a cron created through the API (a code cron goes with its declaration)."""
    await crons.delete(who.tenant_id, name)
