"""Waiting for runs to finish (the ``AwaitRuns`` long-poll).

Whatever ends an attempt in this process (the dispatcher's flush, the controllers) calls
:meth:`RunWatcher.finished` with the runs' external ids, which wakes their waiters at once.
A waiter also re-reads the database every ``poll_s`` seconds, which covers runs finished by
another engine replica.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from stoker.db import Executor, Row
from stoker.errors import NotFoundError


@dataclass(frozen=True, slots=True)
class RunIdsParams:
    tenant_id: int
    external_ids: list[uuid.UUID]


class RunWatcher:
    """Lets callers wait until any of a set of runs is finished."""

    def __init__(self, db: Executor, poll_s: float = 1.0) -> None:
        self._db = db
        self._poll_s = poll_s
        self._waiters: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._by_tenant: dict[int, set[asyncio.Event]] = {}

    def finished(self, external_ids: Iterable[uuid.UUID]) -> None:
        for run_id in external_ids:
            for event in self._waiters.get(run_id, ()):
                event.set()

    def tenant_finished(self, tenant_id: int) -> None:
        """Another replica finished some of the tenant's runs: every waiter re-reads."""
        for event in self._by_tenant.get(tenant_id, ()):
            event.set()

    async def wait(self, tenant_id: int, run_ids: list[uuid.UUID], timeout_s: float) -> list[Row]:
        """The finished runs among ``run_ids``, waiting up to ``timeout_s`` for one to finish.

        Raises NotFoundError when none of the ids is a run of this tenant.
        """
        params = RunIdsParams(tenant_id, run_ids)
        rows = await self._db.fetch("run_results", params)
        if rows:
            return rows
        known = await self._db.fetch("known_runs", params)
        if not known:
            raise NotFoundError(f"no run with id {', '.join(map(str, run_ids[:5]))}")
        event = asyncio.Event()
        for run_id in run_ids:
            self._waiters.setdefault(run_id, set()).add(event)
        self._by_tenant.setdefault(tenant_id, set()).add(event)
        deadline = time.monotonic() + timeout_s
        try:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    await asyncio.wait_for(event.wait(), timeout=min(left, self._poll_s))
                except TimeoutError:
                    pass
                event.clear()
                rows = await self._db.fetch("run_results", params)
                if rows:
                    return rows
            return []
        finally:
            tenant_waiters = self._by_tenant.get(tenant_id)
            if tenant_waiters is not None:
                tenant_waiters.discard(event)
                if not tenant_waiters:
                    del self._by_tenant[tenant_id]
            for run_id in run_ids:
                waiting = self._waiters.get(run_id)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiters[run_id]
