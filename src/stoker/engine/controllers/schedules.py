"""The schedules controller: starts scheduled runs when they are due (leader only).

Each round the leader locks the due ``scheduled_run`` rows (``FOR UPDATE SKIP LOCKED``, so a
second leader overlapping briefly skips them), creates their runs through ingest — one call
per tenant and kind for the whole round, so 10,000 runs due in the same second are written
in a few flushes — and marks the rows FIRED with their run ids, before the transaction that
holds the lock commits.

**Exactly once.** Each run is created with the idempotency key
``stoker-schedule:<schedule id>`` (:mod:`stoker.engine.ingest.idempotency`, TTL mode, one
hour): should the leader die after ingest committed the runs but before its own
transaction marked the rows, the next leader finds them still due, triggers them again and
gets the existing runs back (deduplicated) instead of new ones.

**Refused runs.** When a call is refused (a task unregistered since, a policy error), its
runs are retried one by one so that only the bad ones fail; those are marked FAILED with
the reason, and never retried.

**On time.** Between rounds the loop sleeps until the earliest due time (at most
``interval_s``), and is woken at once by a create or reschedule on this replica
(:meth:`ScheduleTimers.wake`) or on another one (``stoker_schedules``), so a run due
sooner than the planned wake-up is not late. Runs carry ``stoker_schedule`` (the
schedule's id) in their additional metadata.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, datetime

from stoker.db import Executor, NoParams
from stoker.db.store import schedules as store
from stoker.engine.controllers.leadership import Leadership
from stoker.engine.ingest import Ingest, TriggerInput
from stoker.engine.ingest.workflows import WorkflowIngest, WorkflowTriggerInput
from stoker.engine.service import LoopService
from stoker.errors import StokerError

log = logging.getLogger("stoker.engine.schedules")

_BATCH = 2_000
KEY_PREFIX = "stoker-schedule:"
KEY_TTL_MS = 3_600_000


class ScheduleTimers(LoopService):
    """Fires due scheduled runs, on the leader."""

    name = "schedules"

    def __init__(
        self,
        db: Executor,
        ingest: Ingest,
        workflows: WorkflowIngest,
        leadership: Leadership,
        *,
        interval_s: float,
    ) -> None:
        super().__init__()
        self._db = db
        self._ingest = ingest
        self._workflows = workflows
        self._leadership = leadership
        self._interval = interval_s
        self._wake = self.signal()
        self.fired = 0
        """Runs started by this replica (for tests and metrics)."""

    def wake(self) -> None:
        """A scheduled run was created or rescheduled: look again at once."""
        self._wake.set()

    def on_remote(self, _body: str) -> None:
        """``stoker_schedules`` from another replica."""
        self._wake.set()

    async def run(self) -> None:
        while not self.stopping.is_set():
            delay = self._interval
            if self._leadership.is_leader:
                try:
                    delay = await self.round()
                except Exception:
                    log.exception("a round of scheduled runs failed; retrying")
            await self._wake.wait(delay)

    async def round(self) -> float:
        """Fires what is due; returns seconds until the next one (at most the interval)."""
        async with self._db.transaction() as tx:
            due = await store.due_scheduled_runs(tx, store.DueScheduledRuns(_BATCH))
            if due:
                groups: dict[tuple[int, bool], list[store.DueScheduledRun]] = {}
                for row in due:
                    groups.setdefault((row["tenant_id"], row["task_name"] is None), []).append(row)
                outcomes = await asyncio.gather(
                    *(self._fire(tenant, wf, rows) for (tenant, wf), rows in groups.items())
                )
                mark = store.MarkScheduledRuns([], [], [], [])
                for result in outcomes:
                    for row_id, run_id, error in result:
                        mark.ids.append(row_id)
                        mark.statuses.append("FIRED" if run_id else "FAILED")
                        mark.run_ids.append(uuid.UUID(run_id) if run_id else None)
                        mark.errors.append(error)
                await store.mark_scheduled_runs(tx, mark)
                self.fired += sum(1 for r in mark.run_ids if r is not None)
        if len(due) >= _BATCH:
            return 0.0
        nxt = await store.next_scheduled_run(self._db, NoParams())
        if nxt is None or nxt["run_at"] is None:
            return self._interval
        left = (nxt["run_at"] - datetime.now(UTC)).total_seconds()
        return float(max(0.0, min(self._interval, left)))

    async def _fire(
        self, tenant_id: int, workflow: bool, rows: list[store.DueScheduledRun]
    ) -> list[tuple[int, str | None, str | None]]:
        """Creates the runs of ``rows``: per row, (row id, run id or None, error)."""
        try:
            ids = await self._trigger(tenant_id, workflow, rows)
            return [(r["id"], i, None) for r, i in zip(rows, ids, strict=True)]
        except StokerError as exc:
            if len(rows) == 1:
                name = rows[0]["task_name"] or rows[0]["workflow_name"]
                log.error(
                    "scheduled run %s of %r is refused: %s", rows[0]["external_id"], name, exc
                )
                return [(rows[0]["id"], None, str(exc))]
        # One of them is refused: each alone, so that only the bad ones fail.
        parts = await asyncio.gather(*(self._fire(tenant_id, workflow, [r]) for r in rows))
        return [o for part in parts for o in part]

    async def _trigger(
        self, tenant_id: int, workflow: bool, rows: list[store.DueScheduledRun]
    ) -> list[str]:
        if workflow:
            return await self._workflows.trigger(
                tenant_id,
                [
                    WorkflowTriggerInput(
                        r["workflow_name"] or "",
                        _json(r["input"]),
                        _metadata(r),
                        r["priority"],
                        f"{KEY_PREFIX}{r['external_id']}",
                        KEY_TTL_MS,
                    )
                    for r in rows
                ],
            )
        return await self._ingest.trigger(
            tenant_id,
            [
                TriggerInput(
                    r["task_name"] or "",
                    _json(r["input"]),
                    _metadata(r),
                    r["priority"],
                    idempotency_key=f"{KEY_PREFIX}{r['external_id']}",
                    idempotency_ttl_ms=KEY_TTL_MS,
                )
                for r in rows
            ],
        )


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _metadata(row: store.DueScheduledRun) -> bytes:
    metadata = dict(row["additional_metadata"] or {})
    metadata["stoker_schedule"] = str(row["external_id"])
    return json.dumps(metadata).encode()
