"""``/ui/crons``: crons (in words, next fire times, last fires; create, edit, enable or
disable, trigger now, delete) and scheduled runs (reschedule, delete).

Every change goes through the engine's services — :class:`~stoker.engine.crons.CronAdmin`
and :class:`~stoker.engine.schedules.Schedules` — as the REST API's do, so the same checks
apply (a code cron's expression is the code's; a fired schedule can no longer change) and
their messages are shown on the page.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from urllib.parse import quote

from fastapi.responses import HTMLResponse, RedirectResponse, Response

from stoker.engine.crons import CronFields
from stoker.engine.dashboard.core import PREFIX, ActionDep, PageError, PageRouter, Ui, UiDep
from stoker.engine.dashboard.pages_crons import cron_page, local
from stoker.engine.dashboard.pages_services import api, crons
from stoker.engine.dashboard.pages_tasks import definitions
from stoker.engine.dashboard.pages_words import until
from stoker.engine.schedules import ScheduleFilter
from stoker.errors import NotFoundError, StokerError

router = PageRouter(nav="crons")

SCHEDULES_SHOWN = 100
OVERLAPS = ("allow", "skip", "cancel_previous", "buffer_one")


def _json(text: str, what: str) -> bytes:
    """A JSON field of a form, checked (InvalidRequestError-like PageError text)."""
    try:
        return json.dumps(json.loads(text or "{}")).encode()
    except json.JSONDecodeError as exc:
        raise _FormProblem(f"{what} is not valid JSON: {exc.msg} at column {exc.colno}") from None


class _FormProblem(Exception):
    """A form field that cannot be used; shown on the page."""


async def _page(
    ui: Ui,
    *,
    message: str | None = None,
    problem: str | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    now = datetime.now(UTC)
    views = await crons(ui).list(ui.user.tenant_id)
    scheduled = await api(ui).schedules.list(
        ui.user.tenant_id, ScheduleFilter([], [], ["SCHEDULED"], None, None, None, SCHEDULES_SHOWN)
    )
    targets = [f"{d.kind}:{d.name}" for d in await definitions(ui.db, ui.user.tenant_id, now)]
    return ui.render(
        "crons.html",
        active="crons",
        crons=[cron_page(v, now) for v in views],
        scheduled=[
            {
                "id": s["external_id"],
                "target": s["task_name"] or s["workflow_name"],
                "run_at": s["run_at"],
                "when": until(s["run_at"], now),
                "local": local(s["run_at"], "UTC"),
                "input": s["input"],
            }
            for s in scheduled
        ],
        targets=targets,
        overlaps=OVERLAPS,
        message=message,
        problem=problem,
        values=values or {},
        status_code=status_code,
    )


@router.get("/crons")
async def crons_page(ui: UiDep) -> HTMLResponse:
    """Crons and the scheduled runs still to fire."""
    return await _page(ui)


@router.get("/crons/{name}")
async def cron_detail(ui: UiDep, name: str) -> HTMLResponse:
    """One cron: its next five fires, last fires and the edit form."""
    return await _detail(ui, name)


async def _detail(
    ui: Ui,
    name: str,
    *,
    problem: str | None = None,
    message: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    try:
        view = await crons(ui).one(ui.user.tenant_id, name)
    except NotFoundError:
        raise PageError(404, f"no cron named {name!r} in this tenant") from None
    return ui.render(
        "cron.html",
        active="crons",
        c=cron_page(view, datetime.now(UTC)),
        overlaps=OVERLAPS,
        problem=problem,
        message=message,
        status_code=status_code,
    )


def _back(ui: Ui, url: str) -> Response:
    if ui.request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def _cron_url(name: str) -> str:
    return f"{PREFIX}/crons/{quote(name, safe='')}"


@router.post("/crons")
async def create_cron(ui: ActionDep) -> Response:
    """Creates a cron of a task or workflow (``target`` is ``task:NAME`` or
    ``workflow:NAME``)."""
    form = {k: v[0] for k, v in (await ui.form()).items()}
    kind, _, target = form.get("target", "").partition(":")
    try:
        if kind not in ("task", "workflow") or not target:
            raise _FormProblem("choose the task or workflow the cron runs")
        fields = CronFields(
            expression=form.get("expression", "").strip(),
            timezone=form.get("timezone", "").strip() or "UTC",
            input=_json(form.get("input", ""), "input"),
            overlap=form.get("overlap") or None,
            enabled=True,
        )
        name = form.get("name", "").strip()
        await crons(ui).create(
            ui.user.tenant_id,
            name,
            target if kind == "task" else "",
            target if kind == "workflow" else "",
            fields,
        )
    except (_FormProblem, StokerError) as exc:
        return await _page(ui, problem=str(exc), values=form, status_code=422)
    return _back(ui, _cron_url(name))


@router.post("/crons/{name}/edit")
async def edit_cron(ui: ActionDep, name: str) -> Response:
    """Changes a cron's expression, time zone, input and overlap policy (a code cron takes
    only the policy: the rest is the code's)."""
    form = {k: v[0] for k, v in (await ui.form()).items()}
    try:
        view = await crons(ui).one(ui.user.tenant_id, name)
        row = view.row
        code = row["source"] == "code"
        expression = form.get("expression", "").strip()
        timezone = form.get("timezone", "").strip()
        text = form.get("input", "")
        new_input = _json(text, "input") if text.strip() else None
        fields = CronFields(
            expression=None if code or expression == row["expression"] else expression or None,
            timezone=None if code or timezone == row["timezone"] else timezone or None,
            input=None if code or new_input == json.dumps(row["input"]).encode() else new_input,
            overlap=form.get("overlap") or None,
        )
        await crons(ui).update(ui.user.tenant_id, name, fields)
    except NotFoundError:
        raise PageError(404, f"no cron named {name!r} in this tenant") from None
    except (_FormProblem, StokerError) as exc:
        return await _detail(ui, name, problem=str(exc), status_code=422)
    return _back(ui, _cron_url(name))


async def _act(ui: Ui, name: str, what: str) -> Response:
    tenant = ui.user.tenant_id
    admin = crons(ui)
    try:
        if what == "enable":
            await admin.update(tenant, name, CronFields(enabled=True))
        elif what == "disable":
            await admin.update(tenant, name, CronFields(enabled=False))
        elif what == "trigger":
            fired = await admin.trigger_now(tenant, name)
            return _back(ui, f"{PREFIX}/runs/{fired.run_id}")
        else:
            await admin.delete(tenant, name)
            return _back(ui, f"{PREFIX}/crons")
    except NotFoundError:
        raise PageError(404, f"no cron named {name!r} in this tenant") from None
    except StokerError as exc:
        return await _detail(ui, name, problem=str(exc), status_code=409)
    return _back(ui, _cron_url(name))


@router.post("/crons/{name}/enable")
async def enable_cron(ui: ActionDep, name: str) -> Response:
    """Enables a cron; its next tick is computed from now."""
    return await _act(ui, name, "enable")


@router.post("/crons/{name}/disable")
async def disable_cron(ui: ActionDep, name: str) -> Response:
    """Disables a cron: it fires no more until enabled."""
    return await _act(ui, name, "disable")


@router.post("/crons/{name}/trigger")
async def trigger_cron(ui: ActionDep, name: str) -> Response:
    """Starts one run of the cron now (under its overlap policy) and opens it."""
    return await _act(ui, name, "trigger")


@router.post("/crons/{name}/delete")
async def delete_cron(ui: ActionDep, name: str) -> Response:
    """Deletes a cron created at run time."""
    return await _act(ui, name, "delete")


def _schedule_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise PageError(404, f"no scheduled run {raw!r}") from None


@router.post("/schedules/{schedule_id}/reschedule")
async def reschedule(ui: ActionDep, schedule_id: str) -> Response:
    """Moves a scheduled run not fired yet to ``run_at`` (ISO 8601; UTC without a zone)."""
    sid = _schedule_id(schedule_id)
    raw = (await ui.field("run_at")).strip()
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        return await _page(
            ui, problem=f"{raw!r} is not a time (write 2026-12-24T18:00, UTC)", status_code=422
        )
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    try:
        await api(ui).schedules.update(ui.user.tenant_id, sid, run_at_ms=int(at.timestamp() * 1000))
    except NotFoundError:
        raise PageError(404, f"no scheduled run {schedule_id!r} in this tenant") from None
    except StokerError as exc:
        return await _page(ui, problem=str(exc), status_code=409)
    return _back(ui, f"{PREFIX}/crons")


@router.post("/schedules/{schedule_id}/delete")
async def delete_schedule(ui: ActionDep, schedule_id: str) -> Response:
    """Deletes a scheduled run not fired yet."""
    sid = _schedule_id(schedule_id)
    deleted = await api(ui).schedules.delete(
        ui.user.tenant_id, ScheduleFilter([sid], [], [], None, None, None)
    )
    if not deleted:
        return await _page(
            ui,
            problem=f"scheduled run {sid} was not deleted: it fired or does not exist",
            status_code=409,
        )
    return _back(ui, f"{PREFIX}/crons")
