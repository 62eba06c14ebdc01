"""``/ui/workers``: the tenant's workers (heartbeat age, slots by pool, labels, what each
runs) and ``/ui/workers/{id}``: one worker with the attempts it holds."""

from __future__ import annotations

import uuid

from fastapi.responses import HTMLResponse

from stoker.engine.dashboard import pages_workers
from stoker.engine.dashboard.core import PageError, PageRouter, UiDep
from stoker.errors import NotFoundError

router = PageRouter(nav="workers")

STATUSES = ("ACTIVE", "DEAD", "STOPPED")


@router.get("/workers")
async def workers(ui: UiDep, status: str = "") -> HTMLResponse:
    """Every worker, or those in the statuses of ``status`` (comma-separated)."""
    wanted = [s for s in status.upper().split(",") if s]
    problem = None
    bad = [s for s in wanted if s not in STATUSES]
    if bad:
        problem = f"status {', '.join(bad)} is not one of {', '.join(STATUSES)}; showing all"
        wanted = []
    rows = await pages_workers.list_workers(ui.db, ui.user.tenant_id, wanted or None)
    return ui.render(
        "workers.html",
        active="workers",
        workers=rows,
        statuses=STATUSES,
        status=",".join(wanted),
        problem=problem,
    )


@router.get("/workers/{worker_id}")
async def worker(ui: UiDep, worker_id: str) -> HTMLResponse:
    """One worker and the attempts it holds now."""
    try:
        wid = uuid.UUID(worker_id)
        found, held = await pages_workers.worker_detail(ui.db, ui.user.tenant_id, wid)
    except (ValueError, NotFoundError):
        raise PageError(404, f"no worker {worker_id!r} in this tenant") from None
    return ui.render("worker.html", active="workers", worker=found, held=held)
