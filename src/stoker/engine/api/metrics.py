"""Metrics over HTTP: ``GET /metrics`` for the operator's Prometheus, ``GET /api/v1/metrics``
for one tenant, and ``GET /api/v1/task-stats`` for autoscalers.

``/metrics`` is unauthenticated, like most scrape targets: it carries counts by tenant id
and task name, never a run's data. It joins the counters and histograms of this process
(:mod:`stoker.engine.metrics`) with the state read from Postgres
(:mod:`stoker.engine.metrics.gauges`), which every replica reports alike.

``/api/v1/metrics`` takes a tenant's token and answers the same text restricted to that
tenant's series. ``/api/v1/task-stats`` (and ``/api/v1/task-stats/{task}``, whose numbers
sit at the top level of the JSON, for KEDA's ``metrics-api`` scaler) gives queued, running
and oldest age per task; see docs/metrics.md for a ScaledObject.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import BaseModel, Field

from stoker.engine import metrics as task_metrics
from stoker.engine.api.deps import ApiState, Auth, StateDep
from stoker.engine.api.errors import ERROR_RESPONSES
from stoker.engine.metrics.gauges import Gauges, Snapshot, TaskStat

router = APIRouter()
api = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["metrics"])


def _gauges(state: ApiState) -> Gauges:
    if state.gauges is None:  # create_app always sets them
        raise RuntimeError("the API state has no gauges")
    return state.gauges


@router.get("/metrics", include_in_schema=False)
async def metrics(state: StateDep) -> Response:
    """Every metric of this engine process, and the queue's state from Postgres."""
    # Formatting is off the event loop (with 10,000 task names it is tens of milliseconds)
    # and overlaps the read of the queue's state from Postgres.
    state_text, events = await asyncio.gather(
        _gauges(state).render(), asyncio.to_thread(task_metrics.render)
    )
    text = generate_latest(REGISTRY) + events.encode() + state_text.encode()
    return Response(text, media_type=CONTENT_TYPE_LATEST)


@api.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def tenant_metrics(who: Auth, state: StateDep) -> Response:
    """The caller's tenant's metrics in the Prometheus text format: its run counters and
    histograms (of the replica answering) and its queue depth, running attempts and workers
    (from Postgres). Scrape it with the tenant's token as a bearer token."""
    state_text, events = await asyncio.gather(
        _gauges(state).render(who.tenant_id),
        asyncio.to_thread(task_metrics.render, who.tenant_id),
    )
    text = (events + state_text).encode()
    return Response(text, media_type=CONTENT_TYPE_LATEST)


class TaskStats(BaseModel):
    """One task's load, for an autoscaler."""

    task_name: str
    queued: int = Field(description="Attempts queued and ready to run now")
    delayed: int = Field(description="Attempts queued but not due yet (backoff, run_at)")
    running: int = Field(description="Attempts held by workers")
    waiting_for_concurrency: int = Field(description="Runs waiting for a concurrency key")
    oldest_queued_age_s: float = Field(description="How long the oldest ready attempt waited")


class TaskStatsList(BaseModel):
    """The tenant's tasks that have work queued or running, and its workers' slots."""

    tasks: list[TaskStats]
    queued: int = Field(description="Ready attempts of all tasks")
    running: int = Field(description="Running attempts of all tasks")
    workers: int = Field(description="Connected workers")
    slots: int = Field(description="Slots of the connected workers")
    free_slots: int = Field(description="Of those, slots not holding an attempt")


def _stats(t: TaskStat) -> TaskStats:
    return TaskStats(
        task_name=t.task_name,
        queued=t.ready,
        delayed=t.delayed,
        running=t.running,
        waiting_for_concurrency=t.gated,
        oldest_queued_age_s=round(t.oldest_s, 3),
    )


def _busy(snap: Snapshot) -> list[TaskStat]:
    return sorted(
        (t for t in snap.tasks if t.ready or t.delayed or t.running or t.gated),
        key=lambda t: t.task_name,
    )


@api.get("/task-stats", response_model=TaskStatsList)
async def task_stats(who: Auth, state: StateDep) -> TaskStatsList:
    """Queued, running and oldest age per task of the caller's tenant (read from Postgres,
    at most a second old), with its workers' slots: what an autoscaler scales on."""
    snap = await _gauges(state).snapshot(who.tenant_id)
    busy = _busy(snap)
    w = next(iter(snap.workers), None)
    return TaskStatsList(
        tasks=[_stats(t) for t in busy],
        queued=sum(t.ready for t in busy),
        running=sum(t.running for t in busy),
        workers=w.workers if w else 0,
        slots=w.slots if w else 0,
        free_slots=w.free if w else 0,
    )


@api.get("/task-stats/{task_name}", response_model=TaskStats)
async def one_task_stats(task_name: str, who: Auth, state: StateDep) -> TaskStats:
    """One task's numbers at the top level (zeros when nothing is queued or running), for
    scalers that read one value from a JSON path (KEDA ``metrics-api``:
    ``valueLocation: queued``)."""
    snap = await _gauges(state).snapshot(who.tenant_id)
    for t in snap.tasks:
        if t.task_name == task_name:
            return _stats(t)
    return _stats(TaskStat(who.tenant_id, task_name))
