"""Signals between engine replicas through Postgres LISTEN/NOTIFY.

A replica that enqueues runs sends ``stoker_queue`` and one that finishes runs sends
``stoker_finished``, each with ``<tenant_id>:<engine_id>`` as payload, from inside the
transaction that made the change, through its :class:`~stoker.engine.signals.Outbox` (so
the signal goes out exactly when the change is visible). Every replica listens on one
dedicated connection and hands what it hears to :class:`~stoker.engine.signals.Signals`;
a replica ignores its own signals, which it already acted on in memory.

A replica that pauses or resumes a worker sends ``stoker_worker_pause`` with
``<worker_id>,<1|0>:<engine_id>``; the replica holding the worker's stream applies it
(the worker's next heartbeat would too, should the signal be lost).

A replica that ends running attempts of a worker connected to another replica (a cancel,
a concurrency cancellation, an execution timeout) sends ``stoker_cancel`` with
``<worker_id>;<task_id>.<attempt>,...;<reason>:<engine_id>`` (in chunks under Postgres'
8,000-byte payload limit), after the change committed; the replica holding that worker's
stream tells the worker.

Notifications are hints: the scheduler's poll, the watchers' re-reads and the dispatcher's
reconciliation of in-flight attempts (:mod:`stoker.engine.dispatcher`) cover a lost one,
and the connection is re-opened with backoff when it drops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from psycopg import sql

from stoker.db import Executor, connect
from stoker.db.store import notify as notify_store
from stoker.engine.service import LoopService

log = logging.getLogger("stoker.engine.notify")

QUEUE = "stoker_queue"
FINISHED = "stoker_finished"
CANCEL = "stoker_cancel"
SCHEDULES = "stoker_schedules"
"""A scheduled run was created or rescheduled: the leader's schedules controller looks
again when the next one is due (body ``0``)."""

WORKER_PAUSE = "stoker_worker_pause"
"""A worker was paused or resumed (body ``<worker_id>,<1|0>``): the replica holding its
stream applies it at once (engine/workers)."""

_MAX_PAYLOAD = 7_000  # bytes; Postgres refuses payloads of 8,000 and more
_MAX_REASON = 200


async def send_many(db: Executor, signals: dict[str, set[int]], engine_id: str) -> None:
    """Sends every ``channel`` for each of its tenants, in one statement (inside the
    caller's transaction when ``db`` is one). Only :mod:`stoker.engine.signals` calls it:
    whatever queues or finishes runs goes through an outbox."""
    pairs = [(c, f"{t}:{engine_id}") for c, tenants in signals.items() for t in sorted(tenants)]
    if not pairs:
        return
    if len(pairs) == 1:
        await notify_store.notify.send(db, notify_store.Notify(*pairs[0]))
        return
    await notify_store.notify_many.send(
        db, notify_store.NotifyMany([c for c, _ in pairs], [p for _, p in pairs])
    )


async def send_cancel(
    db: Executor, worker_id: int, items: list[tuple[int, int]], reason: str, engine_id: str
) -> None:
    """Asks the replica holding ``worker_id``'s stream to stop ``(task_id, attempt)`` items."""
    reason = reason.replace(";", ",")[:_MAX_REASON]
    head, tail = f"{worker_id};", f";{reason}:{engine_id}"
    chunk: list[str] = []
    size = len(head.encode()) + len(tail.encode())
    for task_id, attempt in items:
        part = f"{task_id}.{attempt}"
        if chunk and size + len(part) + 1 > _MAX_PAYLOAD:
            await notify_store.notify(
                db, notify_store.Notify(CANCEL, head + ",".join(chunk) + tail)
            )
            chunk, size = [], len(head.encode()) + len(tail.encode())
        chunk.append(part)
        size += len(part) + 1
    if chunk:
        await notify_store.notify(db, notify_store.Notify(CANCEL, head + ",".join(chunk) + tail))


async def send_worker_pause(db: Executor, worker_id: int, paused: bool, engine_id: str) -> None:
    """Tells the replica holding ``worker_id``'s stream that it was paused or resumed."""
    body = f"{worker_id},{int(paused)}:{engine_id}"
    await notify_store.notify(db, notify_store.Notify(WORKER_PAUSE, body))


def parse_worker_pause(body: str) -> tuple[int, bool] | None:
    """``(worker_id, paused)`` from a ``stoker_worker_pause`` body."""
    worker, _, flag = body.partition(",")
    if not worker.isdigit() or flag not in ("0", "1"):
        return None
    return int(worker), flag == "1"


def parse_cancel(body: str) -> tuple[int, list[tuple[int, int]], str] | None:
    """``(worker_id, [(task_id, attempt)], reason)`` from a ``stoker_cancel`` body."""
    try:
        worker, items, reason = body.split(";", 2)
        pairs = [tuple(int(n) for n in i.split(".", 1)) for i in items.split(",") if i]
        return int(worker), [(p[0], p[1]) for p in pairs], reason
    except (ValueError, IndexError):
        return None


class Listener(LoopService):
    """Listens to the other replicas' signals and calls ``handlers[channel](tenant_id)``
    (``raw_handlers[channel](body)`` for channels whose body is not a tenant id), and
    ``on_connect()`` each time it is listening again."""

    name = "listener"

    def __init__(
        self,
        url: str,
        schema: str,
        engine_id: str,
        handlers: dict[str, Callable[[int], None]],
        raw_handlers: dict[str, Callable[[str], None]] | None = None,
        on_connect: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self._on_connect = on_connect
        self._url = url
        self._schema = schema
        self._engine_id = engine_id
        self._handlers = handlers
        self._raw = raw_handlers or {}
        self.connected = asyncio.Event()

    async def run(self) -> None:
        conn = await connect(self._url, self._schema)
        try:
            for channel in [*self._handlers, *self._raw]:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self.connected.set()
            if self._on_connect is not None:
                # Whatever was sent while this connection was down went unheard.
                self._on_connect()
            while not self.stopping.is_set():
                async for note in conn.notifies(timeout=1.0):
                    body, _, sender = note.payload.rpartition(":")
                    if sender == self._engine_id:
                        continue
                    raw = self._raw.get(note.channel)
                    if raw is not None:
                        raw(body)
                        continue
                    handler = self._handlers.get(note.channel)
                    if handler is not None and body.isdigit():
                        handler(int(body))
        finally:
            self.connected.clear()
            await conn.close()
