"""Live streams: the chunks running attempts publish, stored and fanned out to subscribers.

A worker sends ``ctx.put_stream`` chunks on its stream; the dispatcher hands the chunks of
attempts the connection holds to :meth:`Streams.take`. One writer task stores whatever
waits in one statement as soon as it can (while one write runs, the next chunks gather:
group commit without a timer, which keeps a chunk's latency at one round trip under light
load). In the same transaction it sends ``stoker_stream`` with the task ids written, so a
subscriber on another replica reads them at once; after commit the local subscribers of
those tasks are woken. A lost notification costs at most ``poll_s``: a subscriber re-reads
on its own that often.

Chunks are rows of ``task_stream``: a subscriber that joins late reads the attempt's
stream from its first chunk. They are kept for ``retention_s`` (the writer deletes older
ones every minute, or every half retention if that is shorter), and each is at most the
payload limit (the SDK refuses a larger chunk before sending it; the engine drops one that
gets here anyway). The engine stores at most ``attempt_max_bytes`` of one attempt's stream
whatever bound its worker applies: later chunks are dropped (and counted), the end row
still closes the stream.

A stream ends when its attempt ends: the worker closes it with an end row once the
attempt finished (after its last chunk). An attempt that ends without one (its worker
died) is noticed by its state: once the attempt is no longer current or its run is
final, and a last read after ``end_grace_s`` found nothing more, the stream ends.

A subscriber is one async generator (:meth:`Streams.read`) holding one wake-up event
in :attr:`Streams._waiting`; closing the generator (an SSE client that went away, a
cancelled gRPC call) removes it, so nothing stays behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field

from stoker._core.status import FINAL
from stoker._proto import observe_pb2 as opb
from stoker.db import Executor, NoParams
from stoker.db.store import notify as notify_store
from stoker.db.store import observe as store
from stoker.engine.service import LoopService
from stoker.errors import InvalidRequestError, NotFoundError

log = logging.getLogger("stoker.engine.streams")

CHANNEL = "stoker_stream"
"""NOTIFY channel: chunks of the tasks in the body (``<task_id>,...:<engine_id>``) were
stored."""

_MAX_NOTIFY = 7_000
_LIVE_MAX = 1_000
"""Chunks handed live to one reader that has not taken them yet; past it, it reads the
database (it notices the gap in the sequence numbers)."""


@dataclass(eq=False)
class _Reader:
    """One subscriber: its wake-up, and chunks handed to it live (before they are stored)."""

    attempt: int
    event: asyncio.Event = field(default_factory=asyncio.Event)
    live: deque[store.ChunkRow] = field(default_factory=lambda: deque(maxlen=_LIVE_MAX))


class Streams(LoopService):
    """Stores stream chunks and serves them to subscribers, live and late."""

    name = "streams"

    def __init__(
        self,
        db: Executor,
        *,
        engine_id: str = "",
        max_chunk_bytes: int = 4 * 1024 * 1024,
        retention_s: float = 3600.0,
        attempt_max_bytes: int = 64 * 1024 * 1024,
        poll_s: float = 1.0,
        end_grace_s: float = 0.5,
    ) -> None:
        super().__init__()
        self._db = db
        self._engine_id = engine_id
        self._max_chunk = max_chunk_bytes
        self.retention_s = retention_s
        self.attempt_max_bytes = attempt_max_bytes
        self._stored: dict[tuple[int, int], list[float]] = {}
        """Bytes taken of each attempt whose stream has not ended, and when its first chunk
        came: ``[bytes, monotonic time]`` (forgotten at its end or after the retention)."""
        self._poll_s = poll_s
        self._end_grace_s = end_grace_s
        self._pending: list[tuple[int, opb.StreamPut]] = []
        self._work = self.signal()
        self._waiting: dict[int, set[_Reader]] = {}
        self._pruned_at = 0.0
        self.dropped = 0
        """Chunks over the size limit, or past the attempt's ``attempt_max_bytes``, that
        were dropped (the SDK refuses them first under its own bounds)."""

    @property
    def subscribers(self) -> int:
        """Subscribers reading a stream here now."""
        return sum(len(s) for s in self._waiting.values())

    # -- writing ------------------------------------------------------------------------

    def take(self, tenant_id: int, chunks: Iterable[opb.StreamPut]) -> None:
        """Queues chunks of attempts the sending worker holds (checked by the dispatcher)."""
        waiting = self._waiting
        stored = self._stored
        for c in chunks:
            if len(c.data) > self._max_chunk or c.seq <= 0:
                self.dropped += 1
                continue
            key = (c.task_id, c.attempt)
            if c.end:
                stored.pop(key, None)
            else:
                taken = stored.get(key)
                if taken is None:
                    taken = stored[key] = [0, time.monotonic()]
                if taken[0] + len(c.data) > self.attempt_max_bytes:
                    # Past the attempt's bound: dropped (readers skip the gap in the
                    # sequence numbers); the end row still closes the stream.
                    self.dropped += 1
                    continue
                taken[0] += len(c.data)
            self._pending.append((tenant_id, c))
            # Readers here get the chunk at once; the stored row serves late readers,
            # readers on other replicas and any gap.
            for reader in waiting.get(c.task_id, ()):
                if reader.attempt == c.attempt:
                    reader.live.append(
                        {"seq": c.seq, "data": c.data, "is_text": c.text, "is_end": c.end}
                    )
                    reader.event.set()
        if self._pending:
            self._work.set()

    async def run(self) -> None:
        prune_every = min(60.0, self.retention_s / 2)
        while not self.stopping.is_set():
            await self._work.wait(prune_every)
            await self.flush()
            if time.monotonic() - self._pruned_at >= prune_every:
                self._pruned_at = time.monotonic()
                await self.prune()
        await self.flush()

    async def flush(self) -> None:
        """Stores what waits, notifies the other replicas and wakes local subscribers."""
        while self._pending:
            batch, self._pending = self._pending[:1000], self._pending[1000:]
            tasks = sorted({c.task_id for _, c in batch})
            try:
                async with self._db.transaction() as tx:
                    await store.relaxed_commit(tx, NoParams())
                    await store.insert_stream_chunks(
                        tx,
                        store.InsertStreamChunks(
                            task_ids=[c.task_id for _, c in batch],
                            attempts=[c.attempt for _, c in batch],
                            seqs=[c.seq for _, c in batch],
                            tenant_ids=[t for t, _ in batch],
                            datas=[c.data for _, c in batch],
                            texts=[c.text for _, c in batch],
                            ends=[c.end for _, c in batch],
                        ),
                    )
                    await self._notify(tx, tasks)
            except Exception:
                self._pending[:0] = batch
                raise
            self.wake(tasks)

    async def _notify(self, tx: Executor, tasks: list[int]) -> None:
        tail = f":{self._engine_id}"
        body: list[str] = []
        size = len(tail)
        for t in tasks:
            part = str(t)
            if body and size + len(part) + 1 > _MAX_NOTIFY:
                await notify_store.notify(tx, notify_store.Notify(CHANNEL, ",".join(body) + tail))
                body, size = [], len(tail)
            body.append(part)
            size += len(part) + 1
        if body:
            await notify_store.notify(tx, notify_store.Notify(CHANNEL, ",".join(body) + tail))

    async def prune(self) -> int:
        """Deletes chunks older than the retention; returns how many."""
        horizon = time.monotonic() - self.retention_s
        for key in [k for k, (_, first) in self._stored.items() if first < horizon]:
            del self._stored[key]  # an attempt that never sent its end
        total = 0
        while True:
            n = await store.prune_streams(
                self._db, store.PruneStreams(older_than_s=self.retention_s, limit=5000)
            )
            total += n
            if n < 5000:
                return total

    # -- waking -------------------------------------------------------------------------

    def wake(self, task_ids: Iterable[int]) -> None:
        """Chunks of these tasks were stored: their subscribers read on."""
        for t in task_ids:
            for reader in self._waiting.get(t, ()):
                reader.event.set()

    def on_remote(self, body: str) -> None:
        """``stoker_stream`` from another replica."""
        self.wake(int(t) for t in body.split(",") if t.isdigit())

    # -- reading ------------------------------------------------------------------------

    async def resolve(
        self, tenant_id: int, run_id: uuid.UUID, attempt: int, exact: bool = False
    ) -> tuple[int, int]:
        """``(task_id, attempt)`` of a task run's stream (``attempt`` 0: the latest, unless
        ``exact``); NotFoundError for an unknown run, InvalidRequestError for a workflow
        run or an attempt that never was."""
        found = await store.find_run(self._db, store.FindRun(tenant_id, run_id))
        if found is None:
            raise NotFoundError(f"no run with id {run_id}")
        if found["is_workflow"] or found["task_id"] is None or found["attempt"] is None:
            raise InvalidRequestError(
                f"run {run_id} is a workflow run: read the stream of one of its task runs"
            )
        if attempt < 0 or attempt > found["attempt"]:
            raise InvalidRequestError(
                f"run {run_id} has no attempt {attempt} (its latest is {found['attempt']})"
            )
        return found["task_id"], attempt if exact else attempt or found["attempt"]

    async def read(
        self, tenant_id: int, task_id: int, attempt: int, after: int = 0
    ) -> AsyncGenerator[store.ChunkRow, None]:
        """The attempt's chunks from the first (or the one after sequence number
        ``after``: a client resuming), live until the attempt ends."""
        reader = _Reader(attempt)
        event = reader.event
        self._waiting.setdefault(task_id, set()).add(reader)
        ended_at: float | None = None
        try:
            while True:
                event.clear()
                # Chunks handed over live, while they follow on; else the database.
                gap = progressed = False
                while reader.live:
                    row = reader.live.popleft()
                    if row["seq"] <= after:
                        continue
                    if row["seq"] != after + 1:
                        gap = True
                        reader.live.clear()
                        break
                    if row["is_end"]:
                        return
                    after = row["seq"]
                    ended_at = None
                    progressed = True
                    yield row
                if progressed and not gap:
                    # Up to date: wait for the next chunk before asking the database.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(event.wait(), timeout=self._poll_s)
                    continue
                rows = await store.read_stream(
                    self._db, store.ReadStream(tenant_id, task_id, attempt, after, 500)
                )
                for row in rows:
                    if row["is_end"]:
                        return
                    after = row["seq"]
                    yield row
                if len(rows) == 500:
                    continue
                if rows:
                    ended_at = None
                    continue
                if reader.live:
                    continue
                if ended_at is None:
                    now = await store.attempt_state(self._db, store.AttemptState(task_id))
                    if now is None or now["attempt"] != attempt or now["status"] in FINAL:
                        # Ended without an end row so far: one more look after the grace.
                        ended_at = time.monotonic()
                elif time.monotonic() - ended_at >= self._end_grace_s:
                    return
                timeout = self._poll_s if ended_at is None else self._end_grace_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=timeout)
        finally:
            waiting = self._waiting.get(task_id)
            if waiting is not None:
                waiting.discard(reader)
                if not waiting:
                    del self._waiting[task_id]
