"""``/ui/rate-limits``: each rate limit with the units its window holds now, when room
frees up and how many queued runs it defers; edit a limit (or create one), reset its window,
delete one.

Changes go through :mod:`stoker.engine.ratelimits` with the engine's definitions, as the
REST API's do: runs a limit deferred are looked at again at once, so raising a limit
drains them now.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi.responses import HTMLResponse, RedirectResponse, Response

from stoker.engine import ratelimits
from stoker.engine.dashboard import pages_limits
from stoker.engine.dashboard.core import PREFIX, ActionDep, PageError, PageRouter, Ui, UiDep
from stoker.engine.dashboard.pages_services import api
from stoker.engine.definitions.registry import Definitions
from stoker.errors import NotFoundError, StokerError

router = PageRouter(nav="rate-limits")


async def _page(
    ui: Ui,
    *,
    problem: str | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    limits = await pages_limits.rate_limits(ui.db, ui.user.tenant_id)
    return ui.render(
        "rate_limits.html",
        active="rate-limits",
        limits=limits,
        problem=problem,
        values=values or {},
        status_code=status_code,
    )


@router.get("/rate-limits")
async def rate_limits(ui: UiDep) -> HTMLResponse:
    """The rate limits page (its body re-fetches itself when runs change)."""
    return await _page(ui)


def _back(ui: Ui, key: str) -> Response:
    url = f"{PREFIX}/rate-limits#limit-{quote(key, safe='')}"
    if ui.request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


@router.post("/rate-limits")
async def put_limit(ui: ActionDep) -> Response:
    """Creates or changes a static limit: ``key``, ``limit`` units per ``duration``
    (``"1m"``, ``"30s"``, or seconds)."""
    form = {k: v[0].strip() for k, v in (await ui.form()).items()}
    key = form.get("key", "")
    try:
        limit = int(form.get("limit", ""))
    except ValueError:
        problem = f"limit {form.get('limit', '')!r} is not a whole number"
        return await _page(ui, problem=problem, values=form, status_code=422)
    duration: str | float = form.get("duration", "")
    try:
        duration = float(duration)
    except ValueError:
        pass  # a duration in words ("1m"), read by put_rate_limit
    try:
        await ratelimits.put_rate_limit(
            ui.db, ui.user.tenant_id, key, limit, duration, definitions=api(ui).definitions
        )
    except StokerError as exc:
        return await _page(ui, problem=str(exc), values=form, status_code=422)
    return _back(ui, key)


@router.post("/rate-limits/{key}/reset")
async def reset_limit(ui: ActionDep, key: str) -> Response:
    """Empties the limit's window: its whole limit is free now, and the runs it deferred
    are ready at once."""
    definitions = api(ui).definitions
    try:
        await ratelimits.reset_rate_limit(
            ui.db,
            ui.user.tenant_id,
            key,
            on_change=definitions.limits_changed if isinstance(definitions, Definitions) else None,
        )
    except NotFoundError:
        raise PageError(404, f"no rate limit with key {key!r}") from None
    ui.state.live.touch(ui.user.tenant_id)
    return _back(ui, key)


@router.post("/rate-limits/{key}/delete")
async def delete_limit(ui: ActionDep, key: str) -> Response:
    """Deletes a limit (runs still naming it are no longer held by it)."""
    try:
        await ratelimits.delete_rate_limit(ui.db, ui.user.tenant_id, key)
    except NotFoundError:
        raise PageError(404, f"no rate limit with key {key!r}") from None
    url = f"{PREFIX}/rate-limits"
    if ui.request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)
