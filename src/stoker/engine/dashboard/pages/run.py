"""``/ui/runs/{id}``: one run — its DAG as a picture, a timeline of attempts, and for the
chosen task (``?task=step``) its attempts with worker and traceback, input, output, why it
waits in words, children, metadata and, for a durable task, its event log; cancel, replay
and download as JSON.

A workflow step's own run id shows its workflow run with that step chosen. The reads are
the REST API's (:mod:`stoker.engine.api.routes`), called for the signed-in user's tenant,
so the page and ``/api/v1`` always agree.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote

from fastapi import Response
from fastapi.responses import HTMLResponse, RedirectResponse

from stoker._core.dag import WorkflowSpec
from stoker._core.status import FINAL
from stoker.db.store import dashboard_runs as store
from stoker.db.store import read as read_store
from stoker.engine.api.deps import ApiState
from stoker.engine.api.models import RunDetail
from stoker.engine.api.routes.durable import DurableLogPage, get_durable_log
from stoker.engine.api.routes.runs import get_run
from stoker.engine.api.routes.workflows import WorkflowRunDetail, WorkflowStep, get_workflow_run
from stoker.engine.auth import Principal
from stoker.engine.dashboard import dag, pages_tasks
from stoker.engine.dashboard.core import (
    OPERATOR,
    PREFIX,
    ActionDep,
    PageError,
    PageRouter,
    Ui,
    UiDep,
)
from stoker.engine.dashboard.pages_forms import form_fields, schema_problems
from stoker.errors import StokerError

router = PageRouter()

TIMELINE_ROW = 22


def _principal(ui: Ui) -> Principal:
    return Principal(ui.user.tenant_id, ui.user.tenant_name)


def _api(ui: Ui) -> ApiState:
    state: ApiState = ui.request.app.state.stoker
    return state


async def _kind(ui: Ui, run_id: uuid.UUID) -> store.RunKind:
    found = await store.dash_run_kind(ui.db, store.DashRunKind(ui.user.tenant_id, run_id))
    if found is None:
        raise PageError(404, f"no run with id {run_id}")
    return found


def why_waiting(detail: RunDetail, step: WorkflowStep | None) -> list[str]:
    """Why a run (or step) is not running now, in words; empty when it is not waiting."""
    reasons: list[str] = []
    status = step.status if step is not None else detail.status
    if step is not None and status == "PENDING":
        waiting_on = [p for p in step.parents]
        if waiting_on:
            reasons.append(f"waits for its parent steps to finish: {', '.join(waiting_on)}")
        for w in step.waits:
            if w.satisfied_at is not None:
                continue
            if w.kind == "sleep" and w.fire_at:
                reasons.append(f"sleeps until {w.fire_at:%Y-%m-%d %H:%M:%S} UTC ({w.cond})")
            elif w.kind == "event":
                cond = f" where {w.expression}" if w.expression else ""
                reasons.append(f"waits for an event {w.event_key!r}{cond} ({w.cond})")
    if status in ("QUEUED", "PENDING", "WAITING"):
        if detail.waiting_reason:
            reasons.append(detail.waiting_reason)
        for slot in detail.scheduling.concurrency:
            if not slot.admitted:
                reasons.append(
                    f"waits for a concurrency slot: key {slot.key!r} of {slot.expression} "
                    f"allows {slot.max_runs} at once ({slot.limit_strategy})"
                )
        if status == "QUEUED" and detail.scheduling.rate_limits:
            keys = ", ".join(str(r.get("key", r)) for r in detail.scheduling.rate_limits)
            reasons.append(f"may wait for rate limits: {keys}")
        if status == "QUEUED" and detail.scheduling.desired_worker_labels:
            reasons.append(
                "needs a worker with labels "
                + json.dumps(detail.scheduling.desired_worker_labels, sort_keys=True)
            )
        if status == "QUEUED" and not reasons:
            reasons.append("queued: waits for a free slot on a worker that serves it")
    if status == "EVICTED":
        reasons.append("evicted from its worker while it waits; restored when its wait ends")
    return reasons


def timeline(
    rows: list[tuple[str, datetime, list[tuple[str, datetime | None, datetime | None]]]],
) -> str:
    """A Gantt chart of steps: for each, queued (grey) from creation to its first start,
    then each attempt's running time coloured by how it ended."""
    now = datetime.now(UTC)
    starts = [created for _, created, _ in rows]
    ends = [end or now for _, _, attempts in rows for _, _, end in attempts] + starts
    if not rows:
        return ""
    t0, t1 = min(starts), max(ends)
    span = max((t1 - t0).total_seconds(), 0.001)
    label_w, width = 140, 720
    inner = width - label_w - 10

    def x(at: datetime) -> float:
        return label_w + inner * (at - t0).total_seconds() / span

    parts = []
    for i, (name, created, attempts) in enumerate(rows):
        y = 6 + i * TIMELINE_ROW
        first = next((s for _, s, _ in attempts if s is not None), None)
        parts.append(
            f'<text x="4" y="{y + 13}">{escape(name[:20])}</text>'
            f'<rect x="{x(created):.1f}" y="{y + 4}" '
            f'width="{max(x(first or now) - x(created), 1):.1f}" '
            f'height="8" fill="#d1d5db"><title>{escape(name)} queued</title></rect>'
        )
        for status, start, end in attempts:
            if start is None:
                continue
            fill = dag.FILL.get(status, ("#dbeafe", "#1d4ed8"))[1]
            secs = ((end or now) - start).total_seconds()
            parts.append(
                f'<rect x="{x(start):.1f}" y="{y}" width="{max(x(end or now) - x(start), 2):.1f}" '
                f'height="16" fill="{fill}" rx="2"><title>{escape(name)} attempt: '
                f"{status}, {secs:.2f} s</title></rect>"
            )
    height = 12 + len(rows) * TIMELINE_ROW
    return (
        f'<svg viewBox="0 0 {width} {height + 14}" width="100%" role="img" '
        f'aria-label="Timeline of attempts over {span:.1f} s" data-testid="timeline">'
        f"<title>Timeline of attempts</title>{''.join(parts)}"
        f'<text x="{label_w}" y="{height + 10}">0 s</text>'
        f'<text x="{width - 10}" y="{height + 10}" text-anchor="end">{span:.1f} s</text></svg>'
    )


@router.get("/runs/{run_id:uuid}")
async def run_page(
    ui: UiDep, run_id: uuid.UUID, task: str | None = None, children: str | None = None
) -> Response:
    """A run's page (its body re-fetches itself while the run is unfinished)."""
    rid = run_id
    kind = await _kind(ui, rid)
    if kind["kind"] == "task" and kind["dag_external_id"] is not None:
        return RedirectResponse(
            f"{PREFIX}/runs/{kind['dag_external_id']}?task={kind['step']}", status_code=303
        )
    who, api = _principal(ui), _api(ui)
    workflow: WorkflowRunDetail | None = None
    if kind["kind"] == "workflow":
        workflow = await get_workflow_run(rid, who, ui.db)
        row = await read_store.api_get_workflow_run(
            ui.db, read_store.ApiGetWorkflowRun(ui.user.tenant_id, rid)
        )
        assert row is not None
        spec = WorkflowSpec.model_validate(row["config"])
        steps = workflow.steps
        chosen = next((s for s in steps if s.step == task), None) or next(
            (s for s in steps if s.status == "FAILED"), steps[0] if steps else None
        )
        task_run_ids = [s.task_run_id for s in steps]
    else:
        spec, steps, chosen = None, [], None
        task_run_ids = [rid]
    kids = await store.dash_run_children(
        ui.db, store.DashRunChildren(ui.user.tenant_id, task_run_ids)
    )
    by_parent: dict[uuid.UUID, list[dag.Child]] = {}
    for c in kids:
        by_parent.setdefault(c["parent_run_id"], []).append(
            dag.Child(str(c["run_id"]), c["name"], c["status"])
        )
    detail = await get_run(chosen.task_run_id if chosen else rid, who, ui.db, api)
    if workflow is not None and spec is not None:
        by_step = {s.name: s for s in spec.steps}
        nodes = [
            dag.Node(
                s.step,
                s.task_name,
                s.status,
                s.role,
                s.parents,
                {
                    k: getattr(by_step[s.step], k)
                    for k in ("wait_for", "skip_if", "cancel_if")
                    if s.step in by_step
                },
                by_parent.get(s.task_run_id, []),
            )
            for s in steps
        ]
        lines = [
            (s.step, s.created_at, [(a.status, a.started_at, a.finished_at) for a in s.attempts])
            for s in steps
        ]
        status, name = workflow.status, workflow.workflow_name
    else:
        nodes = [
            dag.Node(
                detail.task_name, detail.task_name, detail.status, children=by_parent.get(rid, [])
            )
        ]
        lines = [
            (
                detail.task_name,
                detail.created_at,
                [(a.status, a.started_at, a.finished_at) for a in detail.attempts],
            )
        ]
        status, name = detail.status, detail.task_name
    base = f"{PREFIX}/runs/{rid}"
    picture = dag.draw(
        nodes,
        selected=chosen.step if chosen else detail.task_name,
        link=base + "?task={step}",
        child_link=PREFIX + "/runs/{run_id}",
    )
    durable: DurableLogPage | None = None
    if detail.scheduling.durable:
        try:
            durable = await get_durable_log(detail.run_id, who, ui.db)
        except StokerError:
            durable = None  # not started yet: no log
    chosen_children = by_parent.get(chosen.task_run_id if chosen else rid, [])
    return ui.render(
        "run.html",
        active="runs",
        run_id=rid,
        name=name,
        status=status,
        workflow=workflow,
        step=chosen,
        detail=detail,
        picture=picture,
        timeline=timeline(lines),
        reasons=why_waiting(detail, chosen),
        durable=durable,
        children=chosen_children,
        show_children=children == "all" or len(chosen_children) <= dag.COLLAPSE_ABOVE,
        finished=status in FINAL,
        live=status not in FINAL,
        self_url=str(ui.request.url.path)
        + ("?" + ui.request.url.query if ui.request.url.query else ""),
        pretty=lambda v: json.dumps(v, indent=2, sort_keys=True, default=str),
        run_input=workflow.input if workflow is not None else detail.input,
        metadata=workflow.additional_metadata
        if workflow is not None
        else detail.additional_metadata,
    )


@router.get("/runs/{run_id:uuid}/json")
async def run_json(ui: UiDep, run_id: uuid.UUID) -> Response:
    """The run as JSON, as the REST API returns it (a workflow run: with every step's
    detail), offered as a download."""
    rid = run_id
    kind = await _kind(ui, rid)
    who, api = _principal(ui), _api(ui)
    doc: dict[str, Any]
    if kind["kind"] == "workflow":
        workflow = await get_workflow_run(rid, who, ui.db)
        doc = workflow.model_dump(mode="json")
        doc["step_runs"] = [
            (await get_run(s.task_run_id, who, ui.db, api)).model_dump(mode="json")
            for s in workflow.steps
        ]
    else:
        doc = (await get_run(rid, who, ui.db, api)).model_dump(mode="json")
    return Response(
        json.dumps(doc, indent=2, sort_keys=True),
        media_type="application/json",
        headers={"content-disposition": f'attachment; filename="run-{rid}.json"'},
    )


async def _input_schema(ui: Ui, kind: store.RunKind, name: str) -> dict[str, Any] | None:
    found = await pages_tasks.definitions(
        ui.db,
        ui.user.tenant_id,
        datetime.now(UTC),
        kind="workflow" if kind["kind"] == "workflow" else "task",
        name=name,
    )
    return found[0].input_schema if found else None


async def _current(ui: Ui, run_id: uuid.UUID) -> tuple[store.RunKind, str, str, Any]:
    """The run's kind, task or workflow name, status and input (a run, not a step)."""
    kind = await _kind(ui, run_id)
    if kind["kind"] == "task" and kind["dag_external_id"] is not None:
        raise PageError(
            404,
            f"run {run_id} is a step of workflow run {kind['dag_external_id']}: "
            "edit the workflow run's input",
        )
    who = _principal(ui)
    if kind["kind"] == "workflow":
        workflow = await get_workflow_run(run_id, who, ui.db)
        return kind, workflow.workflow_name, workflow.status, workflow.input
    detail = await get_run(run_id, who, ui.db, _api(ui))
    return kind, detail.task_name, detail.status, detail.input


async def _edit_page(
    ui: Ui,
    run_id: uuid.UUID,
    *,
    text: str | None = None,
    problems: list[str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    kind, name, status, current = await _current(ui, run_id)
    schema = await _input_schema(ui, kind, name)
    return ui.render(
        "run_input.html",
        active="runs",
        run_id=run_id,
        name=name,
        status=status,
        finished=status in FINAL,
        fields=form_fields(schema),
        text=text if text is not None else json.dumps(current, indent=2, sort_keys=True),
        problems=problems or [],
        status_code=status_code,
    )


@router.get("/runs/{run_id:uuid}/edit-input")
async def edit_input_page(ui: UiDep, run_id: uuid.UUID) -> HTMLResponse:
    """A form with the run's input to change before replaying it (operators)."""
    ui.require(OPERATOR)
    return await _edit_page(ui, run_id)


@router.post("/runs/{run_id:uuid}/edit-input")
async def edit_input(ui: ActionDep, run_id: uuid.UUID) -> Response:
    """Replays the run with the edited input, or shows the form again with what is wrong
    (the run is left as it was)."""
    text = await ui.field("input")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        problem = f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        return await _edit_page(ui, run_id, text=text, problems=[problem], status_code=422)
    kind, name, _status, _input = await _current(ui, run_id)
    problems = schema_problems(await _input_schema(ui, kind, name), value)
    if problems:
        return await _edit_page(ui, run_id, text=text, problems=problems, status_code=422)
    ops = ui.state.ops
    if ops is None:
        raise PageError(503, "replay needs the engine: this dashboard has none")
    try:
        await ops.replay_from(ui.user.tenant_id, str(run_id), input=value, with_input=True)
    except StokerError as exc:
        return await _edit_page(ui, run_id, text=text, problems=[str(exc)], status_code=409)
    ui.state.live.touch(ui.user.tenant_id)
    return _go(ui, f"{PREFIX}/runs/{run_id}")


def _go(ui: Ui, target: str) -> Response:
    if ui.request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


@router.post("/runs/{run_id:uuid}/{action}")
async def run_action(ui: ActionDep, run_id: uuid.UUID, action: str) -> Response:
    """Cancels or replays one run, then shows it again."""
    rid = run_id
    await _kind(ui, rid)
    ops = ui.state.ops
    if ops is None:
        raise PageError(503, "cancel and replay need the engine: this dashboard has none")
    if action == "cancel":
        outcomes = await ops.cancel(
            ui.user.tenant_id, [str(rid)], None, f"cancelled from the dashboard by {ui.user.email}"
        )
    elif action == "replay":
        outcomes = await ops.replay(ui.user.tenant_id, [str(rid)], None)
    elif action == "replay-from":
        step = await ui.field("step")
        try:
            outcomes = [await ops.replay_from(ui.user.tenant_id, str(rid), step=step)]
        except StokerError as exc:
            raise PageError(409, str(exc)) from None
        target = f"{PREFIX}/runs/{rid}?task={quote(step, safe='')}"
        ui.state.live.touch(ui.user.tenant_id)
        return _go(ui, target)
    else:
        raise PageError(404, f"unknown action {action!r}: cancel, replay or replay-from")
    ui.state.live.touch(ui.user.tenant_id)
    refused = [o for o in outcomes if o.outcome not in ("cancelled", "replayed")]
    if refused:
        raise PageError(409, refused[0].message)
    return _go(ui, f"{PREFIX}/runs/{rid}")
