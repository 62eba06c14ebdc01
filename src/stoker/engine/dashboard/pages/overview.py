"""``/ui/``: how the tenant's work is going — throughput, failures, queue wait and
duration percentiles, queue depth and slot use over a window, the tasks failing most, and
runs that are stuck, each with the reason in words."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.responses import HTMLResponse

from stoker.db.store import dashboard_runs as store
from stoker.engine.dashboard.charts import Series, line_chart
from stoker.engine.dashboard.core import PageRouter, UiDep
from stoker.engine.dashboard.windows import WINDOWS, Window, parse_window

router = PageRouter(nav="overview")

BUCKETS = 30


@router.get("/")
async def overview(ui: UiDep, window: str = "1h") -> HTMLResponse:
    """The overview page (its body re-fetches itself when runs change)."""
    span, problem = parse_window(window)
    until = datetime.now(UTC)
    w = Window(until - span, until, BUCKETS)
    tenant = ui.user.tenant_id
    rows = await store.dash_overview_series(
        ui.db, store.DashOverviewSeries(tenant, w.since, w.until, w.step, w.buckets)
    )
    labels = [w.label(r["i"]) for r in rows]
    finished = sum(r["completed"] + r["failed"] for r in rows)
    failed = sum(r["failed"] for r in rows)
    capacity = await store.dash_slot_capacity(ui.db, store.DashTenant(tenant))
    slots = capacity["slots"] if capacity else 0
    charts = {
        "throughput": line_chart(
            "Runs finished per bucket",
            labels,
            [
                Series("completed", [r["completed"] for r in rows], "#15803d"),
                Series("failed", [r["failed"] for r in rows], "#b91c1c"),
            ],
        ),
        "failure": line_chart(
            "Failure rate",
            labels,
            [
                Series(
                    "failed %",
                    [
                        100.0 * r["failed"] / (r["completed"] + r["failed"])
                        if r["completed"] + r["failed"]
                        else None
                        for r in rows
                    ],
                    "#b91c1c",
                )
            ],
            unit="%",
        ),
        "wait": line_chart(
            "Queue wait (seconds)",
            labels,
            [
                Series("p50", [r["wait_p50"] for r in rows], "#1d4ed8"),
                Series("p95", [r["wait_p95"] for r in rows], "#7c3aed"),
            ],
            unit="s",
        ),
        "duration": line_chart(
            "Run duration (seconds)",
            labels,
            [
                Series("p50", [r["duration_p50"] for r in rows], "#0f766e"),
                Series("p95", [r["duration_p95"] for r in rows], "#b45309"),
            ],
            unit="s",
        ),
        "depth": line_chart(
            "Queue depth", labels, [Series("queued", [r["queued"] for r in rows], "#4b5563")]
        ),
        "slots": line_chart(
            f"Slots in use (of {slots} on live workers)",
            labels,
            [
                Series("running", [r["running"] for r in rows], "#1d4ed8"),
                Series("slots", [slots] * len(rows), "#9ca3af"),
            ],
        ),
    }
    top = await store.dash_top_failing(ui.db, store.DashTopFailing(tenant, w.since, w.until))
    stuck = await stuck_runs(ui)
    return ui.render(
        "overview.html",
        active="overview",
        window=window if window in WINDOWS else "1h",
        windows=list(WINDOWS),
        problem=problem,
        charts=charts,
        finished=finished,
        failed=failed,
        failure_rate=(100.0 * failed / finished) if finished else None,
        workers=capacity["workers"] if capacity else 0,
        slots=slots,
        top=top,
        stuck=stuck,
    )


async def stuck_runs(ui: UiDep) -> list[dict[str, object]]:
    """Runs that will not move by themselves soon, each with why in words: held by a worker
    that stopped heartbeating, or queued for a task no live worker serves."""
    tenant = ui.user.tenant_id
    found: list[dict[str, object]] = []
    for r in await store.dash_stuck_on_workers(ui.db, store.DashTenant(tenant)):
        found.append(
            {
                "run_id": r["external_id"],
                "task_name": r["task_name"],
                "status": r["status"],
                "reason": f"{r['status'].lower()} on worker {r['worker_name']}, which is "
                f"{r['worker_status'].lower()} (last heartbeat "
                f"{r['last_heartbeat_at']:%Y-%m-%d %H:%M:%S} UTC); the engine requeues it "
                "when the worker is declared dead",
            }
        )
    queued = await store.dash_queued_by_task(ui.db, store.DashTenant(tenant))
    unserved = set(await ui.state.served.unserved(tenant, [q["task_name"] for q in queued]))
    for q in queued:
        if q["task_name"] in unserved:
            found.append(
                {
                    "run_id": None,
                    "task_name": q["task_name"],
                    "status": "QUEUED",
                    "reason": f"{q['queued']} run(s) queued since "
                    f"{q['oldest']:%Y-%m-%d %H:%M:%S} UTC, and no connected worker serves "
                    f"task {q['task_name']!r}: start a worker that registers it",
                }
            )
    return found
