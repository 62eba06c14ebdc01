"""``/ui/tasks``: the tenant's workflows and tasks — definitions (a workflow's steps and
parents, triggers, policies), runs of the last day and their success rate — and
``/ui/tasks/{task|workflow}/{name}``: one of them with its recent runs, a trigger form built
from its input schema, and pause / resume.

**Trigger.** The form is read field by field (:mod:`~stoker.engine.dashboard.pages_forms`);
a field that does not parse is shown again with its message beside it (422). A valid input
is created through the engine's ingest, as the SDK's and the REST API's triggers are
(known task, payload limits), and the page opens the new run. An app served without an
engine has no ingest: there the run is scheduled to start now (``app.schedules.create``'s
path, fired by the engine's leader) and the page follows it once it exists (within
:data:`FOLLOW_S`), else says where to find it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi.responses import HTMLResponse, RedirectResponse, Response

from stoker._core.status import RunStatus
from stoker.db.store import read as read_store
from stoker.engine.dashboard import pages_tasks
from stoker.engine.dashboard.core import PREFIX, ActionDep, PageError, PageRouter, Ui, UiDep
from stoker.engine.dashboard.pages_forms import FormField, FormResult, form_fields, read_form
from stoker.engine.dashboard.pages_services import api, crons
from stoker.engine.ingest import TriggerInput
from stoker.engine.ingest.workflows import WorkflowTriggerInput
from stoker.engine.schedules import ScheduleInput
from stoker.errors import StokerError

router = PageRouter(nav="tasks")

RECENT = 20
FOLLOW_S = 3.0
"""How long a trigger waits for its run to exist before answering without it."""

KINDS = ("task", "workflow")


@router.get("/tasks")
async def tasks(ui: UiDep) -> HTMLResponse:
    """Every workflow and task (workflow steps are listed in their workflow)."""
    found = await pages_tasks.definitions(ui.db, ui.user.tenant_id, datetime.now(UTC))
    return ui.render("tasks.html", active="tasks", definitions=found)


async def _one(ui: Ui, kind: str, name: str) -> pages_tasks.Definition:
    if kind not in KINDS:
        raise PageError(404, f"{kind!r} is neither task nor workflow")
    found = await pages_tasks.definitions(
        ui.db,
        ui.user.tenant_id,
        datetime.now(UTC),
        kind="task" if kind == "task" else "workflow",
        name=name,
    )
    if not found:
        raise PageError(404, f"no {kind} named {name!r} in this tenant")
    return found[0]


async def _recent(ui: Ui, d: pages_tasks.Definition) -> list[dict[str, Any]]:
    tenant = ui.user.tenant_id
    if d.kind == "task":
        rows: list[Any] = await read_store.api_list_runs_of_task(
            ui.db,
            read_store.ApiListRunsOfTask(
                tenant_id=tenant,
                since=None,
                until=None,
                cursor_created_at=None,
                cursor_run_id=None,
                limit=RECENT,
                statuses=[s.value for s in RunStatus],
                task_name=d.name,
            ),
        )
    else:
        rows = await read_store.api_list_workflow_runs(
            ui.db,
            read_store.ApiListWorkflowRuns(tenant, [d.name], None, None, None, None, RECENT),
        )
    return [dict(r) for r in rows]


def _render(
    ui: Ui,
    d: pages_tasks.Definition,
    recent: list[dict[str, Any]],
    fields: list[FormField],
    *,
    result: FormResult | None = None,
    values: dict[str, str] | None = None,
    message: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return ui.render(
        "task.html",
        active="tasks",
        d=d,
        picture=pages_tasks.shape(d),
        recent=recent,
        fields=fields,
        errors=result.errors if result else {},
        values=values or {f.name: f.default for f in fields},
        message=message,
        status_code=status_code,
    )


@router.get("/tasks/{kind}/{name}")
async def task(ui: UiDep, kind: str, name: str) -> HTMLResponse:
    """One task or workflow: definition, recent runs, trigger form, pause."""
    d = await _one(ui, kind, name)
    return _render(ui, d, await _recent(ui, d), form_fields(d.input_schema))


def _go(ui: Ui, url: str) -> Response:
    if ui.request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


@router.post("/tasks/{kind}/{name}/trigger")
async def trigger(ui: ActionDep, kind: str, name: str) -> Response:
    """Starts a run with the form's input; the form again with messages when it is bad."""
    d = await _one(ui, kind, name)
    fields = form_fields(d.input_schema)
    values = {k: v[0] for k, v in (await ui.form()).items()}
    result = read_form(fields, values)
    if not result.ok:
        return _render(
            ui, d, await _recent(ui, d), fields, result=result, values=values, status_code=422
        )
    state = api(ui)
    body = json.dumps(result.value).encode()
    meta = json.dumps({"stoker_triggered_by": ui.user.email}).encode()
    if state.ingest is not None and state.workflow_ingest is not None:
        try:
            if kind == "task":
                ids = await state.ingest.trigger(
                    ui.user.tenant_id, [TriggerInput(name, body, meta)]
                )
            else:
                ids = await state.workflow_ingest.trigger(
                    ui.user.tenant_id, [WorkflowTriggerInput(name, body, meta)]
                )
        except StokerError as exc:
            result.errors["__all__"] = str(exc)
            return _render(
                ui, d, await _recent(ui, d), fields, result=result, values=values, status_code=422
            )
        return _go(ui, f"{PREFIX}/runs/{ids[0]}")
    # Served without an engine (no ingest here): the engine's leader starts it.
    schedules = state.schedules
    item = ScheduleInput(
        task_name=name if kind == "task" else "",
        workflow_name=name if kind == "workflow" else "",
        input=body,
        additional_metadata=meta,
        priority=0,
        run_at_ms=int(time.time() * 1000),
    )
    try:
        (row,) = await schedules.create(ui.user.tenant_id, [item], strict=False)
    except StokerError as exc:
        result.errors["__all__"] = str(exc)
        return _render(
            ui, d, await _recent(ui, d), fields, result=result, values=values, status_code=422
        )
    run_id = await _follow(ui, row["external_id"])
    if run_id is not None:
        return _go(ui, f"{PREFIX}/runs/{run_id}")
    return _render(
        ui,
        d,
        await _recent(ui, d),
        fields,
        values=values,
        message=f"The run is scheduled to start now (scheduled run {row['external_id']}); "
        "it appears under Crons & schedules until the engine starts it.",
    )


async def _follow(ui: Ui, scheduled: uuid.UUID) -> uuid.UUID | None:
    """The run a scheduled run started, once it has (None after :data:`FOLLOW_S`)."""
    schedules = api(ui).schedules
    deadline = time.monotonic() + FOLLOW_S
    while True:
        row = await schedules.get(ui.user.tenant_id, scheduled)
        if row["run_id"] is not None:
            return row["run_id"]
        if row["status"] != "SCHEDULED" or time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.05)


@router.post("/tasks/{kind}/{name}/pause")
async def pause(ui: ActionDep, kind: str, name: str) -> Response:
    """Pauses the task or workflow; ``drop=on`` cancels its queued runs instead of keeping
    them."""
    d = await _one(ui, kind, name)
    drop = (await ui.field("drop")) in ("on", "true", "1")
    await crons(ui).pause(ui.user.tenant_id, d.kind, d.name, drop=drop)
    return _go(ui, f"{PREFIX}/tasks/{d.kind}/{quote(d.name, safe='')}")


@router.post("/tasks/{kind}/{name}/resume")
async def resume(ui: ActionDep, kind: str, name: str) -> Response:
    """Resumes the task or workflow: its queued runs are assigned again."""
    d = await _one(ui, kind, name)
    await crons(ui).resume(ui.user.tenant_id, d.kind, d.name)
    return _go(ui, f"{PREFIX}/tasks/{d.kind}/{quote(d.name, safe='')}")
