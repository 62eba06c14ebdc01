"""What an SDK client calls to read and steer runs, workers and rate limits: the
``Admin`` service. Each call is one of the request-driven functions the REST API uses
(:mod:`stoker.engine.runs.listing`, :mod:`stoker.engine.workers`,
:mod:`stoker.engine.ratelimits`, :mod:`stoker.engine.runs.bulk`), scoped to the caller's
tenant."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from stoker._proto import admin_pb2 as apb
from stoker.db import Executor
from stoker.db.store import read as read_store
from stoker.engine import ratelimits, workers
from stoker.engine.auth import Principal, TokenAuth
from stoker.engine.rpc.client_service import run_filter
from stoker.engine.rpc.handlers import Servicer, rpc
from stoker.engine.runs import listing
from stoker.engine.runs.bulk import BulkOps, BulkProgress, get_operation
from stoker.errors import InvalidRequestError


def _ms(at: datetime | None) -> int:
    return int(at.timestamp() * 1000) if at is not None else 0


def _at(ms: int, what: str) -> datetime | None:
    """An epoch-milliseconds time of a request (0: none); InvalidRequestError for one
    outside the years datetime holds."""
    if not ms:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        raise InvalidRequestError(
            f"{what} {ms} is not a time between years 1 and 9999 (epoch ms)"
        ) from None


def _json(value: Any) -> bytes:
    return json.dumps(value).encode() if value is not None else b""


def _run(row: read_store.RunSummary, detail: bool = False) -> apb.RunInfo:
    info = apb.RunInfo(
        run_id=str(row["external_id"]),
        task_name=row["task_name"],
        status=row["status"],
        error=_json(row["error"]),
        additional_metadata=_json(row["additional_metadata"] or {}),
        attempt=row["attempt"],
        retry_count=row["retry_count"],
        created_at_ms=_ms(row["created_at"]),
        started_at_ms=_ms(row["started_at"]),
        finished_at_ms=_ms(row["finished_at"]),
        worker_id=str(row["worker_external_id"] or ""),
        priority=row["priority"],
    )
    if detail:
        full: Any = row
        info.input = _json(full["input"])
        info.output = _json(full["output"])
    return info


def _worker(w: workers.WorkerInfo) -> apb.WorkerInfo:
    return apb.WorkerInfo(
        worker_id=w.worker_id,
        name=w.name,
        status=w.status,
        slots=w.slots,
        durable_slots=w.durable_slots,
        running=w.running,
        free_slots=w.free_slots,
        task_names=w.task_names,
        labels=_json(w.labels),
        last_heartbeat_at_ms=_ms(w.last_heartbeat_at),
        heartbeat_age_s=w.heartbeat_age_s,
        connected_at_ms=_ms(w.connected_at),
        paused=w.paused,
        paused_at_ms=_ms(w.paused_at),
        current_runs=w.current_runs,
    )


def _bulk(p: BulkProgress) -> apb.BulkOperationInfo:
    return apb.BulkOperationInfo(
        operation_id=p.operation_id,
        action=p.action,
        state=p.state,
        total=p.total,
        done=p.done,
        failed=p.failed,
        reason=p.reason,
        error=p.error or "",
        created_at_ms=_ms(p.created_at),
        finished_at_ms=_ms(p.finished_at),
    )


class AdminService(Servicer):
    """Answers the ``Admin`` service from the engine's database, dispatcher and bulk
    operations."""

    def __init__(
        self, auth: TokenAuth, db: Executor, dispatcher: workers.PauseTarget, bulk: BulkOps
    ) -> None:
        super().__init__(auth)
        self._db = db
        self._dispatcher = dispatcher
        self._bulk_ops = bulk

    @rpc
    async def ListRuns(
        self, request: apb.ListRunsRequest, caller: Principal
    ) -> apb.ListRunsResponse:
        page = await listing.list_runs(
            self._db,
            caller.tenant_id,
            statuses=list(request.statuses),
            task_name=request.task_name or None,
            since=_at(request.since_ms, "since_ms"),
            until=_at(request.until_ms, "until_ms"),
            cursor=request.cursor or None,
            limit=request.limit or 50,
        )
        return apb.ListRunsResponse(
            items=[_run(r) for r in page.items], next_cursor=page.next_cursor or ""
        )

    @rpc
    async def GetRun(self, request: apb.GetRunRequest, caller: Principal) -> apb.RunInfo:
        return _run(await listing.get_run(self._db, caller.tenant_id, request.run_id), True)

    @rpc
    async def ListWorkers(
        self, request: apb.ListWorkersRequest, caller: Principal
    ) -> apb.ListWorkersResponse:
        statuses = [s.upper() for s in request.statuses]
        unknown = sorted(set(statuses) - set(workers.STATUSES))
        if unknown:
            raise InvalidRequestError(
                f"unknown worker status {', '.join(unknown)}: use {', '.join(workers.STATUSES)}"
            )
        rows = await workers.list_workers(self._db, caller.tenant_id, statuses or None)
        return apb.ListWorkersResponse(items=[_worker(w) for w in rows])

    @rpc
    async def GetWorker(self, request: apb.WorkerRequest, caller: Principal) -> apb.WorkerInfo:
        return _worker(await workers.get_worker(self._db, caller.tenant_id, request.worker_id))

    @rpc
    async def PauseWorker(self, request: apb.WorkerRequest, caller: Principal) -> apb.WorkerInfo:
        w = await workers.pause_worker(
            self._db, caller.tenant_id, request.worker_id, dispatcher=self._dispatcher
        )
        return _worker(w)

    @rpc
    async def ResumeWorker(self, request: apb.WorkerRequest, caller: Principal) -> apb.WorkerInfo:
        w = await workers.resume_worker(
            self._db, caller.tenant_id, request.worker_id, dispatcher=self._dispatcher
        )
        return _worker(w)

    @rpc
    async def ListRateLimits(
        self, request: apb.ListRateLimitsRequest, caller: Principal
    ) -> apb.ListRateLimitsResponse:
        rows = await ratelimits.list_rate_limits(self._db, caller.tenant_id)
        return apb.ListRateLimitsResponse(
            items=[
                apb.RateLimitInfo(
                    key=r.key,
                    limit=r.limit,
                    duration_s=r.duration_s,
                    dynamic=r.dynamic,
                    used=r.used,
                    updated_at_ms=_ms(r.updated_at),
                )
                for r in rows
            ]
        )

    @rpc
    async def DeleteRateLimit(
        self, request: apb.DeleteRateLimitRequest, caller: Principal
    ) -> apb.DeleteRateLimitResponse:
        gone = await ratelimits.delete_rate_limit(self._db, caller.tenant_id, request.key)
        return apb.DeleteRateLimitResponse(waiting_runs=gone.waiting_runs)

    @rpc
    async def StartBulkOperation(
        self, request: apb.StartBulkOperationRequest, caller: Principal
    ) -> apb.BulkOperationInfo:
        if request.action not in ("cancel", "replay"):
            raise InvalidRequestError(
                f"unknown bulk action {request.action!r}: use cancel or replay"
            )
        # The filter is the Workflows service's (the same message), checked the same way.
        flt = None if request.run_ids else run_filter(request.filter, True)
        progress = await self._bulk_ops.start_operation(
            caller.tenant_id,
            "cancel" if request.action == "cancel" else "replay",
            list(request.run_ids),
            flt,
            reason=request.reason,
            confirm=request.confirm,
        )
        return _bulk(progress)

    @rpc
    async def GetBulkOperation(
        self, request: apb.GetBulkOperationRequest, caller: Principal
    ) -> apb.BulkOperationInfo:
        return _bulk(await get_operation(self._db, caller.tenant_id, request.operation_id))
