"""Workers as an operator sees and steers them: list, get, pause, resume, drain.

Request-driven (the REST API, the dashboard and the CLI call these functions with an
executor and the caller's tenant), not a loop.

Pausing: the pause is the worker row's (``worker.paused_at``), so it survives a reconnect
and every replica can read it. A paused worker keeps its stream and finishes what it runs,
but has no free slots as placement sees it (:class:`~stoker.engine.dispatcher.conns.
WorkerConn`), so the scheduler assigns it nothing new — no query and no extra work per
round. The replica holding the worker's stream applies a pause at once: directly when it
is the one that was asked (``dispatcher``), else on the ``stoker_worker_pause`` signal
every pause sends; should that signal be lost, the worker's next heartbeat (every 2 s by
default), whose statement returns the flag, applies it. Resuming signals the scheduler,
which looks for work for the worker's slots again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from stoker.db import Executor
from stoker.db.store import worker_admin as store
from stoker.engine import notify
from stoker.errors import NotFoundError

STATUSES = ("ACTIVE", "STOPPED", "DEAD")
"""A worker's statuses: connected, closed its stream cleanly, missed its heartbeats."""


class PauseTarget(Protocol):
    """What applies a pause to a connected worker (the engine's dispatcher)."""

    engine_id: str

    def set_paused(self, worker_id: int, paused: bool) -> bool: ...


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker: its slots, labels, liveness, whether it is paused, and the runs it holds."""

    worker_id: str
    name: str
    status: str
    slots: int
    durable_slots: int
    running: int
    free_slots: int
    task_names: list[str]
    labels: dict[str, Any]
    last_heartbeat_at: datetime
    heartbeat_age_s: float
    connected_at: datetime
    paused: bool
    paused_at: datetime | None
    current_runs: list[str]


def _info(row: store.AdminWorker) -> WorkerInfo:
    running = len(row["current_runs"])
    active = row["status"] == "ACTIVE" and row["paused_at"] is None
    return WorkerInfo(
        worker_id=str(row["external_id"]),
        name=row["name"],
        status=row["status"],
        slots=row["slots"],
        durable_slots=row["durable_slots"],
        running=running,
        free_slots=max(0, row["slots"] + row["durable_slots"] - running) if active else 0,
        task_names=list(row["task_names"]),
        labels=dict(row["labels"]),
        last_heartbeat_at=row["last_heartbeat_at"],
        heartbeat_age_s=round(max(0.0, row["heartbeat_age_s"]), 3),
        connected_at=row["connected_at"],
        paused=row["paused_at"] is not None,
        paused_at=row["paused_at"],
        current_runs=[str(r) for r in row["current_runs"]],
    )


def _worker_uuid(worker_id: str | uuid.UUID) -> uuid.UUID:
    if isinstance(worker_id, uuid.UUID):
        return worker_id
    try:
        return uuid.UUID(worker_id)
    except ValueError:
        raise NotFoundError(f"{worker_id!r} is not a worker id") from None


async def list_workers(
    db: Executor, tenant_id: int, statuses: list[str] | None = None
) -> list[WorkerInfo]:
    """The tenant's workers (in ``statuses``, or all), live ones first, newest first."""
    rows = await store.admin_list_workers(
        db, store.AdminListWorkers(tenant_id, list(statuses) if statuses else None, None)
    )
    return [_info(r) for r in rows]


async def get_worker(db: Executor, tenant_id: int, worker_id: str | uuid.UUID) -> WorkerInfo:
    """One of the tenant's workers; NotFoundError for an unknown (or another tenant's) id."""
    wid = _worker_uuid(worker_id)
    rows = await store.admin_list_workers(db, store.AdminListWorkers(tenant_id, None, wid))
    if not rows:
        raise NotFoundError(f"no worker with id {wid}")
    return _info(rows[0])


async def _set_paused(
    db: Executor,
    tenant_id: int,
    worker_id: str | uuid.UUID,
    paused: bool,
    dispatcher: PauseTarget | None,
) -> WorkerInfo:
    wid = _worker_uuid(worker_id)
    row = await store.set_worker_paused(db, store.SetWorkerPaused(tenant_id, wid, paused))
    if row is None:
        raise NotFoundError(f"no worker with id {wid}")
    here = dispatcher is not None and dispatcher.set_paused(int(row["id"]), paused)
    if not here:  # its stream is held by another replica (or none): tell them all
        sender = dispatcher.engine_id if dispatcher is not None else "api"
        await notify.send_worker_pause(db, int(row["id"]), paused, sender)
    return await get_worker(db, tenant_id, wid)


async def pause_worker(
    db: Executor,
    tenant_id: int,
    worker_id: str | uuid.UUID,
    *,
    dispatcher: PauseTarget | None = None,
) -> WorkerInfo:
    """Pauses a worker: it is assigned no new runs and keeps running what it has.

    Pausing a paused worker changes nothing (its ``paused_at`` stays). NotFoundError for
    an unknown worker.
    """
    return await _set_paused(db, tenant_id, worker_id, True, dispatcher)


async def drain_worker(
    db: Executor,
    tenant_id: int,
    worker_id: str | uuid.UUID,
    *,
    dispatcher: PauseTarget | None = None,
) -> WorkerInfo:
    """Drains a live worker: it is paused at once (assigned nothing new) and its next
    heartbeat's answer asks it to stop; the worker then stops as on SIGTERM — it finishes
    what it runs, reports, and closes its stream (STOPPED). Unlike a pause, which keeps
    the worker connected until it is resumed, a drain ends the worker process.

    NotFoundError for an unknown worker or one that is not live.
    """
    wid = _worker_uuid(worker_id)
    row = await store.set_worker_drain(db, store.SetWorkerDrain(tenant_id, wid))
    if row is None:
        raise NotFoundError(f"no live worker with id {wid}")
    here = dispatcher is not None and dispatcher.set_paused(int(row["id"]), True)
    if not here:
        sender = dispatcher.engine_id if dispatcher is not None else "api"
        await notify.send_worker_pause(db, int(row["id"]), True, sender)
    return await get_worker(db, tenant_id, wid)


async def resume_worker(
    db: Executor,
    tenant_id: int,
    worker_id: str | uuid.UUID,
    *,
    dispatcher: PauseTarget | None = None,
) -> WorkerInfo:
    """Resumes a paused worker: it is assigned runs again. NotFoundError for an unknown
    worker; resuming a worker that is not paused changes nothing."""
    return await _set_paused(db, tenant_id, worker_id, False, dispatcher)


__all__ = [
    "STATUSES",
    "PauseTarget",
    "WorkerInfo",
    "drain_worker",
    "get_worker",
    "list_workers",
    "pause_worker",
    "resume_worker",
]
