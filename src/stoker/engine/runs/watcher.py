"""Waiting for runs to finish (the ``AwaitRuns`` long-poll).

A call first reads the runs it names in one query (``run_states``): unknown ids are a
``NotFoundError``, finished runs are returned at once. Otherwise it registers a waiter.

Whatever ends runs in this process says so through :mod:`stoker.engine.signals`, to which
the watcher subscribes: after each commit, :meth:`RunWatcher.finished` gets the external
ids of the runs that transaction finished. The ids
that someone waits for are read back **in one batch** (``run_results_by_ids``) by a single
reader task, however many waiters and flushes there are, and each waiter gets the rows of
its own runs (of its own tenant). So a burst of a thousand finished runs costs one query,
not a thousand.

Runs finished by another replica are announced by ``stoker_finished`` per tenant
(:meth:`Signals.remote_finished <stoker.engine.signals.Signals.remote_finished>` calls
:meth:`tenant_finished`): every run the tenant's waiters wait for is read back, in the
same batch. A waiter also re-reads on its own every ``poll_s`` seconds, which covers a lost
notification.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from stoker._core.status import FINAL
from stoker.db import Executor
from stoker.db.store import inbox as inbox_store
from stoker.db.store import runs as run_store
from stoker.engine.signals import Signals
from stoker.errors import NotFoundError

log = logging.getLogger("stoker.engine.runs")


@dataclass(eq=False)
class _Waiter:
    tenant_id: int
    run_ids: list[uuid.UUID]
    rows: list[run_store.RunState] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)


class RunWatcher:
    """Lets callers wait until any of a set of runs is finished."""

    def __init__(self, db: Executor, signals: Signals, poll_s: float = 1.0) -> None:
        self._db = db
        signals.on_finished(self.finished)
        signals.on_tenant_finished(self.tenant_finished)
        self._poll_s = poll_s
        self._waiters: dict[uuid.UUID, set[_Waiter]] = {}
        self._by_tenant: dict[int, set[_Waiter]] = {}
        self._pending: set[uuid.UUID] = set()
        self._reader: asyncio.Task[None] | None = None
        self.batches = 0
        """Batched reads done (for tests and the curious)."""

    def finished(self, external_ids: Iterable[uuid.UUID]) -> None:
        """Runs that ended in this process: their waiters get their rows soon."""
        self._pending.update(i for i in external_ids if i in self._waiters)
        self._kick()

    def tenant_finished(self, tenant_id: int) -> None:
        """Another replica finished some of the tenant's runs: read back what is waited for."""
        for waiter in self._by_tenant.get(tenant_id, ()):
            self._pending.update(waiter.run_ids)
        self._kick()

    def _kick(self) -> None:
        if self._pending and (self._reader is None or self._reader.done()):
            self._reader = asyncio.get_running_loop().create_task(
                self._read_pending(), name="stoker-run-results"
            )

    async def _read_pending(self) -> None:
        """Reads the pending runs in batches until none is left, handing rows to waiters."""
        while self._pending:
            ids, self._pending = sorted(self._pending), set()
            try:
                rows = await run_store.run_results_by_ids(self._db, run_store.RunResultsByIds(ids))
            except Exception:
                # The waiters' own polls cover what this batch would have delivered.
                log.exception("reading %d finished runs failed", len(ids))
                return
            self.batches += 1
            for row in rows:
                for waiter in self._waiters.get(row["external_id"], ()):
                    if waiter.tenant_id == row["tenant_id"]:
                        waiter.rows.append(row)
                        waiter.event.set()

    async def _states(
        self, params: run_store.RunStates, aliases: dict[uuid.UUID, uuid.UUID]
    ) -> list[run_store.RunState]:
        """The runs' states: from the live tables, from history for the ids not found live
        (runs finished a while ago have moved there; docs/storage.md), and from the inbox
        for ids enqueued in an application's transaction and not yet drained (QUEUED) or
        drained without a run of their own (:mod:`stoker.engine.inbox`): a refused one is
        FAILED with the reason, a deduplicated one answers with the live run its key named
        (recorded in ``aliases``: requested id -> that run's id)."""
        known = await run_store.run_states(self._db, params)
        if len(known) < len(set(params.external_ids)):
            found = {r["external_id"] for r in known}
            missing = [i for i in params.external_ids if i not in found]
            known += await run_store.run_states_history(
                self._db, run_store.RunStates(params.tenant_id, missing)
            )
        if len(known) < len(set(params.external_ids)):
            found = {r["external_id"] for r in known}
            inbox = await self._inbox_states(params, found, aliases)
            known += inbox
            found |= {r["external_id"] for r in inbox} | set(aliases)
            missing = [i for i in params.external_ids if i not in found]
            if missing:
                # Drained between the two reads: the drain deletes the inbox row and
                # writes the run in one transaction, so the run is there now.
                known += await run_store.run_states(
                    self._db, run_store.RunStates(params.tenant_id, missing)
                )
        return known

    async def _inbox_states(
        self,
        params: run_store.RunStates,
        found: set[uuid.UUID],
        aliases: dict[uuid.UUID, uuid.UUID],
    ) -> list[run_store.RunState]:
        missing = [i for i in params.external_ids if i not in found]
        rows = await inbox_store.inbox_states(
            self._db, inbox_store.InboxStates(params.tenant_id, missing)
        )
        states: list[run_store.RunState] = []
        for row in rows:
            run_id = row["run_id"]
            if row["pending"]:
                states.append(
                    run_store.RunState(
                        external_id=row["external_id"], status="QUEUED", output=None, error=None
                    )
                )
            elif run_id is None:
                states.append(
                    run_store.RunState(
                        external_id=row["external_id"],
                        status="FAILED",
                        output=None,
                        error={
                            "type": "EnqueueRefused",
                            "message": row["error"] or "",
                            "traceback": "",
                        },
                    )
                )
            else:
                aliases[row["external_id"]] = run_id
        if aliases:
            named = {v: k for k, v in aliases.items()}
            targets = run_store.RunStates(params.tenant_id, sorted(named))
            for state in await self._states(targets, {}):
                states.append(
                    run_store.RunState(
                        external_id=named[state["external_id"]],
                        status=state["status"],
                        output=state["output"],
                        error=state["error"],
                    )
                )
        return states

    async def finished_now(
        self, tenant_id: int, run_ids: list[str]
    ) -> list[run_store.FinishedRunState]:
        """The runs among ``run_ids`` (canonical UUID text) that are finished in the live
        tables, in one statement and without waiting: the long poll's first read, which for
        results of finished runs is the only one. Empty when none is (the caller then
        :meth:`wait`s, which also looks in history and the inbox)."""
        literal = "{" + ",".join(run_ids) + "}"
        return await run_store.finished_run_states(
            self._db, run_store.FinishedRunStates(tenant_id, literal)
        )

    async def wait(
        self,
        tenant_id: int,
        run_ids: list[uuid.UUID],
        timeout_s: float,
        unknown: list[uuid.UUID] | None = None,
    ) -> list[run_store.RunState]:
        """The finished runs among ``run_ids``, waiting up to ``timeout_s`` for one to finish.

        Raises NotFoundError when none of the ids is a run of this tenant. ``unknown``: a
        list that gets the ids that name no run when others do; then the call returns at
        once (the caller can tell those apart without waiting for the others).
        """
        params = run_store.RunStates(tenant_id, run_ids)
        # Registered before the first read, so a run that ends meanwhile is not missed.
        waiter = _Waiter(tenant_id, run_ids)
        watched = list(run_ids)
        for run_id in watched:
            self._waiters.setdefault(run_id, set()).add(waiter)
        self._by_tenant.setdefault(tenant_id, set()).add(waiter)
        deadline = time.monotonic() + timeout_s
        aliases: dict[uuid.UUID, uuid.UUID] = {}
        try:
            known = await self._states(params, aliases)
            if not known:
                raise NotFoundError(f"no run with id {', '.join(map(str, run_ids[:5]))}")
            if unknown is not None:
                seen = {r["external_id"] for r in known} | set(aliases)
                unknown.extend(i for i in dict.fromkeys(run_ids) if i not in seen)
            named = {v: k for k, v in aliases.items()}
            for target in named:  # deduplicated ids: wake on the run they answer with
                self._waiters.setdefault(target, set()).add(waiter)
                watched.append(target)
            done = [r for r in known if r["status"] in FINAL]
            if done or unknown:
                return done
            while (left := deadline - time.monotonic()) > 0:
                try:
                    await asyncio.wait_for(waiter.event.wait(), timeout=min(left, self._poll_s))
                except TimeoutError:
                    done = [r for r in await self._states(params, aliases) if r["status"] in FINAL]
                    if done:
                        return done
                    continue
                waiter.event.clear()
                if waiter.rows:
                    rows = [
                        run_store.RunState(
                            external_id=named.get(r["external_id"], r["external_id"]),
                            status=r["status"],
                            output=r["output"],
                            error=r["error"],
                        )
                        for r in waiter.rows
                    ]
                    return list({r["external_id"]: r for r in rows}.values())
            return []
        finally:
            tenant_waiters = self._by_tenant.get(tenant_id)
            if tenant_waiters is not None:
                tenant_waiters.discard(waiter)
                if not tenant_waiters:
                    del self._by_tenant[tenant_id]
            for run_id in watched:
                waiting = self._waiters.get(run_id)
                if waiting is not None:
                    waiting.discard(waiter)
                    if not waiting:
                        del self._waiters[run_id]
