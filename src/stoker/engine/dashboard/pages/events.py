"""``/ui/events``: the tenant's events, newest first (filtered by one exact key), and
``/ui/events/{id}``: one event's payload and metadata, the runs it triggered with their
status and the filter that matched; re-push starts its runs again. **Push a test event**
stores one with a key and a JSON payload, as ``app.events.push`` does, and opens it.

Events are read and replayed through the engine's
:class:`~stoker.engine.events.EventAdmin`, as ``GET /api/v1/events`` and
``POST /api/v1/events/{id}/replay`` do.
"""

from __future__ import annotations

import json
import uuid

from fastapi.responses import HTMLResponse, RedirectResponse, Response

from stoker.engine.dashboard.core import PREFIX, ActionDep, PageError, PageRouter, Ui, UiDep
from stoker.engine.dashboard.pages_services import events
from stoker.engine.events import EventFilter
from stoker.engine.ingest.workflows import EventInput
from stoker.errors import InvalidRequestError, NotFoundError, StokerError

router = PageRouter(nav="events")

SHOWN = 100


async def _list(
    ui: Ui,
    key: str,
    problem: str | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    try:
        rows = await events(ui).list_events(
            ui.user.tenant_id, EventFilter(key=key.strip() or None, limit=SHOWN)
        )
    except StokerError as exc:
        problem = f"{exc}; showing every key"
        rows = await events(ui).list_events(ui.user.tenant_id, EventFilter(limit=SHOWN))
    return ui.render(
        "events.html",
        active="events",
        events=rows,
        key=key,
        problem=problem,
        shown=SHOWN,
        values=values or {},
        status_code=status_code,
    )


@router.get("/events")
async def events_page(ui: UiDep, key: str = "") -> HTMLResponse:
    """The newest events (those of ``key`` when given)."""
    return await _list(ui, key)


@router.post("/events")
async def push_event(ui: ActionDep) -> Response:
    """Pushes a test event (``key``, JSON ``payload``) and opens it."""
    form = {k: v[0] for k, v in (await ui.form()).items()}
    key = form.get("key", "").strip()
    try:
        payload = json.loads(form.get("payload", "").strip() or "{}")
    except json.JSONDecodeError as exc:
        problem = f"the payload is not valid JSON: {exc.msg} at column {exc.colno}"
        return await _list(ui, "", problem, form, 422)
    try:
        if not key:
            raise InvalidRequestError("an event needs a key (such as order:created)")
        pushed = await events(ui).push(
            ui.user.tenant_id, [EventInput(key, json.dumps(payload).encode())]
        )
    except StokerError as exc:
        return await _list(ui, "", str(exc), form, 422)
    url = f"{PREFIX}/events/{pushed.events[0].event_id}"
    if ui.request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


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
