"""A run's logs and live stream on its page (``/ui/runs/{id}``).

* ``/ui/runs/{id}/logs``: the run's log lines (a task run, or a workflow step's run), the
  first 1,000 oldest first, as a fragment the page re-fetches while the run is live;
* ``/ui/runs/{id}/stream``: the task run's stream (``ctx.put_stream``) as Server-Sent
  Events, every chunk still kept and then live, which ``live.js`` appends to the panel.

Both read through the engine's task logs and streams (:mod:`stoker.engine.observe`), the
same calls as the REST API's ``/api/v1/runs/{id}/logs`` and ``/stream``, for the signed-in
user's tenant.
"""

from __future__ import annotations

import uuid

from fastapi.responses import HTMLResponse, StreamingResponse

from stoker.engine.api.deps import ApiState
from stoker.engine.api.routes.observe import run_logs, run_stream
from stoker.engine.auth import Principal
from stoker.engine.dashboard.core import PageError, PageRouter, Ui, UiDep
from stoker.errors import StokerError

router = PageRouter()

MAX_LINES = 1000


def _who(ui: Ui) -> tuple[Principal, ApiState]:
    state: ApiState = ui.request.app.state.stoker
    return Principal(ui.user.tenant_id, ui.user.tenant_name), state


@router.get("/runs/{run_id:uuid}/logs")
async def logs(ui: UiDep, run_id: uuid.UUID) -> HTMLResponse:
    """The run's first :data:`MAX_LINES` log lines."""
    who, state = _who(ui)
    try:
        page = await run_logs(run_id, who, state, None, MAX_LINES)
    except StokerError as exc:
        raise PageError(404, exc.message) from None
    return ui.render(
        "run_logs.html", lines=page.items, more=len(page.items) >= MAX_LINES, limit=MAX_LINES
    )


@router.get("/runs/{run_id:uuid}/stream")
async def stream(ui: UiDep, run_id: uuid.UUID) -> StreamingResponse:
    """The task run's stream as Server-Sent Events (``chunk`` messages, then ``end``)."""
    who, state = _who(ui)
    try:
        return await run_stream(run_id, who, state, 0)
    except StokerError as exc:
        raise PageError(404, exc.message) from None
