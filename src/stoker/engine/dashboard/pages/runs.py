"""``/ui/runs``: the runs list — status chips, time window, name, metadata filters, a
histogram that zooms on click, keyset pages, and cancel/replay of selected runs or of
"all N matching" after a confirmation that shows the count; ``/ui/bulk/{id}`` follows a
bulk operation's progress.

Bulk actions over a filter freeze what they apply to when they start: the runs matching
it then, created no later than the moment the confirmation was shown, narrowed to those
the action applies to (cancel: unfinished runs; replay: failed and cancelled ones). The
ids go to the engine's bulk operations (:mod:`stoker.engine.runs.bulk`).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from fastapi import Response
from fastapi.responses import HTMLResponse
from starlette.datastructures import QueryParams

from stoker._core.status import FINAL
from stoker.db.store import dashboard_runs as store
from stoker.engine.dashboard.charts import Bar, bar_chart
from stoker.engine.dashboard.core import (
    COUNT_CAP,
    PREFIX,
    ActionDep,
    PageError,
    PageRouter,
    UiDep,
)
from stoker.engine.dashboard.runfilter import STATUSES, Cursor, RunQuery, parse, zoom
from stoker.engine.dashboard.windows import WINDOWS, Window
from stoker.errors import StokerError

router = PageRouter(nav="runs")

PAGE_SIZE = 50
HISTOGRAM_BUCKETS = 40
TYPE_COUNT_ABOVE = 1_000
"""Bulk actions over more runs than this ask the user to type the count."""
MAX_BULK = 100_000

STATUS_COLOURS = {
    "COMPLETED": "#15803d",
    "FAILED": "#b91c1c",
    "CANCELLED": "#7e22ce",
    "RUNNING": "#1d4ed8",
    "ASSIGNED": "#0e7490",
    "QUEUED": "#6b7280",
    "PENDING": "#b45309",
    "EVICTED": "#c2410c",
}
_APPLIES = {
    "cancel": tuple(s for s in STATUSES if s not in FINAL),
    "replay": ("FAILED", "CANCELLED"),
}


async def _page(ui: UiDep, query: RunQuery) -> tuple[list[store.ListedRun], str | None]:
    cursor = query.cursor
    rows = await store.dash_list_runs(
        ui.db,
        store.DashListRuns(
            tenant_id=ui.user.tenant_id,
            **query.statement_args(),
            cursor_created_at=cursor.created_at if cursor else None,
            cursor_kind=cursor.kind if cursor else None,
            cursor_run_id=cursor.run_id if cursor else None,
            limit=PAGE_SIZE + 1,
        ),
    )
    page = rows[:PAGE_SIZE]
    next_cursor = None
    if len(rows) > PAGE_SIZE:
        last = page[-1]
        next_cursor = Cursor(last["created_at"], last["kind"], last["external_id"]).encode()
    return page, next_cursor


async def _match(ui: UiDep, query: RunQuery, cap: int) -> list[store.MatchedRun]:
    """The ids of up to ``cap + 1`` runs the filter matches."""
    required = query.required_json()
    if required is not None:
        return await store.dash_match_runs_meta(
            ui.db,
            store.DashMatchRunsMeta(
                ui.user.tenant_id, **query.statement_args(), required=required, max_runs=cap
            ),
        )
    return await store.dash_match_runs(
        ui.db, store.DashMatchRuns(ui.user.tenant_id, **query.statement_args(), max_runs=cap)
    )


async def _count(ui: UiDep, query: RunQuery, cap: int = COUNT_CAP) -> int:
    return len(await _match(ui, query, cap))


@router.get("/runs")
async def runs(ui: UiDep) -> HTMLResponse:
    """The runs list (its table re-fetches itself when runs change)."""
    query = parse(ui.request.query_params)
    page, next_cursor = await _page(ui, query)
    base = f"{PREFIX}/runs"
    return ui.render(
        "runs.html",
        active="runs",
        q=query,
        rows=page,
        count_url=query.url(f"{base}/count"),
        next_url=(query.url(base) + "&cursor=" + next_cursor) if next_cursor else None,
        first_url=query.url(base) if query.cursor else None,
        self_url=ui.request.url.path + "?" + ui.request.url.query,
        histogram_url=query.url(f"{base}/histogram"),
        chip_urls={s: query.url(base, status=query.toggled(s)) for s in STATUSES},
        window_urls={w: query.url(base, window=w) for w in WINDOWS},
        statuses=STATUSES,
        query_string=urllib.parse.urlencode(query.params()),
    )


@router.get("/runs/count")
async def count(ui: UiDep) -> HTMLResponse:
    """How many runs the filter matches (exact up to 10,000), as a fragment the list page
    loads after itself: counting can take longer than showing the newest page."""
    query = parse(ui.request.query_params)
    n = await _count(ui, query)
    return ui.render("runs_count.html", count=n)


@router.get("/runs/histogram")
async def histogram(ui: UiDep) -> HTMLResponse:
    """The runs over time of the filter, stacked by status; a bar links to its zoom."""
    query = parse(ui.request.query_params)
    w = Window(query.since, query.until, HISTOGRAM_BUCKETS)
    cells = await store.dash_runs_histogram(
        ui.db,
        store.DashRunsHistogram(
            ui.user.tenant_id, **query.statement_args(), step=w.step, buckets=w.buckets
        ),
    )
    counts: dict[int, dict[str, int]] = {}
    for c in cells:
        counts.setdefault(c["i"], {})[c["status"]] = c["n"]
    bars = [
        Bar(
            w.label(i),
            [(s, counts.get(i, {}).get(s, 0), STATUS_COLOURS[s]) for s in STATUS_COLOURS],
            zoom(query, w.since + w.step * i, w.step).url(f"{PREFIX}/runs"),
        )
        for i in range(w.buckets)
    ]
    return ui.render(
        "runs_histogram.html",
        chart=bar_chart("Runs over time by status (click a bar to zoom in)", bars),
        capped=any(c["capped"] for c in cells),
    )


def _query_of(text: str) -> RunQuery:
    return parse(QueryParams(text))


@router.post("/runs/bulk/confirm")
async def confirm(ui: ActionDep) -> HTMLResponse:
    """The confirmation of a bulk action: what it applies to, counted, with a sample."""
    form = await ui.form()
    action = (form.get("action") or [""])[0]
    if action not in _APPLIES:
        raise PageError(400, f"unknown action {action!r}: cancel or replay")
    scope = (form.get("scope") or ["selected"])[0]
    now = datetime.now(UTC)
    if scope == "all":
        query = _query_of((form.get("query") or [""])[0])
        narrowed = _narrow(query, action, now)
        count = await _count(ui, narrowed, MAX_BULK) if narrowed is not None else 0
        sample: list[store.ListedRun] = []
        if narrowed is not None:
            sample = (await _page(ui, narrowed))[0][:5]
        return ui.render(
            "runs_confirm.html",
            action=action,
            scope="all",
            count=count,
            too_many=count > MAX_BULK,
            type_count=count > TYPE_COUNT_ABOVE,
            words=query.in_words(),
            sample=sample,
            query=(form.get("query") or [""])[0],
            frozen_at=now.isoformat(),
            ids=[],
        )
    ids = list(dict.fromkeys(form.get("run", [])))
    return ui.render(
        "runs_confirm.html",
        action=action,
        scope="selected",
        count=len(ids),
        too_many=False,
        type_count=len(ids) > TYPE_COUNT_ABOVE,
        words="the runs selected on the page",
        sample=[],
        query="",
        frozen_at=now.isoformat(),
        ids=ids,
    )


def _narrow(query: RunQuery, action: str, frozen_at: datetime) -> RunQuery | None:
    """The filter limited to the statuses the action applies to and to runs created by
    ``frozen_at``; None when nothing can match."""
    applies = _APPLIES[action]
    statuses = tuple(s for s in (query.statuses or applies) if s in applies)
    if not statuses:
        return None
    return replace(
        query, statuses=statuses, until=min(query.until, frozen_at + timedelta(microseconds=1))
    )


@router.post("/runs/bulk")
async def start_bulk(ui: ActionDep) -> Response:
    """Starts the confirmed bulk action and goes to its progress page."""
    if ui.state.bulk is None:
        raise PageError(503, "bulk actions need the engine: this dashboard is served without one")
    form = await ui.form()
    action = (form.get("action") or [""])[0]
    if action not in _APPLIES:
        raise PageError(400, f"unknown action {action!r}: cancel or replay")
    if (form.get("scope") or [""])[0] == "all":
        try:
            frozen_at = datetime.fromisoformat((form.get("frozen_at") or [""])[0])
        except ValueError:
            raise PageError(400, "the confirmation is incomplete; start again") from None
        query = _query_of((form.get("query") or [""])[0])
        narrowed = _narrow(query, action, frozen_at)
        rows = await _match(ui, narrowed, MAX_BULK) if narrowed is not None else []
        ids = [str(r["external_id"]) for r in rows]
        if len(ids) > MAX_BULK:
            raise PageError(400, f"more than {MAX_BULK:,} runs match; narrow the filter")
        expected = (form.get("expected") or [""])[0]
        if len(ids) > TYPE_COUNT_ABOVE and expected.replace(",", "") != str(len(ids)):
            raise PageError(
                400, f"type the number of runs ({len(ids):,}) to confirm an action on that many"
            )
        reason = f"{action} from the dashboard by {ui.user.email}: {query.in_words()}"
    else:
        ids = list(dict.fromkeys(form.get("run", [])))
        reason = f"{action} from the dashboard by {ui.user.email}"
    if not ids:
        raise PageError(400, "no runs to act on: select some, or use all matching")
    try:
        progress = await ui.state.bulk.start_operation(
            ui.user.tenant_id, "cancel" if action == "cancel" else "replay", ids, reason=reason
        )
    except StokerError as exc:
        raise PageError(400, exc.message) from None
    ui.state.live.touch(ui.user.tenant_id)
    target = f"{PREFIX}/bulk/{progress.operation_id}"
    if ui.request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": target})
    return Response(status_code=303, headers={"location": target})


@router.get("/bulk/{operation_id}")
async def bulk_progress(ui: UiDep, operation_id: str) -> HTMLResponse:
    """A bulk operation's progress (re-fetches itself while it runs)."""
    from stoker.engine.runs.bulk import get_operation

    try:
        op = await get_operation(ui.db, ui.user.tenant_id, operation_id)
    except StokerError as exc:
        raise PageError(404, exc.message) from None
    return ui.render("bulk.html", active="runs", op=op)
