"""Which tasks have a live worker: so a caller hears at once that its run will wait.

A run of a task that no connected worker serves is accepted and waits in the queue (a
worker may connect later, and its ``schedule_timeout`` bounds the wait). The caller should
know: the trigger response names such tasks and the REST API shows a queued run's
``waiting_reason``.

Knowing it must cost nothing on the trigger hot path. Workers connected to this replica
are in memory (the dispatcher's conns): when they serve every requested task, no query is
made. Otherwise the answer comes from the ``worker`` table (live workers on any replica),
read at most once per tenant every ``max_age_s`` and shared by all triggers meanwhile. So a
task whose worker connected to another replica less than ``max_age_s`` ago may be reported
unserved once; a worker that died stays counted until it is declared dead.

The check is advice: it never holds a trigger's answer up. It gives up after
``answer_within_s`` (the runs are stored; the caller just hears nothing about workers), and
when the read fails (the database is unreachable), triggers of that tenant do not try it
again for ``max_age_s``: waiting callers must not queue up behind one failed read after
another, each waiting for a pooled connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from stoker.db import Executor
from stoker.db.store import workers as worker_store
from stoker.errors import DatabaseUnavailableError

log = logging.getLogger("stoker.engine.dispatcher")


@dataclass(frozen=True, slots=True)
class _Seen:
    at: float
    names: frozenset[str]


class ServedTasks:
    """The task names served by a tenant's live workers, cached for ``max_age_s``."""

    def __init__(
        self,
        db: Executor,
        local: Callable[[int], Iterable[frozenset[str]]] | None = None,
        *,
        max_age_s: float = 2.0,
        answer_within_s: float = 1.0,
    ) -> None:
        self._db = db
        self._local = local
        self._max_age = max_age_s
        self._answer_within = answer_within_s
        self._seen: dict[int, _Seen] = {}
        self._failed: dict[int, float] = {}  # tenant -> when its read last failed
        self._locks: dict[int, asyncio.Lock] = {}

    async def unserved(self, tenant_id: int, task_names: Iterable[str]) -> list[str]:
        """Those of ``task_names`` that no live worker of the tenant serves, sorted."""
        wanted = set(task_names)
        if self._local is not None:
            for names in self._local(tenant_id):
                wanted -= names
                if not wanted:
                    return []
        if not wanted:
            return []
        served = await self._served(tenant_id)
        return sorted(wanted - served)

    async def report(self, tenant_id: int, task_names: Iterable[str]) -> list[str]:
        """:meth:`unserved` for a trigger's response: [] when it cannot be told.

        The runs are stored by then; failing the call would make the caller retry it.
        """
        try:
            return await asyncio.wait_for(self.unserved(tenant_id, task_names), self._answer_within)
        except (TimeoutError, DatabaseUnavailableError):
            return []  # too slow to tell, or told moments ago that it cannot be told
        except Exception as exc:
            log.warning("cannot tell which tasks have live workers: %s", exc)
            return []

    async def _served(self, tenant_id: int) -> frozenset[str]:
        seen = self._seen.get(tenant_id)
        if seen is not None and time.monotonic() - seen.at < self._max_age:
            return seen.names
        lock = self._locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:  # one query per tenant however many triggers wait for it
            seen = self._seen.get(tenant_id)
            if seen is None or time.monotonic() - seen.at >= self._max_age:
                failed = self._failed.get(tenant_id)
                if failed is not None and time.monotonic() - failed < self._max_age:
                    raise DatabaseUnavailableError(
                        "the engine's database is unavailable (reading live workers failed "
                        "moments ago); retry shortly"
                    )
                try:
                    rows = await worker_store.served_task_names(
                        self._db, worker_store.ServedTaskNames(tenant_id)
                    )
                except Exception:
                    self._failed[tenant_id] = time.monotonic()
                    raise
                self._failed.pop(tenant_id, None)
                seen = _Seen(time.monotonic(), frozenset(r["task_name"] for r in rows))
                self._seen[tenant_id] = seen
        return seen.names
