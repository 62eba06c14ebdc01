"""``/ui/queues``: what waits for a worker per task and priority, the age of the oldest
waiting run, and how many runs are blocked by each reason (no eligible worker, paused,
rate limit, deferred, concurrency key)."""

from __future__ import annotations

from fastapi.responses import HTMLResponse

from stoker.engine.dashboard import pages_queues
from stoker.engine.dashboard.core import PageRouter, UiDep

router = PageRouter(nav="queues")


@router.get("/queues")
async def queues(ui: UiDep) -> HTMLResponse:
    """The queues page (its body re-fetches itself when runs change)."""
    view = await pages_queues.queues(ui.db, ui.user.tenant_id)
    return ui.render("queues.html", active="queues", view=view, reasons=pages_queues.REASONS)
