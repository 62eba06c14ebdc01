"""``/ui/events``: the tenant's events, newest first (filter by key, ``*`` wildcards
allowed by the engine's key match), and ``/ui/events/{id}``: one event's payload and
metadata, the runs it triggered with their status and the filter that matched; re-push
starts its runs again.

Events are read and replayed through the engine's
:class:`~stoker.engine.events.EventAdmin`, as ``GET /api/v1/events`` and
``POST /api/v1/events/{id}/replay`` do.
"""

from __future__ import annotations

import uuid

from fastapi.responses import HTMLResponse, RedirectResponse, Response

from stoker.engine.dashboard.core import PREFIX, ActionDep, PageError, PageRouter, UiDep
from stoker.engine.dashboard.pages_services import events
from stoker.engine.events import EventFilter
from stoker.errors import NotFoundError, StokerError

router = PageRouter(nav="events")

SHOWN = 100


@router.get("/events")
async def events_page(ui: UiDep, key: str = "") -> HTMLResponse:
    """The newest events (those of ``key`` when given)."""
    problem = None
    try:
        rows = await events(ui).list_events(
            ui.user.tenant_id, EventFilter(key=key.strip() or None, limit=SHOWN)
        )
    except StokerError as exc:
        problem = f"{exc}; showing every key"
        rows = await events(ui).list_events(ui.user.tenant_id, EventFilter(limit=SHOWN))
    return ui.render(
        "events.html", active="events", events=rows, key=key, problem=problem, shown=SHOWN
    )


@router.get("/events/{event_id}")
async def event_page(ui: UiDep, event_id: str, repushed: int = 0) -> HTMLResponse:
    """One event, its payload and the runs it started."""
    try:
        found = await events(ui).get(ui.user.tenant_id, event_id)
    except NotFoundError:
        raise PageError(404, f"no event {event_id!r} in this tenant") from None
    return ui.render("event.html", active="events", e=found.row, runs=found.runs, repushed=repushed)


@router.post("/events/{event_id}/repush")
async def repush(ui: ActionDep, event_id: str) -> Response:
    """Starts the event's runs again (each a new run) and shows the event with them."""
    try:
        uuid.UUID(event_id)
        started = await events(ui).replay(ui.user.tenant_id, event_id)
    except (ValueError, NotFoundError):
        raise PageError(404, f"no event {event_id!r} in this tenant") from None
    url = f"{PREFIX}/events/{event_id}?repushed={len(started)}"
    if ui.request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)
