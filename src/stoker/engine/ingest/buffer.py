"""The ingest service: accepts triggers and writes runs in batches (the one run-writing path).

A trigger call is validated at once (known task, payload size, JSON), then parked in a
buffer; the flusher writes everything buffered, from every caller, in one transaction per
tenant (group commit: what arrives while a flush runs is the next batch; an optional
``flush_interval_ms`` lingers for more, ``flush_max_items`` caps it), and only then answers
the callers, so an accepted run is durably stored. The scheduler in this
process is then woken directly.

Runs inserted by other means (a client's own transaction, another replica) reach the queue
through the same ``queue_item`` table, which the scheduler also polls, so it never depends
on this buffer.

Definitions (which tasks exist, their configuration, policy evaluation) come from
:class:`~stoker.engine.definitions.Definitions`; this module only writes runs.

The seam for other kinds of runs (workflow runs and child spawns, in
:mod:`stoker.engine.ingest.workflows`): they are validated by their own ingest (with
:func:`check_payload` and the definitions) and then parked in the same buffer, so every
run, whatever made it, is written by the flusher:

* :meth:`Ingest.submit` with a :data:`BatchWriter`, which the flusher calls once per tenant
  with every caller's items (workflow runs), inside the same transaction as the task
  triggers;
* :meth:`Ingest.submit_call` with a :data:`CallWriter` for a call whose answer is only known
  once written (a spawn answers with the children that already existed): it runs in a
  savepoint of that transaction of its own, so one bad call fails only itself, and records
  the call's request key at its end.

Writers say which runs they queued through the flush's
:class:`~stoker.engine.signals.Outbox` (a call writer through one of its own, merged into
the flush's only when its savepoint is released). Task rows are written by
:func:`write_task_runs` whoever makes them.

Idempotency keys (:mod:`stoker.engine.ingest.idempotency`): runs may carry user-facing
keys; the flush resolves them in its transaction, after the request keys, and writes only
the runs whose key named no live run (the others answer with the existing run's id, marked
in :class:`RunIds`).

Request keys: a call may carry a request key (:mod:`stoker.engine.ingest.requests`). The
flush records the keys of every call it writes in the same transaction as their runs
(:func:`~stoker.engine.ingest.requests.claim`), before writing them; a call whose key is
recorded already (committed by an earlier flush or another replica, or earlier in the same
batch) writes nothing and answers with the first call's ids, and one whose key was used
with other content is refused with InvalidRequestError.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from stoker.db import Executor, NoParams
from stoker.db.store import idempotency as idempotency_store
from stoker.db.store import queue as queue_store
from stoker.db.store import workers as worker_store
from stoker.engine import faults, metrics, tracing
from stoker.engine.definitions import Definitions
from stoker.engine.ingest import idempotency, requests
from stoker.engine.ingest.idempotency import IdemKey
from stoker.engine.ingest.requests import RequestKey
from stoker.engine.ingest.tasks import NewTaskRun, TriggerInput, check_payload, write_task_runs
from stoker.engine.service import LoopService
from stoker.engine.signals import Outbox, Signals
from stoker.errors import InvalidRequestError

log = logging.getLogger("stoker.engine.ingest")


@dataclass(frozen=True, slots=True)
class Written:
    """What a :data:`CallWriter` wrote: its caller's answer, and the run ids its request
    key records."""

    answer: Any
    run_ids: list[str]


class RunIds(list[str]):
    """The run ids a trigger answers, in order, with ``deduplicated[i]`` True when an
    idempotency key named an existing live run whose id is returned instead of a new one."""

    def __init__(self, ids: Sequence[str], deduplicated: Sequence[bool] | None = None) -> None:
        super().__init__(ids)
        self.deduplicated: list[bool] = list(deduplicated or [False] * len(ids))


BatchWriter = Callable[[Executor, Outbox, int, list[Any]], Awaitable[None]]
"""Writes one tenant's parked items of one kind inside the flush's transaction, telling
what it queued through the transaction's outbox."""

CallWriter = Callable[[Executor, Outbox], Awaitable[Written]]
"""Writes one parked call inside a savepoint of the flush's transaction. It may be called
again if the flush's transaction is retried, so it derives everything from what it holds."""


@dataclass(slots=True)
class _Pending:
    tenant_id: int
    rows: list[NewTaskRun]
    ids: list[str]
    request: RequestKey | None = None
    writer: BatchWriter | None = None
    items: list[Any] = field(default_factory=list)
    call: CallWriter | None = None
    replayed: Callable[[requests.Answer], Any] | None = None
    keys: list[IdemKey | None] | None = None
    order: int = 0
    done: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


# After this many runs enqueued since the last time (and at most every few seconds), the
# queue's statistics are refreshed so that claims keep their index plan (analyze_queue);
# the engine's setting is queue_analyze_after_runs.
ANALYZE_AFTER_INSERTS = 10_000
_ANALYZE_EVERY_S = 5.0


class Ingest(LoopService):
    """Validates triggers and writes them to the queue in batches."""

    name = "ingest"

    def __init__(
        self,
        db: Executor,
        signals: Signals,
        definitions: Definitions,
        *,
        max_payload_bytes: int,
        flush_interval_ms: float,
        flush_max_items: int,
        analyze_after: int = ANALYZE_AFTER_INSERTS,
    ) -> None:
        super().__init__()
        self._db = db
        self._analyze_after = analyze_after
        self._run_signals = signals
        self._definitions = definitions
        self._max_payload = max_payload_bytes
        self._interval = flush_interval_ms / 1000
        self._max_items = flush_max_items
        self._pending: list[_Pending] = []
        self._pending_items = 0
        self._work = self.signal()
        self._full = self.signal()
        self._inserted = 0
        self._analyzed_at = 0.0
        self._analyze: asyncio.Task[None] | None = None

    # -- triggers ---------------------------------------------------------------------

    async def trigger(
        self, tenant_id: int, items: list[TriggerInput], request: RequestKey | None = None
    ) -> RunIds:
        """Creates the runs and returns their external ids once they are stored (a retry
        of a call with the same ``request`` key: the first call's ids, nothing created; a
        run whose idempotency key names a live run: that run's id, nothing created)."""
        if not items:
            return RunIds([])
        rows = await self.prepare(tenant_id, items)
        defs = {r.item.task_name: r.config for r in rows}
        ids = [str(r.external_id) for r in rows]
        keys = [
            idempotency.key_for(
                item.task_name,
                defs[item.task_name],
                item.idempotency_key,
                item.idempotency_ttl_ms,
                item.input,
                item.additional_metadata,
            )
            for item in items
        ]
        pending = _Pending(tenant_id, rows, ids, request, keys=keys if any(keys) else None)
        stored: RunIds = await self._park(pending, len(rows))
        return stored

    async def prepare(
        self,
        tenant_id: int,
        items: list[TriggerInput],
        external_ids: list[uuid.UUID] | None = None,
    ) -> list[NewTaskRun]:
        """The rows :meth:`trigger` would write for ``items`` (names resolved, payloads
        checked, policy evaluated; new ids unless ``external_ids`` are given), for a caller
        that writes them in its own transaction with :func:`write_task_runs` (the schedules
        controller: the runs and the marking of their schedules commit together)."""
        ids = external_ids if external_ids is not None else [uuid.uuid4() for _ in items]
        defs = (await self._definitions.resolve(tenant_id, [i.task_name for i in items])).tasks
        for item in items:
            check_payload(item, self._max_payload)
        workers = await self._desired_workers(tenant_id, items)
        return [
            NewTaskRun(
                external_id,
                defs[item.task_name],
                item,
                self._definitions.policy(
                    tenant_id,
                    item.task_name,
                    defs[item.task_name],
                    item.input,
                    item.additional_metadata,
                ),
                workers.get(item.desired_worker_id),
            )
            for item, external_id in zip(items, ids, strict=True)
        ]

    async def submit(
        self,
        tenant_id: int,
        writer: BatchWriter,
        items: list[Any],
        ids: list[str],
        request: RequestKey | None = None,
        keys: list[IdemKey | None] | None = None,
    ) -> RunIds:
        """Parks validated items of another kind (e.g. workflow runs) for the next flush,
        which writes every caller's items of this tenant with one ``writer`` call in its
        transaction; returns ``ids`` once they are stored (or, for a retry of a call with
        the same ``request`` key, the first call's ids, and writes nothing). ``keys``: the
        items' idempotency keys (an item whose key names a live run is not written)."""
        pending = _Pending(
            tenant_id, [], ids, request, writer, items, keys=keys if keys and any(keys) else None
        )
        answer: RunIds = await self._park(pending, len(items))
        return answer

    async def submit_call(
        self,
        tenant_id: int,
        call: CallWriter,
        size: int,
        replayed: Callable[[requests.Answer], Any],
        request: RequestKey | None = None,
        *,
        order: int = 0,
    ) -> Any:
        """Parks one call (``size`` runs at most) for the next flush, which runs ``call``
        in a savepoint of the tenant's transaction and records ``request`` with the ids it
        returns; answers with its :attr:`Written.answer` once committed (for a retry of a
        call with the same key: ``replayed(first call's answer)``, and nothing is written).

        The calls of one flush run in ascending ``order``: a call that locks a row others
        lock too (a durable parent's log, locked in task id order everywhere) passes that
        id, so two transactions never take such locks in opposite orders.
        """
        pending = _Pending(tenant_id, [], [], request, call=call, replayed=replayed, order=order)
        return await self._park(pending, size)

    async def _park(self, pending: _Pending, n: int) -> Any:
        self._pending.append(pending)
        self._pending_items += n
        self._work.set()
        if self._pending_items >= self._max_items:
            self._full.set()
        return await pending.done

    async def _desired_workers(self, tenant_id: int, items: list[TriggerInput]) -> dict[str, int]:
        """Internal ids of the workers the runs name; InvalidRequestError for unknown ones."""
        wanted = {i.desired_worker_id for i in items if i.desired_worker_id}
        if not wanted:
            return {}
        try:
            ids = [uuid.UUID(w) for w in wanted]
        except ValueError:
            raise InvalidRequestError(
                f"desired_worker_id must be worker ids, got {wanted}"
            ) from None
        rows = await worker_store.worker_ids_by_external(
            self._db, worker_store.WorkerIdsByExternal(tenant_id, ids)
        )
        found = {str(r["external_id"]): int(r["id"]) for r in rows}
        missing = wanted - set(found)
        if missing:
            raise InvalidRequestError(f"no worker with id {', '.join(sorted(missing))}")
        return found

    async def run(self) -> None:
        while not self.stopping.is_set():
            # Sleep until a trigger arrives; optionally let the batch fill for
            # flush_interval_ms. With 0 (the default) this is group commit: what arrives
            # while a flush runs forms the next batch, so batches grow with load only.
            if not self._pending:
                await self._work.wait()
            if self._interval and self._pending and self._pending_items < self._max_items:
                await self._full.wait(self._interval)
            if self._pending:
                await self.flush()
        await self.flush()
        if self._analyze is not None:
            await asyncio.gather(self._analyze, return_exceptions=True)

    async def flush(self) -> None:
        batch, self._pending, self._pending_items = self._pending, [], 0
        by_tenant: dict[int, list[_Pending]] = {}
        for p in batch:
            by_tenant.setdefault(p.tenant_id, []).append(p)
        for tenant_id, group in by_tenant.items():
            # One transaction for every caller of the tenant; if one caller's runs make it
            # fail, the callers are split apart so that only that caller gets the error
            # (faults.isolate). An outage fails the callers not yet written as
            # unavailable: nothing of theirs was stored, so their retry is safe.
            with (
                metrics.INGEST_BATCH.time(),
                tracing.span("stoker.ingest.batch", tenant_id=tenant_id, calls=len(group)),
            ):
                result = await faults.isolate(
                    group,
                    functools.partial(self._write, tenant_id),
                    what=f"writing the triggers of tenant {tenant_id}",
                )
            for p, exc in result.failed:
                log.error("writing %d triggers failed: %s", len(p.rows) + len(p.items), exc)
                if not p.done.done():
                    p.done.set_exception(faults.for_caller(exc))
            if result.outage is not None:
                log.error("writing triggers failed, the database is unavailable: %s", result.outage)
                for p in result.unwritten:
                    if not p.done.done():
                        p.done.set_exception(faults.unavailable(result.outage))
            for part, outcomes in result.written:
                for p, outcome in zip(part, outcomes, strict=True):
                    if p.done.done():
                        continue
                    if isinstance(outcome, BaseException):
                        p.done.set_exception(outcome)
                    else:
                        p.done.set_result(outcome)
        self._inserted += sum(len(p.rows) + len(p.items) for p in batch)
        self._maybe_analyze()

    async def _write(self, tenant_id: int, group: Sequence[_Pending]) -> list[Any]:
        """Writes parked items of one tenant in one transaction (its outbox says what was
        queued); per caller its answer (or the exception to fail it with)."""
        outcomes: dict[int, Any] = {}
        async with self._run_signals.transaction(self._db) as (tx, out):
            # Keys first: a retried call is answered, not written (requests.py). A call
            # writer records its own key once written (its answer is known only then).
            batched = [p for p in group if p.call is None]
            replays = await requests.claim(
                tx, tenant_id, [requests.Call(p.request, p.ids) for p in batched]
            )
            todo: list[_Pending] = []
            for p, replay in zip(batched, replays, strict=True):
                if replay is None:
                    todo.append(p)
                    outcomes[id(p)] = RunIds(p.ids)
                elif isinstance(replay, InvalidRequestError):
                    outcomes[id(p)] = replay
                else:
                    outcomes[id(p)] = RunIds(replay.run_ids)
            # Then idempotency keys: items whose key names a live run are answered with it.
            skipped = await self._deduplicate(tx, tenant_id, todo, outcomes)
            rows = [r for p in todo for n, r in enumerate(p.rows) if (id(p), n) not in skipped]
            writers: dict[BatchWriter, list[Any]] = {}
            for p in todo:
                if p.writer is not None:
                    writers.setdefault(p.writer, []).extend(
                        item for n, item in enumerate(p.items) if (id(p), n) not in skipped
                    )
            if rows:
                out.queued(tenant_id, gated=await write_task_runs(tx, tenant_id, rows, out))
            for writer, items in writers.items():
                if items:
                    await writer(tx, out, tenant_id, items)
            for p in sorted((p for p in group if p.call is not None), key=lambda p: p.order):
                outcomes[id(p)] = await self._write_call(tx, out, tenant_id, p)
        return [outcomes[id(p)] for p in group]

    async def _deduplicate(
        self, tx: Executor, tenant_id: int, todo: list[_Pending], outcomes: dict[int, Any]
    ) -> set[tuple[int, int]]:
        """Resolves the idempotency keys of the calls to write (in ``tx``); fills their
        answers in ``outcomes`` and returns the ``(id(call), index)`` of the items not to
        write. Computed afresh on every call: the flush's transaction may be retried."""
        keyed = [
            (p, n, key)
            for p in todo
            if p.keys is not None
            for n, key in enumerate(p.keys)
            if key is not None
        ]
        if not keyed:
            return set()
        decisions = await idempotency.resolve(
            tx, tenant_id, [(key, p.ids[n]) for p, n, key in keyed]
        )
        skipped: set[tuple[int, int]] = set()
        changed: dict[int, _Pending] = {}
        for (p, n, _), d in zip(keyed, decisions, strict=True):
            if not d.deduplicated:
                continue
            answer: RunIds = outcomes[id(p)]
            answer[n] = d.run_id
            answer.deduplicated[n] = True
            skipped.add((id(p), n))
            changed[id(p)] = p
        for p in changed.values():
            if p.request is not None:  # a retry of the call must answer the same ids
                await idempotency_store.rewrite_request_ids(
                    tx,
                    idempotency_store.RewriteRequestIds(
                        tenant_id,
                        p.request.key,
                        bytes.fromhex("".join(outcomes[id(p)]).replace("-", "")),
                    ),
                )
        return skipped

    async def _write_call(self, tx: Executor, out: Outbox, tenant_id: int, p: _Pending) -> Any:
        """Writes one parked call in a savepoint: its answer, or the exception that fails
        it alone (a database outage still fails the whole transaction). What it queued
        joins ``out`` only if its savepoint is kept."""
        assert p.call is not None and p.replayed is not None
        own = self._run_signals.outbox()
        try:
            async with tx.transaction() as savepoint:
                w = await p.call(savepoint, own)
                await requests.record(savepoint, tenant_id, requests.Call(p.request, w.run_ids))
        except requests.Replayed as replayed:
            return p.replayed(replayed.answer)
        except Exception as exc:
            if faults.transient(exc):
                raise
            log.warning("writing a call of tenant %d failed: %s", tenant_id, exc)
            return faults.for_caller(exc)
        out.merge(own)
        return w.answer

    def _maybe_analyze(self) -> None:
        """Starts a background ANALYZE of the queue after a bulk enqueue."""
        now = time.monotonic()
        if (
            self._inserted < self._analyze_after
            or now - self._analyzed_at < _ANALYZE_EVERY_S
            or (self._analyze is not None and not self._analyze.done())
        ):
            return
        self._inserted, self._analyzed_at = 0, now
        self._analyze = asyncio.create_task(self._run_analyze(), name="stoker-analyze-queue")

    async def _run_analyze(self) -> None:
        try:
            await queue_store.analyze_queue(self._db, NoParams())
        except Exception:
            log.exception("analyzing the queue failed")
