"""Bulk cancel and replay as operations whose progress anyone can read.

A bulk operation (``bulk_operation`` table) is asked for with run ids or a
:class:`~stoker.engine.runs.ops.RunFilter` and answers at once with its id; the runs are
processed in chunks of :data:`CHUNK` by :class:`~stoker.engine.runs.ops.RunOps` (the same
cancel and replay the gRPC calls use), and the operation's ``total``, ``done``, ``failed``
and ``state`` can be read from any replica (:func:`get_operation`).

* Resolution: a filter is resolved when the operation is created — the ids of the runs it
  matches then are stored with it, so the operation's total is fixed and a run created
  later is not swept up. A filter is narrowed to the runs the action applies to (cancel:
  unfinished runs; replay: failed and cancelled ones), so the count is what will change.
* The cap: a filter matching more runs than ``cap`` (``STOKER_BULK_CAP``) is refused with
  :class:`~stoker.errors.ConflictError` naming the count and the ``confirm`` parameter,
  unless the caller confirmed. Ids are never capped (the caller listed them), but one
  operation takes at most :data:`MAX_RUNS` runs either way.
* Outcomes: ``done`` counts runs the action applied to or that needed nothing (a cancel of
  a run that finished meanwhile, a replay of one that completed); ``failed`` counts runs it
  could not apply to (an unknown id, a replay of a run that is still running).
* Ownership and crashes: the replica that created an operation drives it and touches its
  heartbeat after each chunk; advancing checks the position a chunk started at, so a
  chunk is counted once. A RUNNING operation whose heartbeat is older than ``stale_s``
  (its replica died, or stopped) is claimed by whichever replica's loop finds it first and
  continued from its position; a chunk that was cut off is processed again, which is safe
  because cancel and replay of a run that is already cancelled or replayed change nothing.
  A chunk that fails (the database went away) is recorded as the operation's ``error`` and
  retried by the next claim; after :data:`MAX_ERRORS` failures the operation is FAILED.

The functions take the executor and the caller's tenant first, so the REST API, the CLI
and the dashboard share them; only starting an operation needs the engine (its
:class:`BulkOps`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from stoker._core.status import FINAL, RunStatus
from stoker.db import Executor
from stoker.db.store import bulk as store
from stoker.db.store import runs as run_store
from stoker.engine.runs.ops import Outcome, RunFilter, RunOps
from stoker.engine.service import LoopService
from stoker.errors import ConflictError, InvalidRequestError, NotFoundError

log = logging.getLogger("stoker.engine.bulk")

Action = Literal["cancel", "replay"]
ACTIONS: tuple[Action, ...] = ("cancel", "replay")

CHUNK = 200
"""Runs processed per transaction of a bulk operation."""
MAX_RUNS = 100_000
"""The most runs one operation takes (the cap can be raised up to this)."""
MAX_ERRORS = 3
"""Failed chunks after which an operation is given up as FAILED."""
DEFAULT_CAP = 1_000

# What each action applies to: the statuses a filter is narrowed to.
_APPLIES: dict[Action, tuple[str, ...]] = {
    "cancel": tuple(s.value for s in RunStatus if s.value not in FINAL),
    "replay": (RunStatus.FAILED.value, RunStatus.CANCELLED.value),
}
# Outcomes that count as done (the action applied, or nothing was left to do).
_DONE = frozenset({"cancelled", "replayed", "already_finished", "completed"})


@dataclass(frozen=True, slots=True)
class BulkProgress:
    """Where a bulk operation stands: ``state`` is RUNNING, COMPLETED or FAILED;
    ``done + failed`` of ``total`` runs were processed."""

    operation_id: str
    action: str
    state: str
    total: int
    done: int
    failed: int
    reason: str
    filter: dict[str, Any] | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


def _progress(row: store.BulkOperationRow) -> BulkProgress:
    return BulkProgress(
        operation_id=str(row["external_id"]),
        action=row["action"],
        state=row["state"],
        total=row["total"],
        done=row["done"],
        failed=row["failed"],
        reason=row["reason"],
        filter=row["filter"],
        error=row["error"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


async def get_operation(
    db: Executor, tenant_id: int, operation_id: str | uuid.UUID
) -> BulkProgress:
    """A bulk operation of the tenant; NotFoundError for an unknown (or another tenant's)
    id."""
    try:
        oid = operation_id if isinstance(operation_id, uuid.UUID) else uuid.UUID(operation_id)
    except ValueError:
        raise NotFoundError(f"{operation_id!r} is not a bulk operation id") from None
    row = await store.get_bulk_operation(db, store.GetBulkOperation(tenant_id, oid))
    if row is None:
        raise NotFoundError(f"no bulk operation with id {oid}")
    return _progress(row)


async def list_operations(db: Executor, tenant_id: int, limit: int = 50) -> list[BulkProgress]:
    """The tenant's bulk operations, newest first."""
    rows = await store.list_bulk_operations(db, store.ListBulkOperations(tenant_id, limit))
    return [_progress(r) for r in rows]


def narrow(action: Action, flt: RunFilter) -> RunFilter:
    """``flt`` limited to the statuses ``action`` applies to; InvalidRequestError for an
    unknown status or a status filter that leaves none."""
    asked = [s.upper() for s in flt.statuses or []]
    unknown = sorted(set(asked) - {s.value for s in RunStatus})
    if unknown:
        raise InvalidRequestError(
            f"unknown run status {', '.join(unknown)}: use " + ", ".join(s.value for s in RunStatus)
        )
    applies = _APPLIES[action]
    statuses = [s for s in applies if not asked or s in asked]
    if not statuses:
        raise InvalidRequestError(
            f"{action} applies to runs that are {', '.join(applies)}; the status filter "
            f"{', '.join(asked)} matches none of them"
        )
    return RunFilter(flt.names, statuses, flt.since, flt.until, flt.additional_metadata)


async def matching_runs(db: Executor, tenant_id: int, flt: RunFilter, limit: int) -> list[str]:
    """The ids of up to ``limit`` runs ``flt`` matches (workflow runs and task runs)."""
    rows = await run_store.filter_runs(
        db,
        run_store.FilterRuns(
            tenant_id,
            flt.names or None,
            flt.statuses or None,
            flt.since,
            flt.until,
            json.dumps(flt.additional_metadata) if flt.additional_metadata else None,
            limit,
        ),
    )
    # Two halves each limited (workflow runs, task runs): keep the newest `limit`.
    rows = sorted(rows, key=lambda r: r["created_at"], reverse=True)[:limit]
    return [str(r["external_id"]) for r in rows]


def _filter_doc(flt: RunFilter) -> dict[str, Any]:
    doc = asdict(flt)
    for key in ("since", "until"):
        if doc[key] is not None:
            doc[key] = doc[key].isoformat()
    return {k: v for k, v in doc.items() if v}


class BulkOps(LoopService):
    """Starts bulk operations and drives them; its loop takes over stale ones.

    One per engine replica; ``engine_id`` names it as an operation's owner.
    """

    name = "bulk"

    def __init__(
        self,
        db: Executor,
        ops: RunOps,
        *,
        engine_id: str,
        cap: int = DEFAULT_CAP,
        interval_s: float = 5.0,
        stale_s: float = 30.0,
    ) -> None:
        super().__init__()
        if not 1 <= cap <= MAX_RUNS:
            raise InvalidRequestError(f"the bulk cap must be 1..{MAX_RUNS:,}, not {cap}")
        self._db = db
        self._ops = ops
        self.engine_id = engine_id
        self.cap = cap
        self._interval = interval_s
        self._stale_ms = int(stale_s * 1000)
        self._drivers: set[asyncio.Task[None]] = set()

    async def start_operation(
        self,
        tenant_id: int,
        action: Action,
        run_ids: Sequence[str] | None = None,
        flt: RunFilter | None = None,
        *,
        reason: str = "",
        confirm: bool = False,
    ) -> BulkProgress:
        """Creates a bulk ``action`` over ``run_ids`` or the runs ``flt`` matches, starts
        it, and returns its progress (RUNNING, or COMPLETED at once when nothing matched).

        InvalidRequestError without ids and filter, for both, or for more than
        :data:`MAX_RUNS` runs; ConflictError, naming the count and ``confirm``, for a
        filter matching more than the cap without ``confirm``.
        """
        if action not in ACTIONS:
            raise InvalidRequestError(f"unknown bulk action {action!r}: use cancel or replay")
        if run_ids and flt is not None:
            raise InvalidRequestError("give run ids or a filter, not both")
        if not run_ids and flt is None:
            raise InvalidRequestError(f"bulk {action} needs run ids or a filter")
        doc: dict[str, Any] | None = None
        if run_ids:
            ids = list(dict.fromkeys(str(r) for r in run_ids))
            if len(ids) > MAX_RUNS:
                raise InvalidRequestError(
                    f"{len(ids):,} run ids: one bulk operation takes at most {MAX_RUNS:,}"
                )
        else:
            assert flt is not None
            narrowed = narrow(action, flt)
            ids = await matching_runs(self._db, tenant_id, narrowed, MAX_RUNS + 1)
            if len(ids) > MAX_RUNS:
                raise InvalidRequestError(
                    f"the filter matches more than {MAX_RUNS:,} runs, the most one bulk "
                    "operation takes: narrow it (a time window, a status, a name)"
                )
            if len(ids) > self.cap and not confirm:
                raise ConflictError(
                    f"the filter matches {len(ids):,} runs, more than the bulk cap of "
                    f"{self.cap:,}: repeat the request with confirm=true to {action} them all"
                )
            doc = _filter_doc(narrowed)
        oid = uuid.uuid4()
        row = await store.create_bulk_operation(
            self._db,
            store.CreateBulkOperation(
                tenant_id,
                oid,
                action,
                reason,
                json.dumps(doc) if doc is not None else None,
                ids,
                self.engine_id,
            ),
        )
        assert row is not None
        if ids:
            self._drive(int(row["id"]), tenant_id, action, reason)
        else:
            await self._advance(int(row["id"]), 0, 0, [])
        return await get_operation(self._db, tenant_id, oid)

    def _drive(self, op_id: int, tenant_id: int, action: Action, reason: str) -> None:
        task = asyncio.create_task(
            self._run_operation(op_id, tenant_id, action, reason), name=f"stoker-bulk-{op_id}"
        )
        self._drivers.add(task)
        task.add_done_callback(self._drivers.discard)

    async def _run_operation(self, op_id: int, tenant_id: int, action: Action, reason: str) -> None:
        """Processes the operation's remaining chunks while this replica owns it."""
        while not self.stopping.is_set():
            chunk = await store.next_bulk_chunk(
                self._db, store.NextBulkChunk(op_id, self.engine_id, CHUNK)
            )
            if chunk is None:
                return  # finished, failed, or another replica took it over
            ids = list(chunk["run_ids"] or [])
            try:
                if action == "cancel":
                    outcomes = await self._ops.cancel(tenant_id, ids, None, reason)
                else:
                    outcomes = await self._ops.replay(tenant_id, ids, None)
            except Exception as exc:
                log.exception("bulk %s %d: a chunk failed", action, op_id)
                await store.note_bulk_error(
                    self._db,
                    store.NoteBulkError(op_id, self.engine_id, f"{exc}"[:1000], MAX_ERRORS),
                )
                return  # resumed by the next claim once its heartbeat is stale
            state = await self._advance(op_id, int(chunk["position"]), len(ids), outcomes)
            if state != "RUNNING":
                return

    async def _advance(
        self, op_id: int, position: int, size: int, outcomes: Sequence[Outcome]
    ) -> str | None:
        done = sum(1 for o in outcomes if o.outcome in _DONE)
        row = await store.advance_bulk_operation(
            self._db,
            store.AdvanceBulkOperation(
                op_id, self.engine_id, position, position + size, done, len(outcomes) - done
            ),
        )
        return row["state"] if row is not None else None

    async def resume_stale(self) -> int:
        """Takes over the RUNNING operations whose owner went quiet and drives them;
        how many it took."""
        claimed = await store.claim_stale_bulk_operations(
            self._db, store.ClaimStaleBulkOperations(self.engine_id, self._stale_ms, 10)
        )
        for row in claimed:
            action: Action = "cancel" if row["action"] == "cancel" else "replay"
            log.info("resuming bulk %s %s", action, row["external_id"])
            self._drive(int(row["id"]), int(row["tenant_id"]), action, row["reason"])
        return len(claimed)

    async def run(self) -> None:
        while not self.stopping.is_set():
            await self.resume_stale()
            if await self.sleep(self._interval):
                break

    async def stop(self) -> None:
        await super().stop()
        # What is cut off here stays RUNNING and is resumed by a replica once stale.
        drivers = list(self._drivers)
        for task in drivers:
            task.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)


__all__ = [
    "ACTIONS",
    "CHUNK",
    "DEFAULT_CAP",
    "MAX_RUNS",
    "Action",
    "BulkOps",
    "BulkProgress",
    "get_operation",
    "list_operations",
    "matching_runs",
    "narrow",
]
