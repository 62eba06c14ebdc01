"""Wake-up hints to the workers running durable tasks whose logs were settled.

A hint names ``(task_id, attempt)``; the worker answers it by re-reading its log (``SYNC``),
so a hint carries no state and a duplicate or a stale one is harmless. A settlement whose
entries are at hand (an event's) is delivered instead (:meth:`Wakes.deliver`): the settled
entries in a ``DurableReply`` with no request id, which the worker applies as it would a
re-read's — the same state, without the round trip. A worker connected
to this replica gets it on its stream at once; one connected elsewhere through
``stoker_durable`` (``<worker_id>;<task_id>.<attempt>,...:<engine_id>``), which the replica
holding its stream passes on. A lost hint costs latency, not correctness: a worker whose
wait is past its deadline re-reads on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from stoker._proto import engine_pb2 as pb
from stoker.db import Executor
from stoker.db.store import notify as notify_store

log = logging.getLogger("stoker.engine.durable")

CHANNEL = "stoker_durable"

_CHUNK = 300  # items per notification, well under Postgres' 8,000-byte payload limit

Push = Callable[[int, pb.EngineMessage], bool]
"""Puts a message on the stream of a worker connected here; False when it is not."""


def message(items: Iterable[tuple[int, int]]) -> pb.EngineMessage:
    return pb.EngineMessage(
        durable_wakes=pb.DurableWakes(
            items=[pb.DurableWake(task_id=t, attempt=a) for t, a in items]
        )
    )


class Wakes:
    """Sends wake-up hints to workers, here or through the other replicas."""

    def __init__(self, db: Executor, push: Push, *, engine_id: str) -> None:
        self._db = db
        self._push = push
        self.engine_id = engine_id

    async def send(self, by_worker: dict[int, list[tuple[int, int]]]) -> None:
        """Hints each worker about its ``(task_id, attempt)`` items (after the commit that
        settled them)."""
        for worker_id, items in by_worker.items():
            if self._push(worker_id, message(items)):
                continue
            try:
                for i in range(0, len(items), _CHUNK):
                    body = ",".join(f"{t}.{a}" for t, a in items[i : i + _CHUNK])
                    await notify_store.notify(
                        self._db,
                        notify_store.Notify(CHANNEL, f"{worker_id};{body}:{self.engine_id}"),
                    )
            except Exception:
                log.exception("could not send a durable wake-up hint to worker %d", worker_id)

    async def deliver(
        self,
        by_worker: dict[int, list[tuple[int, int]]],
        settled: dict[int, list[pb.DurableEntry]],
    ) -> None:
        """Sends each worker connected here the entries just settled in its tasks' logs
        (``settled``: by task), as an unsolicited ``DurableReply`` (``request_id`` 0) that
        resolves the waits without a re-read; a worker connected elsewhere gets the hint
        instead. After the commit that settled them."""
        hints: dict[int, list[tuple[int, int]]] = {}
        for worker_id, items in by_worker.items():
            for task_id, attempt in items:
                reply = pb.DurableReply(
                    task_id=task_id, attempt=attempt, entries=settled.get(task_id, [])
                )
                if not self._push(worker_id, pb.EngineMessage(durable=reply)):
                    hints.setdefault(worker_id, []).append((task_id, attempt))
        if hints:
            await self.send(hints)

    def on_remote(self, body: str) -> None:
        """A ``stoker_durable`` signal of another replica: passed on if the worker is here."""
        try:
            worker, items = body.split(";", 1)
            pairs = [tuple(int(n) for n in i.split(".", 1)) for i in items.split(",") if i]
            self._push(int(worker), message((p[0], p[1]) for p in pairs))
        except (ValueError, IndexError):
            log.warning("ignoring a malformed durable wake-up signal %r", body[:200])
