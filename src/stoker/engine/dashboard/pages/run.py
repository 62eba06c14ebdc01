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

from fastapi import Response
from fastapi.responses import RedirectResponse

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
from stoker.engine.dashboard import dag
from stoker.engine.dashboard.core import (
    PREFIX,
    ActionDep,
    PageError,
    PageRouter,
    Ui,
    UiDep,
)
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
    else:
        raise PageError(404, f"unknown action {action!r}: cancel or replay")
    ui.state.live.touch(ui.user.tenant_id)
    refused = [o for o in outcomes if o.outcome not in ("cancelled", "replayed")]
    if refused:
        raise PageError(409, refused[0].message)
    target = f"{PREFIX}/runs/{rid}"
    if ui.request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)
