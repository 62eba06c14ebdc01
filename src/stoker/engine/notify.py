"""Signals between engine replicas through Postgres LISTEN/NOTIFY.

A replica that enqueues runs sends ``stoker_queue`` and one that finishes runs sends
``stoker_finished``, each with ``<tenant_id>:<engine_id>`` as payload, from inside the
transaction that made the change (so the signal goes out exactly when the change is
visible). Every replica listens on one dedicated connection and wakes its scheduler or its
run watchers; a replica ignores its own signals, which it already acted on in memory.
Notifications are hints: the scheduler's poll and the watchers' re-reads cover a lost one,
and the connection is re-opened with backoff when it drops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from psycopg import sql

from stoker.db import Executor, connect
from stoker.engine.service import LoopService

log = logging.getLogger("stoker.engine.notify")

QUEUE = "stoker_queue"
FINISHED = "stoker_finished"


@dataclass(frozen=True, slots=True)
class NotifyParams:
    channel: str
    payload: str


async def send(db: Executor, channel: str, tenant_ids: set[int], engine_id: str) -> None:
    """Sends ``channel`` for each tenant (inside the caller's transaction when ``db`` is one)."""
    for tenant_id in sorted(tenant_ids):
        await db.execute("notify", NotifyParams(channel, f"{tenant_id}:{engine_id}"))


class Listener(LoopService):
    """Listens to the other replicas' signals and calls ``handlers[channel](tenant_id)``."""

    name = "listener"

    def __init__(
        self,
        url: str,
        schema: str,
        engine_id: str,
        handlers: dict[str, Callable[[int], None]],
    ) -> None:
        super().__init__()
        self._url = url
        self._schema = schema
        self._engine_id = engine_id
        self._handlers = handlers
        self.connected = asyncio.Event()

    async def run(self) -> None:
        conn = await connect(self._url, self._schema)
        try:
            for channel in self._handlers:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self.connected.set()
            while not self.stopping.is_set():
                async for note in conn.notifies(timeout=1.0):
                    tenant, _, sender = note.payload.partition(":")
                    handler = self._handlers.get(note.channel)
                    if handler is None or sender == self._engine_id or not tenant.isdigit():
                        continue
                    handler(int(tenant))
        finally:
            self.connected.clear()
            await conn.close()
