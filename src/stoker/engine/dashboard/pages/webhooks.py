"""``/ui/webhooks``: incoming webhooks (how each authenticates, the event key it makes)
and event filters (which task or workflow an event starts, under which CEL expression);
an operator deletes a filter created at run time.

Read through the engine's :class:`~stoker.engine.webhooks.Webhooks` and
:class:`~stoker.engine.events.EventAdmin`; secrets are never shown.
"""

from __future__ import annotations

from fastapi.responses import HTMLResponse, RedirectResponse, Response

from stoker.engine.dashboard.core import PREFIX, ActionDep, PageError, PageRouter, UiDep
from stoker.engine.dashboard.pages_services import events, webhooks
from stoker.errors import NotFoundError, StokerError

router = PageRouter(nav="webhooks")


@router.get("/webhooks")
async def webhooks_page(ui: UiDep) -> HTMLResponse:
    """Webhooks and filters."""
    hooks = await webhooks(ui).list(ui.user.tenant_id)
    filters = await events(ui).list_filters(ui.user.tenant_id, limit=1000)
    return ui.render("webhooks.html", active="webhooks", hooks=hooks, filters=filters)


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
