"""``/ui/webhooks``: incoming webhooks (how each authenticates, the event key it makes)
and event filters (which task or workflow an event starts, under which CEL expression);
an operator creates a filter, or deletes one created at run time.

Read through the engine's :class:`~stoker.engine.webhooks.Webhooks` and
:class:`~stoker.engine.events.EventAdmin`; secrets are never shown.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.responses import HTMLResponse, RedirectResponse, Response

from stoker.engine.dashboard.core import PREFIX, ActionDep, PageError, PageRouter, Ui, UiDep
from stoker.engine.dashboard.pages_services import events, webhooks
from stoker.engine.dashboard.pages_tasks import definitions
from stoker.errors import NotFoundError, StokerError

router = PageRouter(nav="webhooks")


async def _page(
    ui: Ui,
    problem: str | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    hooks = await webhooks(ui).list(ui.user.tenant_id)
    filters = await events(ui).list_filters(ui.user.tenant_id, limit=1000)
    targets = [
        f"{d.kind}:{d.name}" for d in await definitions(ui.db, ui.user.tenant_id, datetime.now(UTC))
    ]
    return ui.render(
        "webhooks.html",
        active="webhooks",
        hooks=hooks,
        filters=filters,
        targets=targets,
        problem=problem,
        values=values or {},
        status_code=status_code,
    )


@router.get("/webhooks")
async def webhooks_page(ui: UiDep) -> HTMLResponse:
    """Webhooks and filters."""
    return await _page(ui)


@router.post("/filters")
async def create_filter(ui: ActionDep) -> Response:
    """Creates a filter: events start ``target`` (``task:NAME`` or ``workflow:NAME``) only
    when ``expression`` (CEL over ``input`` and ``additional_metadata``) holds."""
    form = {k: v[0] for k, v in (await ui.form()).items()}
    kind, _, name = form.get("target", "").partition(":")
    try:
        await events(ui).create_filter(
            ui.user.tenant_id,
            task_name=name if kind == "task" else "",
            workflow_name=name if kind == "workflow" else "",
            expression=form.get("expression", ""),
            scope=form.get("scope", "").strip(),
            payload=form.get("payload", "").strip().encode(),
        )
    except StokerError as exc:
        return await _page(ui, str(exc), form, 422)
    url = f"{PREFIX}/webhooks"
    if ui.request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


@router.post("/filters/{filter_id}/delete")
async def delete_filter(ui: ActionDep, filter_id: str) -> Response:
    """Deletes a filter created at run time (code filters go with the code)."""
    try:
        await events(ui).delete_filter(ui.user.tenant_id, filter_id)
    except NotFoundError:
        raise PageError(404, f"no filter {filter_id!r} in this tenant") from None
    except StokerError as exc:
        raise PageError(409, str(exc)) from None
    url = f"{PREFIX}/webhooks"
    if ui.request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)
