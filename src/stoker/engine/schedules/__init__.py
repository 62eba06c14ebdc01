"""Scheduled runs: one run of a task or workflow to start at a given time.

A scheduled run is a row of ``scheduled_run``, not a queue item: nothing of it reaches the
queue until it is due, when the leader's schedules controller
(:mod:`stoker.engine.controllers.schedules`) creates its run through ingest. This module
is the request side: create (validated now: known task or workflow, payload, time), list,
get, update (reschedule, change input or metadata) and delete (by id or filter), each in
one statement or transaction.

* **A time in the past** fires at once (the controller finds it due on its next round,
  woken by the insert), unless the caller asks ``strict``: then the call is refused and
  nothing is stored.
* **Waking the controller.** Every create or reschedule sends ``stoker_schedules`` in its
  transaction (the leader may be another replica) and wakes this replica's controller
  after the commit, so a run due sooner than the controller's next wake-up is not late.
* **Retried calls.** ``CreateSchedules`` carries a request key
  (:mod:`stoker.engine.ingest.requests`) recorded in the insert's transaction: a retry
  answers with the first call's schedules.
* **Fired runs stay** as rows with their run id (``status`` FIRED, or FAILED with the
  reason the run was refused) and can no longer be changed or deleted.
"""

from __future__ import annotations

import builtins
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from stoker.db import Executor
from stoker.db.store import notify as notify_store
from stoker.db.store import schedules as store
from stoker.engine.definitions import Definitions
from stoker.engine.ingest import requests
from stoker.engine.ingest.requests import RequestKey
from stoker.engine.ingest.tasks import MAX_RUN_AT_MS, TriggerInput, check_payload
from stoker.engine.notify import SCHEDULES
from stoker.errors import InvalidRequestError, NotFoundError

MAX_LIST = 10_000
DEFAULT_LIST = 1_000
STATUSES = ("SCHEDULED", "FIRED", "FAILED")


@dataclass(frozen=True, slots=True)
class ScheduleInput:
    """One scheduled run to create, as received."""

    task_name: str
    workflow_name: str
    input: bytes
    additional_metadata: bytes
    priority: int
    run_at_ms: int


@dataclass(frozen=True, slots=True)
class ScheduleFilter:
    """Which scheduled runs a list or bulk delete applies to (empty: no condition)."""

    ids: list[uuid.UUID]
    names: list[str]
    statuses: list[str]
    since: datetime | None
    until: datetime | None
    metadata: str | None
    limit: int = DEFAULT_LIST

    @property
    def empty(self) -> bool:
        """No condition at all (a bulk delete refuses it)."""
        return not (
            self.ids or self.names or self.statuses or self.since or self.until or self.metadata
        )


def parse_ids(raw: list[str]) -> list[uuid.UUID]:
    """Schedule ids; NotFoundError naming one that is not an id."""
    ids = []
    for r in raw:
        try:
            ids.append(uuid.UUID(r))
        except ValueError:
            raise NotFoundError(f"no scheduled run with id {r!r}") from None
    return ids


def at_ms(ms: int, what: str) -> datetime:
    """An epoch-milliseconds time; InvalidRequestError outside 1970..9999."""
    if not 0 < ms <= MAX_RUN_AT_MS:
        raise InvalidRequestError(f"{what} {ms} is not a time between 1970 and 9999")
    return datetime.fromtimestamp(ms / 1000, UTC)


def check_metadata(raw: bytes, what: str) -> str | None:
    """A JSON object filter, as text (None: no filter)."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequestError(f"{what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{what} must be a JSON object")
    return json.dumps(value)


class Schedules:
    """Creates, reads, changes and deletes scheduled runs."""

    def __init__(
        self,
        db: Executor,
        definitions: Definitions,
        *,
        engine_id: str,
        max_payload_bytes: int,
        on_changed: Callable[[], None],
    ) -> None:
        self._db = db
        self._definitions = definitions
        self._engine_id = engine_id
        self._max_payload = max_payload_bytes
        self._on_changed = on_changed

    async def create(
        self,
        tenant_id: int,
        items: list[ScheduleInput],
        *,
        strict: bool,
        request: RequestKey | None = None,
    ) -> builtins.list[store.ScheduledRunRow]:
        """Stores the scheduled runs once every one is valid; their rows."""
        if not items:
            return []
        for item in items:
            if bool(item.task_name) == bool(item.workflow_name):
                raise InvalidRequestError(
                    "a scheduled run names exactly one of task_name and workflow_name"
                )
        await self._definitions.resolve(  # UnknownTaskError names what is registered
            tenant_id,
            [i.task_name for i in items if i.task_name],
            [i.workflow_name for i in items if i.workflow_name],
        )
        now = datetime.now(UTC)
        params = store.InsertScheduledRuns(tenant_id, [], [], [], [], [], [], [])
        for item in items:
            name = item.task_name or item.workflow_name
            who = f"{'task' if item.task_name else 'workflow'} {name!r}"
            check_payload(
                TriggerInput(name, item.input, item.additional_metadata, item.priority),
                self._max_payload,
                subject=f"scheduled run of {who}",
            )
            run_at = at_ms(item.run_at_ms, f"scheduled run of {who}: run_at_ms")
            if strict and run_at < now:
                raise InvalidRequestError(
                    f"scheduled run of {who}: {run_at.isoformat()} is in the past "
                    f"(now {now.isoformat()}) and strict=True; without strict it fires at once"
                )
            params.external_ids.append(uuid.uuid4())
            params.task_names.append(item.task_name)
            params.workflow_names.append(item.workflow_name)
            params.run_ats.append(run_at)
            params.inputs.append(item.input.decode() if item.input else "null")
            params.metadata.append(
                item.additional_metadata.decode() if item.additional_metadata else "{}"
            )
            params.priorities.append(item.priority)
        answer = await requests.recorded(self._db, tenant_id, request)
        if answer is not None:
            return await self._rows(tenant_id, answer.run_ids)
        try:
            async with self._db.transaction() as tx:
                rows = await store.insert_scheduled_runs(tx, params)
                await requests.record(
                    tx, tenant_id, requests.Call(request, [str(i) for i in params.external_ids])
                )
                await self._notify(tx)
        except requests.Replayed as replayed:
            return await self._rows(tenant_id, replayed.answer.run_ids)
        self._on_changed()
        order = {e: n for n, e in enumerate(params.external_ids)}
        return sorted(rows, key=lambda r: order[r["external_id"]])

    async def _rows(
        self, tenant_id: int, ids: builtins.list[str]
    ) -> builtins.list[store.ScheduledRunRow]:
        rows = await self.list(
            tenant_id,
            ScheduleFilter([uuid.UUID(i) for i in ids], [], [], None, None, None, MAX_LIST),
        )
        order = {uuid.UUID(e): n for n, e in enumerate(ids)}
        return sorted(rows, key=lambda r: order[r["external_id"]])

    async def _notify(self, tx: Executor) -> None:
        await notify_store.notify(tx, notify_store.Notify(SCHEDULES, f"0:{self._engine_id}"))

    async def list(self, tenant_id: int, f: ScheduleFilter) -> list[store.ScheduledRunRow]:
        """The scheduled runs matching ``f``, by time, at most ``f.limit``."""
        bad = set(f.statuses) - set(STATUSES)
        if bad:
            raise InvalidRequestError(
                f"unknown schedule status {sorted(bad)}; statuses are {', '.join(STATUSES)}"
            )
        if not 0 < f.limit <= MAX_LIST:
            raise InvalidRequestError(f"limit must be 1..{MAX_LIST}, got {f.limit}")
        return await store.list_scheduled_runs(
            self._db,
            store.ListScheduledRuns(
                tenant_id, f.ids, f.names, f.statuses, f.since, f.until, f.metadata, f.limit
            ),
        )

    async def get(self, tenant_id: int, external_id: uuid.UUID) -> store.ScheduledRunRow:
        """One scheduled run; NotFoundError for an unknown id."""
        rows = await self.list(
            tenant_id, ScheduleFilter([external_id], [], [], None, None, None, 1)
        )
        if not rows:
            raise NotFoundError(f"no scheduled run with id {external_id}")
        return rows[0]

    async def update(
        self,
        tenant_id: int,
        external_id: uuid.UUID,
        *,
        run_at_ms: int = 0,
        input: bytes = b"",
        additional_metadata: bytes = b"",
        strict: bool = False,
    ) -> store.ScheduledRunRow:
        """Reschedules a run not fired yet, or changes its input or metadata (empty:
        unchanged); NotFoundError for an unknown id, InvalidRequestError once it fired."""
        current = await self.get(tenant_id, external_id)
        name = current["task_name"] or current["workflow_name"] or ""
        who = f"scheduled run {external_id}"
        run_at = at_ms(run_at_ms, f"{who}: run_at_ms") if run_at_ms else None
        if run_at is not None and strict and run_at < datetime.now(UTC):
            raise InvalidRequestError(f"{who}: {run_at.isoformat()} is in the past and strict=True")
        check_payload(
            TriggerInput(name, input, additional_metadata), self._max_payload, subject=who
        )
        async with self._db.transaction() as tx:
            row = await store.update_scheduled_run(
                tx,
                store.UpdateScheduledRun(
                    tenant_id,
                    external_id,
                    run_at,
                    input.decode() if input else None,
                    additional_metadata.decode() if additional_metadata else None,
                ),
            )
            if row is not None and run_at is not None:
                await self._notify(tx)
        if row is None:
            now = await self.get(tenant_id, external_id)
            raise InvalidRequestError(
                f"{who} can no longer be changed: it is {now['status']}"
                + (f" (run {now['run_id']})" if now["run_id"] else "")
            )
        if run_at is not None:
            self._on_changed()
        return row

    async def delete(self, tenant_id: int, f: ScheduleFilter) -> builtins.list[str]:
        """Deletes the runs not fired yet that match ``f``; their ids. An empty filter is
        refused (it would delete everything by mistake)."""
        if f.empty:
            raise InvalidRequestError(
                "deleting scheduled runs needs ids or a filter (names, time range, metadata)"
            )
        if f.statuses and set(f.statuses) != {"SCHEDULED"}:
            raise InvalidRequestError("only SCHEDULED runs can be deleted")
        rows = await store.delete_scheduled_runs(
            self._db,
            store.DeleteScheduledRuns(tenant_id, f.ids, f.names, f.since, f.until, f.metadata),
        )
        return [str(r["external_id"]) for r in rows]


__all__ = ["ScheduleFilter", "ScheduleInput", "Schedules", "at_ms", "check_metadata", "parse_ids"]
