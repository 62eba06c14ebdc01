"""Dispatcher: owns the workers' streams, their slots, and the events they send.

This module holds the :class:`Dispatcher`: the stream protocol (registration, reads,
heartbeats), cancellation routing, and the task-event buffer and its flush. Beside it:
:mod:`~stoker.engine.dispatcher.conns` (a connected worker, its slots and held attempts),
:mod:`~stoker.engine.dispatcher.reconciler` (stopping attempts that ended elsewhere) and
:mod:`~stoker.engine.dispatcher.served` (which task names live workers serve).

Each connected worker is a :class:`~stoker.engine.dispatcher.conns.WorkerConn` holding its
free slots and an outbox of messages (assignments, cancellations). The scheduler reserves
slots on a conn and then pushes the assignments it committed; if the conn closed in
between, the attempts are handed back as lost and requeued at once.

Task events arrive from workers in batches and are buffered; the flusher writes all of them,
from every worker, in one transaction (group commit, capped at ``flush_max_items``);
completions are stored by :meth:`Attempts.complete
<stoker.engine.attempts.Attempts.complete>` and failures by :meth:`Attempts.end
<stoker.engine.attempts.Attempts.end>`, whose outbox tells the run watcher and the other
replicas after the commit. A completion frees its slot in memory immediately and signals
:meth:`Signals.capacity <stoker.engine.signals.Signals.capacity>`, so the scheduler can
refill it before the flush.

Cancellation: :meth:`Dispatcher.cancel` tells a worker connected here at once; for a worker
connected to another replica it sends ``stoker_cancel`` (:mod:`stoker.engine.notify`), and
that replica's listener calls :meth:`Dispatcher.cancel_here`. A lost notification is covered
by the :class:`~stoker.engine.dispatcher.reconciler.Reconciler`: every few seconds, while
attempts have been in flight here for a while, one query asks which of them no longer hold
their ``task_runtime`` row (they ended elsewhere: cancelled, timed out, requeued by the
leader) and those are cancelled on their workers. So a worker never keeps running an
attempt that ended for more than a few seconds.

Trust: a worker is believed only about the attempts the engine gave it. Every event
(started, completed, failed, timeout refresh, slot release) must name an attempt held by
the very connection it arrives on (``conn.running``: task id and attempt number, which the
scheduler filled when it assigned the attempt to this worker of this tenant); anything else
is ignored. The statements that start, end or refresh attempts check the same thing in
Postgres (``task_runtime.worker_id`` must be the reporting worker), so an event that passed
the memory check on a replica whose view is stale still cannot touch another worker's
attempt. Heartbeats count only for a worker of the caller's tenant. Everything ignored is
counted in :data:`REJECTED` by reason and logged in a rate-limited warning.

Reconnects: a worker keeps its id across reconnects and reports the attempts it still runs,
and those whose result is about to follow (``finished``: results it could not send while
disconnected, and those sent just before the stream broke, since a result in flight to a
replica that died may never have been stored).
Those claims are checked against the ``task_runtime`` rows of that worker and tenant; a
claim that is not the worker's (ended meanwhile, or never its own) is not held and the
worker is told to cancel it (a finished one is just dropped). Attempts assigned to it
before the reconnect that it does not report were lost in flight and are requeued. A
worker may reconnect to any replica.

How a stream ends decides what happens to the attempts it held:

* cleanly (the worker sent ``Goodbye`` after draining, then closed): the worker is
  stopping. It reported what finished before saying goodbye, so what it still holds is
  handed back at once, requeued as new attempts that use no retry (``WORKER_STOPPED``),
  and it is STOPPED. The explicit message matters: a killed worker's stream can end just
  as quietly as a half-close;
* otherwise (an error, a reset, a killed worker, a replica that died): nothing is ended.
  A worker still alive reconnects, here or to another replica, and reports its attempts,
  which keep running. Only a worker that stays away past the dead-worker timeout loses
  them (the leader's liveness loop declares it dead; that requeue is final, and a late
  result of such an attempt is ignored).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

from prometheus_client import Counter

from stoker._core.wire import json_problem, storable_text
from stoker._proto import engine_pb2 as pb
from stoker._proto import observe_pb2 as opb
from stoker.db import Executor, int_array
from stoker.db.store import tasks as task_store
from stoker.db.store import workers as worker_store
from stoker.engine import faults, metrics, notify, tracing
from stoker.engine.attempts import AttemptEnd, Attempts, Completion
from stoker.engine.dispatcher.conns import Held, WorkerConn, parse_labels
from stoker.engine.service import LoopService
from stoker.engine.signals import Signals
from stoker.errors import InvalidRequestError

log = logging.getLogger("stoker.engine.dispatcher")

DurableHandler = Callable[[int, int, pb.DurableRequest], Awaitable[pb.DurableReply]]
"""Answers a durable request: ``(worker_id, tenant_id, request)`` → the reply
(:class:`stoker.engine.durable.log.DurableLogs`)."""

ObservedItem = opb.AttemptLines | opb.StreamPut
"""An attempt's log lines or a stream chunk, as a worker sent them."""

REJECTED = Counter(
    "stoker_worker_messages_rejected",
    "Worker messages the engine ignored, by reason: not_held (a task event for an attempt "
    "the connection does not hold), claim (a reconnecting worker listed an attempt that is "
    "not its own), ended (a completion of an attempt that had ended meanwhile), "
    "foreign_heartbeat (a heartbeat for a worker of another tenant).",
    ["reason"],
)

WARN_EVERY_S = 10.0


class Rejections:
    """Counts ignored worker messages and warns about them at most every WARN_EVERY_S per
    reason (a flood of forged events must not become a flood of log lines)."""

    def __init__(self) -> None:
        self._warned_at: dict[str, float] = {}
        self._unreported: dict[str, int] = {}

    def reject(self, reason: str, n: int, detail: str) -> None:
        REJECTED.labels(reason).inc(n)
        self._unreported[reason] = self._unreported.get(reason, 0) + n
        now = time.monotonic()
        if now - self._warned_at.get(reason, -WARN_EVERY_S) >= WARN_EVERY_S:
            log.warning(
                "ignored %d worker message(s) (%s) since the last warning; latest: %s",
                self._unreported[reason],
                reason,
                detail,
            )
            self._warned_at[reason] = now
            self._unreported[reason] = 0


def _ms(ms: int) -> int:
    """A worker's event time in epoch ms, or now when it sent none."""
    return ms if ms > 0 else time.time_ns() // 1_000_000


class Dispatcher(LoopService):
    """Worker streams, slot accounting and batched task events."""

    name = "dispatcher"

    def __init__(
        self,
        db: Executor,
        signals: Signals,
        attempts: Attempts,
        *,
        engine_id: str,
        max_payload_bytes: int,
        flush_interval_ms: float,
        flush_max_items: int,
        durable: DurableHandler | None = None,
        on_logs: Callable[[int, list[Any]], None] | None = None,
        on_stream: Callable[[int, list[Any]], None] | None = None,
    ) -> None:
        super().__init__()
        # Where the log lines and stream chunks of held attempts go, (tenant_id, items).
        self._on_logs = on_logs
        self._on_stream = on_stream
        self._db = db
        self._run_signals = signals
        self._attempts = attempts
        self._max_payload = max_payload_bytes
        self._interval = flush_interval_ms / 1000
        self._max_items = flush_max_items
        self._conns: dict[int, WorkerConn] = {}
        # External ids of the conns here that are paused (so a heartbeat tells a change).
        self._paused: set[uuid.UUID] = set()
        self.engine_id = engine_id
        self._work = self.signal()
        self._full = self.signal()
        # Buffered events with the id of the worker that reported them.
        self._started: list[tuple[int, pb.TaskEvent]] = []
        self._completed: list[tuple[int, pb.TaskEvent]] = []
        self._failed: list[AttemptEnd] = []
        self._refresh: list[tuple[int, pb.TaskEvent]] = []
        self.rejections = Rejections()
        self._durable_handler = durable
        """Where the durable requests of attempts go (None: refused)."""

    # -- what the scheduler sees --------------------------------------------------------

    def conns_with_free_slots(self) -> dict[int, list[WorkerConn]]:
        """Open conns with at least one free slot, by tenant."""
        found: dict[int, list[WorkerConn]] = {}
        for conn in self._conns.values():
            if not conn.closed and conn.free_slots > 0:
                found.setdefault(conn.tenant_id, []).append(conn)
        return found

    def open_conns(self) -> list[WorkerConn]:
        return [c for c in self._conns.values() if not c.closed]

    def conns_of(self, tenant_id: int) -> list[WorkerConn]:
        """Every open conn of a tenant, busy or not."""
        return [c for c in self._conns.values() if c.tenant_id == tenant_id and not c.closed]

    def deliver(self, conn: WorkerConn, items: list[pb.Assignment]) -> bool:
        """Pushes committed assignments to ``conn``; False when it closed meanwhile."""
        if conn.closed:
            for a in items:
                conn.unhold(a.task_id, a.attempt)
            return False
        conn.outbox.put_nowait(pb.EngineMessage(assignments=pb.Assignments(items=items)))
        return True

    def push_here(self, worker_id: int, msg: pb.EngineMessage) -> bool:
        """Puts ``msg`` on the stream of a worker connected here; False when it is not."""
        conn = self._conns.get(worker_id)
        if conn is None or conn.closed:
            return False
        conn.outbox.put_nowait(msg)
        return True

    async def cancel(self, worker_id: int, items: Iterable[tuple[int, int, str]]) -> None:
        """Tells a worker to stop attempts that ended (their slots are freed): directly
        when it is connected here, else through the replica holding its stream."""
        items = list(items)
        if worker_id in self._conns:
            self.cancel_here(worker_id, items)
            return
        by_reason: dict[str, list[tuple[int, int]]] = {}
        for task_id, attempt, reason in items:
            by_reason.setdefault(reason, []).append((task_id, attempt))
        try:
            for reason, pairs in by_reason.items():
                await notify.send_cancel(self._db, worker_id, pairs, reason, self.engine_id)
        except Exception:
            # The rows ended already; the other replica's reconciliation still tells it.
            log.exception("could not signal the cancellation to worker %d", worker_id)

    def cancel_remote(self, body: str) -> None:
        """A ``stoker_cancel`` signal from another replica (ignored unless the worker is
        connected here)."""
        parsed = notify.parse_cancel(body)
        if parsed is None:
            log.warning("ignoring a malformed cancel signal %r", body[:200])
            return
        worker_id, pairs, reason = parsed
        if worker_id in self._conns:
            self.cancel_here(worker_id, [(t, a, reason) for t, a in pairs])

    def cancel_here(self, worker_id: int, items: Iterable[tuple[int, int, str]]) -> None:
        """Tells a worker connected here to stop attempts; their slots are freed."""
        conn = self._conns.get(worker_id)
        if conn is None:
            return
        msgs = []
        for task_id, attempt, reason in items:
            conn.unhold(task_id, attempt)
            msgs.append(pb.Cancellation(task_id=task_id, attempt=attempt, reason=reason))
        if msgs and not conn.closed:
            conn.outbox.put_nowait(pb.EngineMessage(cancellations=pb.Cancellations(items=msgs)))
            self._run_signals.capacity(conn.tenant_id)

    def set_paused(self, worker_id: int, paused: bool) -> bool:
        """Pauses or resumes a worker connected here (a paused worker has no free slots,
        so placement passes it by); True when it is connected here."""
        conn = self._conns.get(worker_id)
        if conn is None:
            return False
        if conn.paused and not paused:
            self._run_signals.capacity(conn.tenant_id)  # its slots count again
        conn.paused = paused
        if paused:
            self._paused.add(conn.external_id)
        else:
            self._paused.discard(conn.external_id)
        return True

    def pause_remote(self, body: str) -> None:
        """A ``stoker_worker_pause`` signal from another replica (ignored unless the worker
        is connected here)."""
        parsed = notify.parse_worker_pause(body)
        if parsed is None:
            log.warning("ignoring a malformed worker pause signal %r", body[:200])
            return
        self.set_paused(*parsed)

    def drop_workers(self, worker_ids: Iterable[int]) -> None:
        """Closes the streams of workers declared dead; they must register again."""
        for worker_id in worker_ids:
            conn = self._conns.pop(worker_id, None)
            if conn is not None:
                self._paused.discard(conn.external_id)
                conn.close()

    # -- streams ------------------------------------------------------------------------

    async def connect(
        self, tenant_id: int, messages: AsyncIterator[pb.WorkerMessage]
    ) -> AsyncIterator[pb.EngineMessage]:
        """Runs one worker stream: registration first, then events in, messages out."""
        first = await anext(messages, None)
        if first is None or first.WhichOneof("msg") != "register":
            raise InvalidRequestError("a worker stream must start with a registration")
        conn = await self._register(tenant_id, first.register)
        reader = asyncio.create_task(self._read(conn, messages), name=f"stoker-worker-{conn.name}")
        try:
            yield pb.EngineMessage(registered=pb.Registered(worker_id=str(conn.external_id)))
            while True:
                msg = await conn.outbox.get()
                if msg is None:
                    return
                yield msg
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            conn.closed = True
            if self._conns.get(conn.worker_id) is conn:
                del self._conns[conn.worker_id]
                self._paused.discard(conn.external_id)
                if conn.ended_cleanly:
                    # Shielded: the call may be torn down while this runs, and the worker
                    # is gone for good, so nobody else would hand these attempts back soon.
                    await asyncio.shield(self._stopped(conn))

    async def _stopped(self, conn: WorkerConn) -> None:
        """A worker closed its stream cleanly: what it still holds is handed back at once
        (requeued, no retry used up) and it is marked STOPPED. What it finished it reported
        before closing; those events are already buffered and no longer held."""
        held = sorted((task_id, h.attempt) for task_id, h in conn.running.items())
        conn.running.clear()
        if held:
            log.info(
                "worker %s stopped; handing back %d attempts it did not finish",
                conn.name,
                len(held),
            )
            await self._attempts.end(
                [
                    AttemptEnd.lost(
                        task_id,
                        attempt,
                        "WORKER_STOPPED",
                        "the worker stopped before the attempt finished",
                        reporter=conn.worker_id,
                    )
                    for task_id, attempt in held
                ]
            )
        await worker_store.stop_worker(self._db, worker_store.StopWorker(conn.worker_id))

    async def _register(self, tenant_id: int, reg: pb.WorkerRegistration) -> WorkerConn:
        try:
            external_id = uuid.UUID(reg.worker_id)
        except ValueError:
            raise InvalidRequestError(f"worker_id {reg.worker_id!r} is not a UUID") from None
        if reg.slots <= 0 or reg.durable_slots < 0:
            raise InvalidRequestError("a worker needs at least one slot")
        labels = parse_labels(reg.labels)
        row = await worker_store.register_worker(
            self._db,
            worker_store.RegisterWorker(
                tenant_id,
                external_id,
                reg.name or "worker",
                reg.slots,
                list(reg.task_names),
                json.dumps(labels),
                reg.durable_slots,
            ),
        )
        if row is None:
            raise InvalidRequestError("that worker id belongs to another tenant")
        worker_id = int(row["id"])
        old = self._conns.pop(worker_id, None)
        if old is not None:
            old.close()
        # The attempts it says it still runs count only if Postgres says they are its own.
        mine = {
            (int(r["task_id"]), int(r["attempt"])): bool(r["stale"])
            for r in await task_store.runtimes_of_registering_worker(
                self._db,
                task_store.RuntimesOfRegisteringWorker(worker_id, tenant_id, row["connected_at"]),
            )
        }
        running: dict[int, Held] = {}
        refused: list[pb.Cancellation] = []
        for r in reg.running:
            if (r.task_id, r.attempt) in mine and r.task_id not in running:
                running[r.task_id] = Held(r.attempt, max(r.slot_cost, 0), r.durable)
            elif r.finished:
                pass  # its result, sent again, was stored already (or it ended otherwise)
            else:
                refused.append(
                    pb.Cancellation(
                        task_id=r.task_id,
                        attempt=r.attempt,
                        reason="the attempt is no longer this worker's",
                    )
                )
        conn = WorkerConn(
            worker_id,
            external_id,
            tenant_id,
            reg.name,
            reg.slots,
            frozenset(reg.task_names),
            running,
            durable_slots=reg.durable_slots,
            labels=labels,
        )
        if refused:
            # Stop what it runs in vain; the outbox is sent right after the registration.
            conn.outbox.put_nowait(pb.EngineMessage(cancellations=pb.Cancellations(items=refused)))
            self.rejections.reject(
                "claim",
                len(refused),
                f"worker {conn.name} ({external_id}) of tenant {tenant_id} registered with "
                f"task {refused[0].task_id} attempt {refused[0].attempt}, not its own",
            )
        self._conns[worker_id] = conn
        # A paused worker stays paused when it reconnects (the pause is the worker row's).
        self._paused.discard(external_id)
        if row["paused"]:
            self.set_paused(worker_id, True)
        stale = [key for key, old_enough in mine.items() if old_enough and key[0] not in running]
        if stale:
            await self._attempts.end(
                [
                    AttemptEnd.lost(
                        task_id,
                        attempt,
                        "ASSIGNMENT_LOST",
                        "the worker reconnected without this attempt",
                        reporter=worker_id,
                    )
                    for task_id, attempt in stale
                ]
            )
        log.info(
            "worker %s (%s) registered with %d slots%s",
            conn.name,
            external_id,
            conn.slots,
            f", still running {len(running)} attempts" if running else "",
        )
        self._run_signals.capacity(tenant_id)
        return conn

    async def _read(self, conn: WorkerConn, messages: AsyncIterator[pb.WorkerMessage]) -> None:
        try:
            async for msg in messages:
                kind = msg.WhichOneof("msg")
                if kind == "events":
                    self._take(conn, msg.events.events)
                elif kind == "durable":
                    await self._durable(conn, msg.durable)
                elif kind == "draining":
                    conn.draining = True
                elif kind == "goodbye":
                    conn.ended_cleanly = True
                elif kind == "logs":
                    self._observed(conn, msg.logs.attempts, self._on_logs, "log lines")
                elif kind == "stream":
                    self._observed(conn, msg.stream.chunks, self._on_stream, "stream chunk")
                elif kind == "labels":
                    conn.labels = parse_labels(msg.labels.labels)
                    await worker_store.update_worker_labels(
                        self._db,
                        worker_store.UpdateWorkerLabels(conn.worker_id, json.dumps(conn.labels)),
                    )
                    self._run_signals.capacity(conn.tenant_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("worker %s stream ended: %s", conn.name, exc)
        conn.close()

    def _observed(
        self,
        conn: WorkerConn,
        items: Sequence[ObservedItem],
        sink: Callable[[int, list[Any]], None] | None,
        what: str,
    ) -> None:
        """Hands log lines or stream chunks of attempts this connection holds to ``sink``
        (:mod:`stoker.engine.observe`); the others are ignored like any task event."""
        if sink is None:
            return
        running = conn.running
        held = [
            i for i in items if (h := running.get(i.task_id)) is not None and h.attempt == i.attempt
        ]
        if len(held) < len(items):
            bad = next(i for i in items if i not in held)
            self.rejections.reject(
                "not_held",
                len(items) - len(held),
                f"{what} for task {bad.task_id} attempt {bad.attempt}, not held by "
                f"worker {conn.name}",
            )
        if held:
            sink(conn.tenant_id, held)

    async def _durable(self, conn: WorkerConn, req: pb.DurableRequest) -> None:
        """Answers a durable request of an attempt this connection holds, in stream order
        (a failure ends the stream; the worker reconnects and asks again)."""
        held = conn.running.get(req.task_id)
        if held is None or held.attempt != req.attempt or self._durable_handler is None:
            self.rejections.reject(
                "not_held",
                1,
                f"worker {conn.name} ({conn.external_id}) sent a durable request for task "
                f"{req.task_id} attempt {req.attempt}, which it does not hold",
            )
            reply = pb.DurableReply(
                task_id=req.task_id,
                attempt=req.attempt,
                request_id=req.request_id,
                error="the attempt is not held by this worker",
            )
        else:
            reply = await self._durable_handler(conn.worker_id, conn.tenant_id, req)
            if reply.evicted and conn.unhold(req.task_id, req.attempt):
                # The attempt ended (evicted): its durable slot can take other work.
                self._run_signals.capacity(conn.tenant_id)
        if not conn.closed:
            conn.outbox.put_nowait(pb.EngineMessage(durable=reply))

    def _take(self, conn: WorkerConn, events: Iterable[pb.TaskEvent]) -> None:
        freed = False
        ignored: list[pb.TaskEvent] = []
        me = conn.worker_id
        for ev in events:
            held = conn.running.get(ev.task_id)
            if held is None or held.attempt != ev.attempt:
                ignored.append(ev)  # not an attempt this connection holds
            elif ev.kind == pb.STARTED:
                self._started.append((me, ev))
                wait_s = ev.at_ms / 1000 - held.ready_at if held.ready_at and ev.at_ms else None
                metrics.started(conn.tenant_id, held.task_name, wait_s)
            elif ev.kind == pb.COMPLETED:
                freed |= conn.unhold(ev.task_id, ev.attempt)
                problem = self._output_problem(ev.output)
                if problem:
                    self._failed.append(
                        AttemptEnd.failed(
                            ev.task_id,
                            ev.attempt,
                            "InvalidOutput",
                            problem,
                            retryable=False,
                            reporter=me,
                        )
                    )
                else:
                    self._completed.append((me, ev))
            elif ev.kind == pb.FAILED:
                freed |= conn.unhold(ev.task_id, ev.attempt)
                self._failed.append(AttemptEnd.from_event(ev, me))
            elif ev.kind == pb.REFRESH_TIMEOUT:
                self._refresh.append((me, ev))
            elif ev.kind == pb.RELEASE_SLOT:
                freed |= conn.release(ev.task_id, ev.attempt)
        if ignored:
            ev = ignored[-1]
            self.rejections.reject(
                "not_held",
                len(ignored),
                f"worker {conn.name} ({conn.external_id}) of tenant {conn.tenant_id} sent "
                f"{pb.EventKind.Name(ev.kind)} for task {ev.task_id} attempt {ev.attempt}, "
                "which it does not hold",
            )
        if freed:
            self._run_signals.capacity(conn.tenant_id)
        if self._buffered():
            self._work.set()
            if self._buffered() >= self._max_items:
                self._full.set()

    def take_detached(self, worker_id: int, events: Iterable[pb.TaskEvent]) -> None:
        """Buffers events of a worker whose stream is not on this replica (an HTTP push
        endpoint's report, docs/http-workers.md). Nothing is checked in memory: the
        statements that write them apply only to attempts whose ``task_runtime`` row is
        ``worker_id``'s, and the replica holding the stream frees the slots when its
        reconciler sees those attempts ended."""
        for ev in events:
            if ev.kind == pb.COMPLETED:
                problem = self._output_problem(ev.output)
                if problem:
                    self._failed.append(
                        AttemptEnd.failed(
                            ev.task_id,
                            ev.attempt,
                            "InvalidOutput",
                            problem,
                            retryable=False,
                            reporter=worker_id,
                        )
                    )
                else:
                    self._completed.append((worker_id, ev))
            elif ev.kind == pb.FAILED:
                self._failed.append(AttemptEnd.from_event(ev, worker_id))
            elif ev.kind == pb.REFRESH_TIMEOUT:
                self._refresh.append((worker_id, ev))
        if self._buffered():
            self._work.set()

    def _output_problem(self, output: bytes) -> str | None:
        if len(output) > self._max_payload:
            return f"the output is {len(output)} bytes, over the limit of {self._max_payload} bytes"
        problem = json_problem(output or b"null")
        return f"the output is refused: {problem}" if problem else None

    @property
    def backlogged(self) -> bool:
        """True while task events wait faster than they are written: the scheduler then
        holds back new assignments (backpressure) until the flushes catch up."""
        return self._buffered() >= 5 * self._max_items

    def _buffered(self) -> int:
        return len(self._started) + len(self._completed) + len(self._failed) + len(self._refresh)

    # -- heartbeats ---------------------------------------------------------------------

    async def heartbeat(self, tenant_id: int, external_id: uuid.UUID) -> tuple[bool, bool]:
        """Records a heartbeat of a tenant's worker: (known, drain). ``known`` is False when
        the worker is not (or no longer) alive, or is not the tenant's (then the heartbeat
        is counted as ignored); ``drain``: the worker was asked to drain and stop."""
        rows = await worker_store.heartbeat_workers(
            self._db, worker_store.HeartbeatWorkers([external_id], tenant_id)
        )
        if rows:
            # A pause made on another replica reaches this one with the next heartbeat.
            # Looked for only when it may have changed: pauses are rare, heartbeats are not.
            paused = bool(rows[0]["paused"])
            if paused != (external_id in self._paused):
                for conn in list(self._conns.values()):
                    if conn.external_id == external_id:
                        self.set_paused(conn.worker_id, paused)
            return True, bool(rows[0]["drain"])
        owner = await worker_store.worker_tenant(self._db, worker_store.WorkerTenant(external_id))
        if owner is not None and int(owner["tenant_id"]) != tenant_id:
            self.rejections.reject(
                "foreign_heartbeat",
                1,
                f"tenant {tenant_id} sent a heartbeat for worker {external_id} of another tenant",
            )
        return False, False

    # -- flushing -----------------------------------------------------------------------

    async def run(self) -> None:
        while not self.stopping.is_set():
            # Sleep until events arrive; optionally let the batch fill (see Ingest.run).
            if not self._buffered():
                await self._work.wait()
            if self._interval and self._buffered() and self._buffered() < self._max_items:
                await self._full.wait(self._interval)
            if self._buffered():
                await self.flush()
        await self.flush()

    async def flush(self) -> None:
        """Writes buffered task events: starts, refreshes and completions in one
        transaction with DAG progression, then failures through :meth:`Attempts.end`.

        A batch the database refuses is written again in parts around the refused events
        (:meth:`_store_isolated`), so one bad event never holds up the others; a batch hit
        by an outage goes back to the buffer whole and is retried.
        """
        # At most flush_max_items of each kind per transaction: a flush that falls behind
        # catches up in steady steps instead of one ever larger statement.
        n = self._max_items
        started, self._started = self._started[:n], self._started[n:]
        completed, self._completed = self._completed[:n], self._completed[n:]
        failed, self._failed = self._failed[:n], self._failed[n:]
        refresh, self._refresh = self._refresh[:n], self._refresh[n:]
        events = started + refresh + completed
        done: list[task_store.CompletedRun] = []
        refused = 0
        try:
            if events:
                with (
                    metrics.FLUSH.time(),
                    tracing.span("stoker.dispatch.flush", events=len(events)),
                ):
                    done = await self._store(events, progress=True)
        except Exception as exc:
            if faults.transient(exc):
                # The database went away: put the events back so nothing a worker
                # reported is lost; the loop retries the whole batch.
                self._started[:0], self._completed[:0] = started, completed
                self._refresh[:0], self._failed[:0] = refresh, failed
                raise
            # Something in the batch is refused (or progression failed): write it again
            # in parts so that one bad event never holds up the others. Parts skip DAG
            # progression; the DAG sweeper progresses those runs.
            done, refused = await self._store_isolated(events, failed)
        ended = len(completed) - refused - len(done)
        if ended > 0:
            # Held here, yet their runtime row was gone or not this worker's: they ended
            # meanwhile (cancelled, timed out, requeued) through another path.
            self.rejections.reject("ended", ended, "completions of attempts that had already ended")
        if failed:
            try:
                await self._attempts.end(failed)
            except Exception:
                self._failed[:0] = failed
                raise

    async def _store_isolated(
        self, events: list[tuple[int, pb.TaskEvent]], failed: list[AttemptEnd]
    ) -> tuple[list[task_store.CompletedRun], int]:
        """Writes ``events`` split apart around the ones the database refuses; a refused
        completion fails its attempt instead (``InvalidOutput``, appended to ``failed``),
        a refused start or timeout refresh is dropped with a log line. Returns what
        :meth:`_store` does, and how many completions were refused."""
        result = await faults.isolate(
            events,
            lambda part: self._store(list(part), progress=False),
            what="writing task events",
        )
        done = [r for _, rows in result.written for r in rows]
        refused = 0
        for (worker_id, ev), exc in result.failed:
            if ev.kind == pb.COMPLETED:
                refused += 1
                failed.append(
                    AttemptEnd.failed(
                        ev.task_id,
                        ev.attempt,
                        "InvalidOutput",
                        storable_text(f"the output could not be stored: {exc}"),
                        retryable=False,
                        reporter=worker_id,
                    )
                )
            else:
                log.error(
                    "dropping a %s event of task %d attempt %d: %s",
                    pb.EventKind.Name(ev.kind),
                    ev.task_id,
                    ev.attempt,
                    exc,
                )
        if result.outage is not None:
            # The rest is retried whole by the loop, like any batch hit by an outage.
            left = result.unwritten
            self._started[:0] = [w for w in left if w[1].kind == pb.STARTED]
            self._refresh[:0] = [w for w in left if w[1].kind == pb.REFRESH_TIMEOUT]
            self._completed[:0] = [w for w in left if w[1].kind == pb.COMPLETED]
            self._failed[:0] = failed
            failed.clear()
            raise result.outage
        return done, refused

    async def _store(
        self, events: list[tuple[int, pb.TaskEvent]], *, progress: bool
    ) -> list[task_store.CompletedRun]:
        """Writes starts, timeout refreshes and completions (each with the worker that
        reported it) in one transaction; the rows of the attempts that completed."""
        refresh = [w for w in events if w[1].kind == pb.REFRESH_TIMEOUT]
        completed = [w for w in events if w[1].kind == pb.COMPLETED]
        # A start that arrived with its attempt's completion is written by the completion
        # (started_at in the same row update): one update of the task row fewer.
        ending = {(e.task_id, e.attempt, w) for w, e in completed}
        starts_with_end: dict[tuple[int, int, int], int] = {}
        started: list[tuple[int, pb.TaskEvent]] = []
        for w, e in events:
            if e.kind != pb.STARTED:
                continue
            if (e.task_id, e.attempt, w) in ending:
                starts_with_end[(e.task_id, e.attempt, w)] = _ms(e.at_ms)
            else:
                started.append((w, e))
        async with self._run_signals.transaction(self._db) as (tx, out):
            if started:
                await task_store.mark_started(
                    tx,
                    task_store.MarkStarted(
                        int_array(e.task_id for _, e in started),
                        int_array(e.attempt for _, e in started),
                        int_array(_ms(e.at_ms) for _, e in started),
                        int_array(w for w, _ in started),
                    ),
                )
            if refresh:
                await task_store.refresh_timeouts(
                    tx,
                    task_store.RefreshTimeouts(
                        [e.task_id for _, e in refresh],
                        [e.attempt for _, e in refresh],
                        [e.timeout_ms for _, e in refresh],
                        [w for w, _ in refresh],
                    ),
                )
            done = await self._attempts.complete(
                tx,
                out,
                [
                    Completion(
                        e.task_id,
                        e.attempt,
                        e.output,
                        _ms(e.at_ms),
                        w,
                        starts_with_end.get((e.task_id, e.attempt, w), 0),
                    )
                    for w, e in completed
                ],
                progress=progress,
            )
        return done
