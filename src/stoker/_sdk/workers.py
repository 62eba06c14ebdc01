"""``app.workers``: the tenant's workers — list, get, pause and resume.

A paused worker keeps running what it has and is assigned no new runs until it is
resumed; the pause survives the worker's reconnects (README "Acting on runs and
workers").
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stoker._proto import admin_pb2 as apb

if TYPE_CHECKING:
    from stoker._sdk.calls import Connection


def at(ms: int) -> datetime | None:
    """An epoch-milliseconds time of the wire as an aware datetime (0: None)."""
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker: ``status`` is ACTIVE (connected), STOPPED or DEAD; ``current_runs`` are
    the ids of the runs it holds now; ``heartbeat_age_s`` how long ago it was heard from."""

    worker_id: str
    name: str
    status: str
    slots: int
    durable_slots: int
    running: int
    free_slots: int
    task_names: list[str]
    labels: dict[str, Any]
    last_heartbeat_at: datetime | None
    heartbeat_age_s: float
    connected_at: datetime | None
    paused: bool
    paused_at: datetime | None
    current_runs: list[str]


def _worker(w: apb.WorkerInfo) -> WorkerInfo:
    return WorkerInfo(
        worker_id=w.worker_id,
        name=w.name,
        status=w.status,
        slots=w.slots,
        durable_slots=w.durable_slots,
        running=w.running,
        free_slots=w.free_slots,
        task_names=list(w.task_names),
        labels=json.loads(w.labels) if w.labels else {},
        last_heartbeat_at=at(w.last_heartbeat_at_ms),
        heartbeat_age_s=w.heartbeat_age_s,
        connected_at=at(w.connected_at_ms),
        paused=w.paused,
        paused_at=at(w.paused_at_ms),
        current_runs=list(w.current_runs),
    )


def _statuses(status: str | list[str] | None) -> list[str]:
    if status is None:
        return []
    return [status.upper()] if isinstance(status, str) else [s.upper() for s in status]


class Workers:
    """The tenant's workers: ``app.workers.list()``, ``get(worker_id)``,
    ``pause(worker_id)``, ``resume(worker_id)``. An unknown worker id (or another
    tenant's) raises NotFoundError."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def list(self, status: str | builtins.list[str] | None = None) -> builtins.list[WorkerInfo]:
        """The workers (in ``status``: ACTIVE, STOPPED, DEAD; or all), live ones first."""
        req = apb.ListWorkersRequest(statuses=_statuses(status))
        return [_worker(w) for w in self._connection.calls.list_workers(req).items]

    async def aio_list(
        self, status: str | builtins.list[str] | None = None
    ) -> builtins.list[WorkerInfo]:
        req = apb.ListWorkersRequest(statuses=_statuses(status))
        return [_worker(w) for w in (await self._connection.calls.aio_list_workers(req)).items]

    def get(self, worker_id: str) -> WorkerInfo:
        """One worker, with the runs it holds now."""
        return _worker(self._connection.calls.get_worker(apb.WorkerRequest(worker_id=worker_id)))

    async def aio_get(self, worker_id: str) -> WorkerInfo:
        req = apb.WorkerRequest(worker_id=worker_id)
        return _worker(await self._connection.calls.aio_get_worker(req))

    def pause(self, worker_id: str) -> WorkerInfo:
        """Pauses a worker: no new runs; what it runs finishes."""
        req = apb.WorkerRequest(worker_id=worker_id)
        return _worker(self._connection.calls.pause_worker(req))

    async def aio_pause(self, worker_id: str) -> WorkerInfo:
        req = apb.WorkerRequest(worker_id=worker_id)
        return _worker(await self._connection.calls.aio_pause_worker(req))

    def resume(self, worker_id: str) -> WorkerInfo:
        """Resumes a paused worker: it is assigned runs again."""
        req = apb.WorkerRequest(worker_id=worker_id)
        return _worker(self._connection.calls.resume_worker(req))

    async def aio_resume(self, worker_id: str) -> WorkerInfo:
        req = apb.WorkerRequest(worker_id=worker_id)
        return _worker(await self._connection.calls.aio_resume_worker(req))


__all__ = ["WorkerInfo", "Workers"]
