"""The inbox drainer: turns runs that applications enqueued in their own transactions into
real runs (transactional enqueue, docs/transactional.md).

An application calls ``enqueue_runs()`` (a ``SECURITY DEFINER`` function of the schema)
inside its own transaction, through the SDK's ``run_no_wait(..., connection=conn)``. The
function inserts one ``run_inbox`` row per run, stamped with the tenant that an
administrator mapped the caller's database role to (``enqueue_role``), and sends
``stoker_inbox``. A rollback takes both back; a commit makes the rows visible and delivers
the notification. Nothing of this needs the engine to be up.

**Draining.** Every replica runs this service. It drains at start-up, whenever
``stoker_inbox`` arrives (the :class:`~stoker.engine.notify.Listener`), each time the
listener connects again (a notification sent while it was away is lost), and on a slow
fallback timer (``_FALLBACK_S``, 30 s: one indexed delete on an empty table).

A round is **one transaction**: ``take_inbox`` deletes the oldest rows with
``FOR UPDATE SKIP LOCKED`` (two replicas take disjoint rows), and their runs are written
in the same transaction, with the ids the SDK gave them, by ingest's writers
(:meth:`Ingest.prepare <stoker.engine.ingest.Ingest.prepare>` +
:func:`~stoker.engine.ingest.write_task_runs` for tasks,
:meth:`WorkflowIngest.write_runs` for workflows). Rows and runs commit together or not at
all, so each inbox row becomes its run exactly once across replicas and crashes.

**Idempotency keys** are resolved in the round's transaction with
:func:`stoker.engine.ingest.idempotency.resolve`, as ingest's flush does: a row whose key
names a live run writes nothing and leaves a receipt (``run_inbox_receipt.run_id``), which
``AwaitRuns`` follows, so the application's run reference answers with that run.

**Unknown tasks.** An application may enqueue before any worker declared a task: each
task row carries the task's definition as the application declared it, and a task the
tenant does not have is registered from it (a known task's definition is never replaced
from the inbox). Workflows are not: a workflow must have been declared to the engine (by
its worker, or any earlier call) before its runs are drained.

**Refused rows** (a workflow the tenant never registered, a payload over the limit or not
storable, a bad idempotency key): the tenant's rows of one kind are written in a
savepoint; when that fails, row by row, and a refused row leaves a receipt with the
reason (``run_inbox_receipt.error``): its reference's ``result()`` raises TaskRunError
with it. Nothing is retried, as for scheduled runs.

**Trust.** The tenant of a row is never something the application sends: it is read by
``enqueue_runs()`` from ``enqueue_role`` by ``session_user``, a table the application role
cannot read or write. Runs are written for that tenant only, with that tenant's
definitions and limits.
"""

from __future__ import annotations

import logging
import uuid

from stoker.db import Executor
from stoker.db.store import inbox as store
from stoker.engine import faults
from stoker.engine.definitions import Definitions
from stoker.engine.ingest import Ingest, TriggerInput, write_task_runs
from stoker.engine.ingest import idempotency as idem
from stoker.engine.ingest.idempotency import IdemKey
from stoker.engine.ingest.workflows import WorkflowIngest, WorkflowTriggerInput
from stoker.engine.service import LoopService
from stoker.engine.signals import Outbox, Signals
from stoker.errors import UnknownTaskError

log = logging.getLogger("stoker.engine.inbox")

CHANNEL = "stoker_inbox"
"""NOTIFY channel ``enqueue_runs()`` sends (body ``<tenant_id>:app``)."""

_BATCH = 1_000
_RETRY_S = 1.0
"""After a failed round (the database away): the rows are still there, look again soon."""
_FALLBACK_S = 30.0
"""How often an idle replica looks at the inbox without being told: a notification is
lost only while the listener reconnects, and it drains on reconnecting too."""


class InboxDrainer(LoopService):
    """Writes the runs applications enqueued in their transactions (every replica)."""

    name = "inbox"

    def __init__(
        self,
        db: Executor,
        signals: Signals,
        definitions: Definitions,
        ingest: Ingest,
        workflows: WorkflowIngest,
    ) -> None:
        super().__init__()
        self._db = db
        self._definitions = definitions
        self._run_signals = signals
        self._ingest = ingest
        self._workflows = workflows
        self._wake = self.signal()
        self.drained = 0
        """Inbox rows this replica turned into runs or receipts (for tests and metrics)."""

    def on_remote(self, _body: str) -> None:
        """``stoker_inbox``: an application committed enqueued runs."""
        self._wake.set()

    def on_listening(self) -> None:
        """The listener (re)connected: notifications sent meanwhile were not heard."""
        self._wake.set()

    async def run(self) -> None:
        while not self.stopping.is_set():
            try:
                n = await self.round()
            except Exception:
                log.exception("draining the run inbox failed; it is retried")
                await self._wake.wait(_RETRY_S)
                continue
            if n >= _BATCH:
                continue
            await self._wake.wait(_FALLBACK_S)

    async def round(self) -> int:
        """Drains up to one batch; how many inbox rows it took."""
        async with self._run_signals.transaction(self._db) as (tx, out):
            rows = await store.take_inbox(tx, store.TakeInbox(_BATCH))
            groups: dict[tuple[int, str], list[store.InboxRow]] = {}
            for row in rows:
                groups.setdefault((row["tenant_id"], row["kind"]), []).append(row)
            for (tenant_id, kind), group in groups.items():
                receipts = store.PutInboxReceipts(tenant_id, [], [], [])
                for row, run_id, error in await self._drain(tx, out, tenant_id, kind, group):
                    receipts.external_ids.append(row["external_id"])
                    receipts.run_ids.append(run_id)
                    receipts.errors.append(error)
                if receipts.external_ids:
                    await store.put_inbox_receipts(tx, receipts)
        self.drained += len(rows)
        return len(rows)

    async def _drain(
        self, tx: Executor, out: Outbox, tenant_id: int, kind: str, rows: list[store.InboxRow]
    ) -> list[tuple[store.InboxRow, uuid.UUID | None, str | None]]:
        """Writes ``rows`` in a savepoint (row by row when refused); the receipts to keep:
        ``(row, existing run id, None)`` for a deduplicated row, ``(row, None, reason)``
        for a refused one."""
        own = self._run_signals.outbox()
        try:
            async with tx.transaction() as savepoint:
                deduplicated = await self._write(savepoint, own, tenant_id, kind, rows)
        except Exception as exc:
            if faults.transient(exc):
                raise  # the database is away: the round is retried as a whole
            if len(rows) == 1:
                row = rows[0]
                log.warning(
                    "run %s of %s %r enqueued in a transaction is refused: %s",
                    row["external_id"],
                    kind,
                    row["name"],
                    exc,
                )
                return [(row, None, str(exc) or type(exc).__name__)]
            refused: list[tuple[store.InboxRow, uuid.UUID | None, str | None]] = []
            for row in rows:
                refused += await self._drain(tx, out, tenant_id, kind, [row])
            return refused
        out.merge(own)
        return [(row, run_id, None) for row, run_id in deduplicated]

    async def _write(
        self, tx: Executor, out: Outbox, tenant_id: int, kind: str, rows: list[store.InboxRow]
    ) -> list[tuple[store.InboxRow, uuid.UUID]]:
        """Writes the runs of ``rows`` (one tenant, one kind); the rows deduplicated by an
        idempotency key, with the live run each one names."""
        if kind == "workflow":
            items = [
                WorkflowTriggerInput(
                    r["name"],
                    r["input"].encode(),
                    r["metadata"].encode(),
                    r["priority"],
                    r["idempotency_key"],
                    r["idempotency_ttl_ms"],
                )
                for r in rows
            ]
            keys = [
                idem.check(i.idempotency_key, i.idempotency_ttl_ms, f"workflow {i.workflow_name!r}")
                for i in items
            ]
            fresh, dups = await self._resolve(tx, tenant_id, rows, keys)
            if fresh:
                await self._workflows.write_runs(
                    tx,
                    out,
                    tenant_id,
                    [items[n] for n in fresh],
                    [rows[n]["external_id"] for n in fresh],
                )
            return dups
        tasks = [
            TriggerInput(
                r["name"],
                r["input"].encode(),
                r["metadata"].encode(),
                r["priority"],
                desired_worker_id=r["desired_worker_id"],
                idempotency_key=r["idempotency_key"],
                idempotency_ttl_ms=r["idempotency_ttl_ms"],
            )
            for r in rows
        ]
        ids = [r["external_id"] for r in rows]
        try:
            runs = await self._ingest.prepare(tenant_id, tasks, ids)
        except UnknownTaskError:
            if not await self._register_missing(tenant_id, rows):
                raise
            runs = await self._ingest.prepare(tenant_id, tasks, ids)
        keys = [
            idem.key_for(
                t.task_name,
                run.config,
                t.idempotency_key,
                t.idempotency_ttl_ms,
                t.input,
                t.additional_metadata,
            )
            for t, run in zip(tasks, runs, strict=True)
        ]
        fresh, dups = await self._resolve(tx, tenant_id, rows, keys)
        if fresh:
            gated = await write_task_runs(tx, tenant_id, [runs[n] for n in fresh], out)
            out.queued(tenant_id, gated=gated)
        return dups

    async def _register_missing(self, tenant_id: int, rows: list[store.InboxRow]) -> bool:
        """Registers the tasks of ``rows`` the tenant does not have, from the definitions
        the application sent (an application may enqueue before any worker declared the
        task); a known task's definition is never replaced from here. Whether it
        registered any."""
        known = await self._definitions.tasks(tenant_id, refresh=True)
        missing = {
            r["name"]: r["definition"].encode()
            for r in rows
            if r["name"] not in known and r["definition"]
        }
        if missing:
            await self._definitions.register_tasks(tenant_id, sorted(missing.items()))
        return bool(missing)

    @staticmethod
    async def _resolve(
        tx: Executor, tenant_id: int, rows: list[store.InboxRow], keys: list[IdemKey | None]
    ) -> tuple[list[int], list[tuple[store.InboxRow, uuid.UUID]]]:
        """The indexes of the rows to write, and the rows whose key names a live run."""
        keyed = [(n, k) for n, k in enumerate(keys) if k is not None]
        if not keyed:
            return list(range(len(rows))), []
        decisions = await idem.resolve(
            tx, tenant_id, [(k, str(rows[n]["external_id"])) for n, k in keyed]
        )
        skip = {
            n: uuid.UUID(d.run_id)
            for (n, _), d in zip(keyed, decisions, strict=True)
            if d.deduplicated
        }
        return [n for n in range(len(rows)) if n not in skip], [
            (rows[n], run_id) for n, run_id in skip.items()
        ]


__all__ = ["CHANNEL", "InboxDrainer"]
