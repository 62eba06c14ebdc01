"""``/ui/workers``: the tenant's workers (heartbeat age, slots by pool, labels, what each
runs) and ``/ui/workers/{id}``: one worker with the attempts it holds; pause and resume
(:mod:`stoker.engine.workers`: a paused worker is assigned nothing new and finishes what
it runs) and drain (the same, then the worker stops)."""

from __future__ import annotations

import uuid

from fastapi.responses import HTMLResponse, RedirectResponse, Response

from stoker.engine import workers as worker_admin
from stoker.engine.dashboard import pages_workers
from stoker.engine.dashboard.core import PREFIX, ActionDep, PageError, PageRouter, Ui, UiDep
from stoker.engine.dashboard.pages_services import api
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


async def _set_paused(ui: Ui, worker_id: str, paused: bool) -> Response:
    tenant = ui.user.tenant_id
    change = worker_admin.pause_worker if paused else worker_admin.resume_worker
    try:
        found = await change(ui.db, tenant, worker_id, dispatcher=api(ui).dispatcher)
    except NotFoundError:
        raise PageError(404, f"no worker {worker_id!r} in this tenant") from None
    url = f"{PREFIX}/workers/{found.worker_id}"
    if ui.request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


@router.post("/workers/{worker_id}/pause")
async def pause(ui: ActionDep, worker_id: str) -> Response:
    """Pauses a worker: it is assigned no new runs and finishes those it holds."""
    return await _set_paused(ui, worker_id, True)


@router.post("/workers/{worker_id}/drain")
async def drain(ui: ActionDep, worker_id: str) -> Response:
    """Drains a live worker: nothing new is assigned to it, what it runs finishes, and it
    stops (told in its next heartbeat's answer)."""
    try:
        found = await worker_admin.drain_worker(
            ui.db, ui.user.tenant_id, worker_id, dispatcher=api(ui).dispatcher
        )
    except NotFoundError:
        raise PageError(404, f"no live worker {worker_id!r} in this tenant") from None
    url = f"{PREFIX}/workers/{found.worker_id}"
    if ui.request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


@router.post("/workers/{worker_id}/resume")
async def resume(ui: ActionDep, worker_id: str) -> Response:
    """Resumes a paused worker: it is assigned runs again."""
    return await _set_paused(ui, worker_id, False)
