"""Run events: queued, assigned, started, retrying, finished — for one run or a filter.

A watch does not hook the hot paths (ingest, scheduler, dispatcher flush): it derives a
run's events from what Postgres already keeps, which is the same on every replica. A task
run's row says where its current attempt stands (status, worker, assigned and started
times) and ``task_event`` says how each earlier attempt ended (and whether it was retried).
:func:`history` turns those into the run's whole event list, in order; the list only
grows as the run moves on, so a watch re-reads its runs (every ``poll_s``, and at once
when this replica finished runs) and sends what was not sent yet. A subscriber that joins
late gets the events from the first (queued).

Between two reads a run may move more than one step (assigned and started within
milliseconds): both events are sent, in order, with their stored times. An attempt's own
steps are as exact as the row: an attempt that ended is reported assigned and started when
a worker held it.

A filtered watch (task name, metadata that the runs' metadata contains) follows the runs
created since it began (read from the live table every ``poll_s``) until each finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from stoker._core.status import FINAL
from stoker.db import Executor
from stoker.db.store import observe as store
from stoker.engine.signals import Signals
from stoker.errors import InvalidRequestError, NotFoundError

MAX_FOLLOWED = 10_000
"""A filtered watch follows at most this many unfinished runs at once."""


@dataclass(frozen=True, slots=True)
class RunEventOut:
    """One event of a run (see the module docstring)."""

    run_id: str
    task_run_id: str
    task_name: str
    kind: str
    attempt: int
    status: str
    at: datetime
    worker_id: str = ""
    worker_name: str = ""
    error: str = ""
    cursor: str = ""
    """Where a watch of one run stands after this event (the SSE event id): resuming
    from it gives the events after it."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "task_run_id": self.task_run_id,
            "task_name": self.task_name,
            "kind": self.kind,
            "attempt": self.attempt,
            "status": self.status,
            "at": self.at.isoformat(),
            "worker_id": self.worker_id or None,
            "worker_name": self.worker_name or None,
            "error": self.error or None,
        }


def _error_text(doc: Mapping[str, Any] | None) -> str:
    if not doc:
        return ""
    return f"{doc.get('type') or 'Error'}: {doc.get('message') or ''}"


def parse_cursor(cursor: str) -> list[int]:
    """A run-event cursor (``RunEventOut.cursor``) as per-task-run counts; InvalidRequestError
    for anything else."""
    if not cursor:
        return []
    parts = cursor.split(".")
    if len(parts) > MAX_FOLLOWED or not all(p.isdigit() and len(p) <= 6 for p in parts):
        raise InvalidRequestError(f"not a run-event id: {cursor[:100]!r}")
    return [int(p) for p in parts]


def history(task: store.WatchedTask, ends: Sequence[store.AttemptEnd]) -> list[RunEventOut]:
    """Every event of one task run so far, oldest first."""
    run_id, task_run = str(task["run_id"]), str(task["external_id"])
    name = task["task_name"]
    now = datetime.now(UTC)

    def ev(kind: str, attempt: int, status: str, at: datetime | None, **extra: str) -> RunEventOut:
        return RunEventOut(run_id, task_run, name, kind, attempt, status, at or now, **extra)

    if task["status"] == "PENDING":
        return []  # a workflow step waiting for its parents: not queued yet
    out = [ev("queued", 0, "QUEUED", task["created_at"])]
    by_attempt = {e["attempt"]: e for e in ends}
    current = task["attempt"]
    for n in range(current):  # attempts count from 0
        end = by_attempt.get(n)
        if end is None:
            continue  # an attempt requeued without a record (an eviction's restore)
        worker = {
            "worker_id": str(end["worker_external_id"] or ""),
            "worker_name": end["worker_name"] or "",
        }
        if end["worker_external_id"] is not None:
            out.append(ev("assigned", n, "ASSIGNED", end["created_at"], **worker))
            out.append(ev("started", n, "RUNNING", end["created_at"], **worker))
        data = end["data"] or {}
        out.append(
            ev("retrying", n, "QUEUED", end["created_at"], error=_error_text(data.get("error")))
        )
        out.append(ev("queued", n + 1, "QUEUED", end["created_at"]))
    status = task["status"]
    worker = {
        "worker_id": str(task["worker_external_id"] or ""),
        "worker_name": task["worker_name"] or "",
    }
    last_end = by_attempt.get(current)
    if status in ("ASSIGNED", "RUNNING") or (task["assigned_at"] is not None and status in FINAL):
        if last_end is not None and last_end["worker_external_id"] is not None:
            worker = {
                "worker_id": str(last_end["worker_external_id"]),
                "worker_name": last_end["worker_name"] or "",
            }
        out.append(ev("assigned", current, "ASSIGNED", task["assigned_at"], **worker))
        if status == "RUNNING" or (status in FINAL and task["started_at"] is not None):
            out.append(ev("started", current, "RUNNING", task["started_at"], **worker))
    if status in FINAL:
        out.append(
            ev("finished", current, status, task["finished_at"], error=_error_text(task["error"]))
        )
    return out


class RunFeed:
    """Watches of runs' events (see the module docstring)."""

    def __init__(self, db: Executor, signals: Signals | None = None, poll_s: float = 0.25) -> None:
        self._db = db
        self._poll_s = poll_s
        self._watches: set[asyncio.Event] = set()
        if signals is not None:
            signals.on_finished(lambda _ids: self._wake())
            signals.on_tenant_finished(lambda _tenant: self._wake())

    @property
    def watching(self) -> int:
        """Watches open here now."""
        return len(self._watches)

    def _wake(self) -> None:
        for event in self._watches:
            event.set()

    async def watch(
        self,
        tenant_id: int,
        *,
        run_id: uuid.UUID | None = None,
        task_name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        resume: Sequence[int] = (),
    ) -> AsyncGenerator[RunEventOut, None]:
        """The events of one run (ends after it finished; after the event whose
        ``cursor`` :func:`parse_cursor` gave ``resume``) or of the runs matching the
        filter (until closed). NotFoundError for an unknown run id."""
        event = asyncio.Event()
        self._watches.add(event)
        try:
            if run_id is not None:
                async for e in self._one(tenant_id, run_id, event, resume):
                    yield e
            else:
                async for e in self._filtered(tenant_id, task_name, dict(metadata or {}), event):
                    yield e
        finally:
            self._watches.discard(event)

    async def _read(
        self, tenant_id: int, run_ids: list[uuid.UUID]
    ) -> list[tuple[store.WatchedTask, list[store.AttemptEnd]]]:
        tasks = await store.watch_tasks(self._db, store.WatchTasks(tenant_id, run_ids))
        retried = [t["id"] for t in tasks if t["attempt"] > 0 or t["status"] == "FAILED"]
        ends: dict[int, list[store.AttemptEnd]] = {}
        if retried:
            for e in await store.watch_attempt_ends(
                self._db, store.WatchAttemptEnds(tenant_id, retried)
            ):
                ends.setdefault(e["task_id"], []).append(e)
        tasks.sort(key=lambda t: (t["created_at"], t["id"]))
        return [(t, ends.get(t["id"], [])) for t in tasks]

    async def _wait(self, event: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=self._poll_s)
        event.clear()

    async def _one(
        self, tenant_id: int, run_id: uuid.UUID, event: asyncio.Event, resume: Sequence[int]
    ) -> AsyncGenerator[RunEventOut, None]:
        found = await store.find_run(self._db, store.FindRun(tenant_id, run_id))
        if found is None:
            raise NotFoundError(f"no run with id {run_id}")
        # How many events of each of the run's task runs were sent, in the order _read
        # gives them (creation): the cursor is this list, so a client that resumes says
        # where it stands for every task run (a workflow's steps advance independently).
        position: dict[int, int] = {}
        sent: list[int] = []
        while True:
            event.clear()
            done = True
            for task, ends in await self._read(tenant_id, [run_id]):
                at = position.get(task["id"], -1)
                if at < 0:
                    at = position[task["id"]] = len(sent)
                    sent.append(resume[at] if at < len(resume) else 0)
                events = history(task, ends)
                for e in events[sent[at] :]:
                    sent[at] += 1
                    yield replace(e, cursor=".".join(map(str, sent)))
                done &= task["status"] in FINAL
            run = await store.find_run(self._db, store.FindRun(tenant_id, run_id))
            if done and (run is None or run["status"] in FINAL):
                return
            await self._wait(event)

    async def _filtered(
        self, tenant_id: int, task_name: str | None, metadata: dict[str, Any], event: asyncio.Event
    ) -> AsyncGenerator[RunEventOut, None]:
        since = datetime.now(UTC)
        seen: set[uuid.UUID] = set()  # the runs taken up that were created at ``since``
        followed: dict[uuid.UUID, None] = {}
        sent: dict[int, int] = {}
        md = json.dumps(metadata)
        while True:
            event.clear()
            new = await store.watch_new_tasks(
                self._db, store.WatchNewTasks(tenant_id, since, task_name, md, 1000)
            )
            for row in new:
                if row["external_id"] not in seen and len(followed) < MAX_FOLLOWED:
                    followed[row["external_id"]] = None
            if new:
                newest = new[-1]["created_at"]
                if newest > since:
                    since, seen = newest, set()
                seen.update(r["external_id"] for r in new if r["created_at"] == newest)
            if followed:
                for task, ends in await self._read(tenant_id, list(followed)):
                    events = history(task, ends)
                    for e in events[sent.get(task["id"], 0) :]:
                        yield e
                    sent[task["id"]] = len(events)
                    if task["status"] in FINAL:
                        followed.pop(task["external_id"], None)
                        sent.pop(task["id"], None)
            if len(new) < 1000:
                await self._wait(event)
