"""Retention: the live tables stay small, history is kept by day and dropped by day.

Design (docs/storage.md has the whole picture):

* **Live vs history.** ``task`` and ``dag`` hold the runs the engine works on. A finished
  single-task run, and a finished workflow run with all its steps, move to ``task_history``
  and ``dag_history`` once they have been finished for ``history_after_s`` (so callers
  waiting for a result, and the sweeps that look at recent runs, find them live). Moving is
  one statement per batch (``archive_runs``: ``DELETE ... RETURNING`` feeding ``INSERT``),
  at most ``_BATCH`` runs of each kind per statement and ``_MAX_BATCHES`` per round, rows
  picked with ``SKIP LOCKED`` so a run someone holds waits for the next round. Ids and
  external ids do not change, so every reference stays valid; readers that do not care
  where a run is read the ``all_tasks``/``all_dags`` views, hot paths read the live tables
  and fall back to history only for ids they did not find.
* **Partitions.** ``task_history``, ``dag_history``, ``task_event``, ``user_event`` and
  the durable log's ``durable_log``, ``durable_branch`` and ``durable_entry`` are
  range-partitioned by UTC day on ``created_at``. Every hour (and at start) the partitions
  of yesterday to ``partitions_ahead_days`` ahead are created, and whole partitions older
  than ``retention_days`` are dropped (a ``DROP TABLE``, no row-by-row delete), as are
  child-run links that old. A DEFAULT partition takes rows no day partition covers.
* **Vacuum.** Updates (three per run) and moves leave dead rows in ``task`` and ``dag``;
  once ``vacuum_after_moved_runs`` rows have moved (20,000; or a minute after any move),
  the leader vacuums and analyzes them in the background, and analyzes the day partitions
  the rows moved into and today's partitions of the durable log (a live run's log is
  written and settled there), so plans and sizes do not depend on autovacuum (which may
  lag, or be off).
* **Request keys.** The idempotency keys of trigger calls (``trigger_request``) older
  than ``request_key_ttl_s`` are deleted every round (:mod:`stoker.engine.ingest.requests`),
  and so are user-facing idempotency keys whose TTL passed
  (:mod:`stoker.engine.ingest.idempotency`). The receipts of transactionally enqueued
  runs that were deduplicated or refused (:mod:`stoker.engine.inbox`) are kept as long
  as the run history.
* **Replicas.** Only the replica holding the leader lease does this
  (:mod:`~stoker.engine.controllers.leadership`), except creating today's partitions at
  start, which every replica does before the first run is written; the statements are
  also safe if two ran at once (``SKIP LOCKED``, idempotent partition creation).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from stoker.db import Executor, NoParams
from stoker.db.store import crons as cron_store
from stoker.db.store import inbox as inbox_store
from stoker.db.store import retention as retention_store
from stoker.db.store import schedules as schedule_store
from stoker.engine.controllers.leadership import Leadership
from stoker.engine.ingest import idempotency, requests
from stoker.engine.service import LoopService

log = logging.getLogger("stoker.engine.retention")

_BATCH = 5000
_MAX_BATCHES = 20
_MAINTENANCE_EVERY_S = 3600.0
_VACUUM_AFTER = 20_000
_VACUUM_EVERY_S = 60.0


class Retention(LoopService):
    """Moves finished runs to history and keeps the history's partitions (leader only)."""

    name = "retention"

    def __init__(
        self,
        db: Executor,
        leadership: Leadership,
        *,
        history_after_s: float,
        retention_days: int,
        partitions_ahead_days: int,
        interval_s: float,
        request_key_ttl_s: float,
        vacuum_after: int = _VACUUM_AFTER,
    ) -> None:
        super().__init__()
        self._vacuum_after = vacuum_after
        self._db = db
        self._leadership = leadership
        self._after_ms = int(history_after_s * 1000)
        self._retention_days = retention_days
        self._ahead_days = partitions_ahead_days
        self._interval = interval_s
        self._request_key_ttl_s = request_key_ttl_s
        self._maintained_at: float | None = None
        self._moved_since_vacuum = 0
        self._vacuumed_at = time.monotonic()
        self._vacuum: asyncio.Task[None] | None = None
        self.archived_tasks = 0
        self.archived_dags = 0
        self.vacuums = 0

    async def start(self) -> None:
        # Today's partitions exist before the first run is written, whoever leads.
        await self.maintain()
        await super().start()

    async def run(self) -> None:
        try:
            while not await self.sleep(self._interval):
                if not self._leadership.is_leader:
                    continue
                now = time.monotonic()
                if self._maintained_at is None or now - self._maintained_at >= _MAINTENANCE_EVERY_S:
                    await self.maintain()
                await self.archive()
                await requests.prune(self._db, self._request_key_ttl_s, _BATCH)
                await idempotency.prune(self._db, _BATCH)
                self._maybe_vacuum()
        finally:
            if self._vacuum is not None:
                await asyncio.gather(self._vacuum, return_exceptions=True)

    def _maybe_vacuum(self) -> None:
        """Starts a background vacuum of the live run tables after enough moves."""
        if not self._moved_since_vacuum or (self._vacuum is not None and not self._vacuum.done()):
            return
        waited = time.monotonic() - self._vacuumed_at
        if self._moved_since_vacuum < self._vacuum_after and waited < _VACUUM_EVERY_S:
            return
        self._moved_since_vacuum, self._vacuumed_at = 0, time.monotonic()
        self._vacuum = asyncio.create_task(self._run_vacuum(), name="stoker-vacuum-runs")

    async def _run_vacuum(self) -> None:
        try:
            await retention_store.vacuum_live_runs(self._db, NoParams())
            today = datetime.now(UTC).date()
            await retention_store.analyze_day(self._db, retention_store.AnalyzeDay(today))
            await retention_store.analyze_durable_day(self._db, NoParams())
            self.vacuums += 1
        except Exception:
            log.exception("vacuuming the live run tables failed")

    async def archive(self) -> tuple[int, int]:
        """Moves finished runs to history, batch after batch; returns (dags, tasks) moved."""
        dags = tasks = 0
        for _ in range(_MAX_BATCHES):
            row = await retention_store.archive_runs(
                self._db, retention_store.ArchiveRuns(self._after_ms, _BATCH)
            )
            assert row is not None
            dags, tasks = dags + int(row["dags"]), tasks + int(row["tasks"])
            if int(row["dags"]) < _BATCH and int(row["tasks"]) - int(row["dags"]) < _BATCH:
                break
        self.archived_dags += dags
        self.archived_tasks += tasks
        self._moved_since_vacuum += tasks + dags
        if tasks:
            log.debug("moved %d workflow runs and %d tasks to history", dags, tasks)
        return dags, tasks

    async def maintain(self) -> None:
        """Creates the partitions ahead, drops those past retention, prunes child links,
        scheduled runs that fired and cron ticks before the retention cutoff."""
        self._maintained_at = time.monotonic()
        today = datetime.now(UTC).date()
        row = await retention_store.ensure_partitions(
            self._db,
            retention_store.EnsurePartitions(today - timedelta(days=1), self._ahead_days + 2),
        )
        created = int(row["created"]) if row else 0
        cutoff = today - timedelta(days=self._retention_days)
        dropped = await retention_store.drop_expired_partitions(
            self._db, retention_store.DropExpiredPartitions(cutoff)
        )
        while (
            await retention_store.prune_child_runs(
                self._db, retention_store.PruneChildRuns(cutoff, _BATCH)
            )
            >= _BATCH
        ):
            pass
        while (
            await retention_store.prune_run_filter_payloads(
                self._db, retention_store.PruneChildRuns(cutoff, _BATCH)
            )
            >= _BATCH
        ):
            pass
        fired_cutoff = datetime.combine(cutoff, datetime.min.time(), UTC)
        while (
            await schedule_store.prune_fired_scheduled_runs(
                self._db, schedule_store.PruneFiredScheduledRuns(fired_cutoff, _BATCH)
            )
            >= _BATCH
        ):
            pass
        # Receipts of transactionally enqueued runs that were deduplicated or refused.
        while (
            await inbox_store.prune_inbox_receipts(
                self._db, inbox_store.PruneInboxReceipts(fired_cutoff, _BATCH)
            )
            >= _BATCH
        ):
            pass
        # Cron ticks older than the retention: past the backfill horizon.
        while (
            await cron_store.prune_cron_fires(
                self._db, cron_store.PruneCronFires(fired_cutoff, _BATCH)
            )
            >= _BATCH
        ):
            pass
        if created or dropped:
            log.info(
                "partitions: %d created, %d dropped (%s)",
                created,
                len(dropped),
                ", ".join(str(r["dropped"]) for r in dropped) or "none",
            )
