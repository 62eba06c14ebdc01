"""Scheduled runs: ``task.schedule(at, input)`` / ``wf.schedule(...)`` and ``app.schedules``.

A scheduled run is stored by the engine and started by it at its time (README "Scheduled
runs"); until then it is no queue item and can be rescheduled, changed or deleted. Its
handle, :class:`ScheduledRun`, says when it fires, its status, and once fired the run it
started (:meth:`ScheduledRun.run`).
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pydantic_core

from stoker._core.wire import MAX_PRIORITY, MIN_PRIORITY, checked_json, encode_json
from stoker._proto import schedules_pb2 as spb
from stoker._sdk.calls import request_key
from stoker._sdk.refs import OutputDecoder, RunRef
from stoker.errors import NotFoundError

if TYPE_CHECKING:
    from stoker._sdk.calls import Connection

When = datetime | timedelta
"""A scheduled run's time: an aware datetime, or a delay from now."""

_OPTIONS = frozenset({"priority", "additional_metadata"})


def at_ms(at: When, what: str) -> int:
    """Epoch milliseconds of ``at``; TypeError/ValueError for a naive datetime or
    something that is no time."""
    if isinstance(at, timedelta):
        at = datetime.now(UTC) + at
    if not isinstance(at, datetime):
        raise TypeError(f"{what}: at must be a datetime or a timedelta, got {type(at).__name__}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(
            f"{what}: at={at.isoformat()} has no time zone; pass an aware datetime "
            "(e.g. datetime.now(UTC) + timedelta(minutes=5))"
        )
    return int(at.timestamp() * 1000)


def schedule_item(
    what: str,
    task_name: str,
    workflow_name: str,
    raw_input: bytes,
    at: When,
    options: Mapping[str, Any],
) -> spb.ScheduleItem:
    """The wire form of one scheduled run; TypeError/ValueError on bad options."""
    unknown = set(options) - _OPTIONS
    if unknown:
        raise TypeError(
            f"{what}: unknown schedule option(s) {', '.join(sorted(unknown))}; "
            f"a scheduled run takes {', '.join(sorted(_OPTIONS))} and strict"
        )
    priority = options.get("priority")
    if priority is not None and not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise ValueError(f"{what}: priority must be {MIN_PRIORITY}..{MAX_PRIORITY}")
    return spb.ScheduleItem(
        task_name=task_name,
        workflow_name=workflow_name,
        input=raw_input,
        additional_metadata=encode_json(
            options.get("additional_metadata") or {}, f"{what}: additional_metadata"
        ),
        priority=priority or 0,
        run_at_ms=at_ms(at, what),
    )


def _time(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


@dataclass(frozen=True)
class ScheduledRun:
    """A scheduled run as the engine stores it."""

    id: str
    task_name: str | None
    workflow_name: str | None
    at: datetime
    """When it fires (UTC)."""
    input: Any
    additional_metadata: dict[str, Any]
    priority: int
    status: str
    """``"SCHEDULED"``; then ``"FIRED"`` (``run_id`` set) or ``"FAILED"`` (``error``: why the
    engine refused the run, e.g. its task was unregistered)."""
    run_id: str | None
    error: str | None
    created_at: datetime
    fired_at: datetime | None
    _connection: Connection = field(repr=False, compare=False)
    _decoder: OutputDecoder[Any] | None = field(repr=False, compare=False, default=None)

    @classmethod
    def from_proto(
        cls, info: spb.ScheduleInfo, connection: Connection, decoder: OutputDecoder[Any] | None
    ) -> ScheduledRun:
        return cls(
            id=info.id,
            task_name=info.task_name or None,
            workflow_name=info.workflow_name or None,
            at=datetime.fromtimestamp(info.run_at_ms / 1000, UTC),
            input=json.loads(info.input) if info.input else None,
            additional_metadata=json.loads(info.additional_metadata)
            if info.additional_metadata
            else {},
            priority=info.priority,
            status=info.status,
            run_id=info.run_id or None,
            error=info.error or None,
            created_at=datetime.fromtimestamp(info.created_at_ms / 1000, UTC),
            fired_at=_time(info.fired_at_ms),
            _connection=connection,
            _decoder=decoder,
        )

    def run(self) -> RunRef[Any] | None:
        """The run it started (None until it fired): wait for it with ``result()``."""
        if self.run_id is None:
            return None
        return RunRef(self._connection, self.run_id, self._decoder)


class Schedules:
    """The tenant's scheduled runs (``app.schedules``): list, get, update, delete.

    An unknown id raises NotFoundError; a run that fired can no longer be changed
    (InvalidRequestError) and is left alone by deletes.
    """

    def __init__(
        self, connection: Connection, decoder: Callable[[str], OutputDecoder[Any] | None]
    ) -> None:
        self._connection = connection
        self._decoder = decoder
        """The app's task or workflow of a name (decodes outputs, validates new inputs)."""

    def _info(self, info: spb.ScheduleInfo) -> ScheduledRun:
        decoder = self._decoder(info.workflow_name or info.task_name)
        return ScheduledRun.from_proto(info, self._connection, decoder)

    # -- creating (task.schedule / wf.schedule call these) ------------------------------

    def create(
        self, items: Sequence[spb.ScheduleItem], *, strict: bool = False
    ) -> builtins.list[ScheduledRun]:
        """Stores scheduled runs (their items built by a task or workflow)."""
        req = spb.CreateSchedulesRequest(items=items, strict=strict, request_key=request_key())
        return [self._info(i) for i in self._connection.calls.create_schedules(req).schedules]

    async def aio_create(
        self, items: Sequence[spb.ScheduleItem], *, strict: bool = False
    ) -> builtins.list[ScheduledRun]:
        req = spb.CreateSchedulesRequest(items=items, strict=strict, request_key=request_key())
        resp = await self._connection.calls.aio_create_schedules(req)
        return [self._info(i) for i in resp.schedules]

    # -- reading ------------------------------------------------------------------------

    def list(
        self,
        *,
        task: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
        limit: int = 1000,
    ) -> builtins.list[ScheduledRun]:
        """Scheduled runs by time: of these tasks or workflows (names), in these statuses,
        due in ``[since, until)``, whose metadata contains ``additional_metadata``."""
        f = _filter(None, task, status, since, until, additional_metadata, limit)
        resp = self._connection.calls.list_schedules(spb.ListSchedulesRequest(filter=f))
        return [self._info(i) for i in resp.schedules]

    async def aio_list(
        self,
        *,
        task: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
        limit: int = 1000,
    ) -> builtins.list[ScheduledRun]:
        f = _filter(None, task, status, since, until, additional_metadata, limit)
        resp = await self._connection.calls.aio_list_schedules(spb.ListSchedulesRequest(filter=f))
        return [self._info(i) for i in resp.schedules]

    def get(self, schedule_id: str | ScheduledRun) -> ScheduledRun:
        """One scheduled run, as it is now; NotFoundError for an unknown id."""
        sid = _id(schedule_id)
        f = _filter([sid], None, None, None, None, None, 1)
        resp = self._connection.calls.list_schedules(spb.ListSchedulesRequest(filter=f))
        return self._one(resp.schedules, sid)

    async def aio_get(self, schedule_id: str | ScheduledRun) -> ScheduledRun:
        sid = _id(schedule_id)
        f = _filter([sid], None, None, None, None, None, 1)
        resp = await self._connection.calls.aio_list_schedules(spb.ListSchedulesRequest(filter=f))
        return self._one(resp.schedules, sid)

    def _one(self, found: Sequence[spb.ScheduleInfo], sid: str) -> ScheduledRun:
        if not found:
            raise NotFoundError(f"no scheduled run with id {sid}")
        return self._info(found[0])

    # -- changing -----------------------------------------------------------------------

    def _update_request(
        self,
        schedule_id: str | ScheduledRun,
        at: When | None,
        input: Any,
        additional_metadata: Mapping[str, Any] | None,
        strict: bool,
        current: ScheduledRun | None,
    ) -> spb.UpdateScheduleRequest:
        sid = _id(schedule_id)
        what = f"scheduled run {sid}"
        raw = b""
        if input is not _UNSET:
            local = None
            if current is not None:
                local = self._decoder(current.workflow_name or current.task_name or "")
            encode = getattr(local, "encode_input", None)
            raw = (
                encode(input)
                if encode is not None
                else checked_json(pydantic_core.to_json(input), f"{what}: input")
            )
        return spb.UpdateScheduleRequest(
            id=sid,
            run_at_ms=at_ms(at, what) if at is not None else 0,
            input=raw,
            additional_metadata=encode_json(dict(additional_metadata), f"{what}: metadata")
            if additional_metadata is not None
            else b"",
            strict=strict,
        )

    def update(
        self,
        schedule_id: str | ScheduledRun,
        *,
        at: When | None = None,
        input: Any = None,
        additional_metadata: Mapping[str, Any] | None = None,
        strict: bool = False,
    ) -> ScheduledRun:
        """Reschedules a run not fired yet (``at``), or replaces its input or metadata
        (validated against the task's input model when the task is declared on this app).
        NotFoundError for an unknown id; InvalidRequestError once it fired."""
        value = _UNSET if input is None else input
        current = self.get(schedule_id) if value is not _UNSET else None
        req = self._update_request(schedule_id, at, value, additional_metadata, strict, current)
        return self._info(self._connection.calls.update_schedule(req))

    async def aio_update(
        self,
        schedule_id: str | ScheduledRun,
        *,
        at: When | None = None,
        input: Any = None,
        additional_metadata: Mapping[str, Any] | None = None,
        strict: bool = False,
    ) -> ScheduledRun:
        value = _UNSET if input is None else input
        current = await self.aio_get(schedule_id) if value is not _UNSET else None
        req = self._update_request(schedule_id, at, value, additional_metadata, strict, current)
        return self._info(await self._connection.calls.aio_update_schedule(req))

    def delete(self, schedule_id: str | ScheduledRun) -> None:
        """Deletes a run not fired yet; NotFoundError for an unknown id, InvalidRequestError
        when it fired already."""
        sid = _id(schedule_id)
        f = _filter([sid], None, None, None, None, None, 0)
        if not self._connection.calls.delete_schedules(spb.DeleteSchedulesRequest(filter=f)).ids:
            self._not_deleted(self.get(sid))

    async def aio_delete(self, schedule_id: str | ScheduledRun) -> None:
        sid = _id(schedule_id)
        f = _filter([sid], None, None, None, None, None, 0)
        resp = await self._connection.calls.aio_delete_schedules(
            spb.DeleteSchedulesRequest(filter=f)
        )
        if not resp.ids:
            self._not_deleted(await self.aio_get(sid))

    @staticmethod
    def _not_deleted(current: ScheduledRun) -> None:
        from stoker.errors import InvalidRequestError

        raise InvalidRequestError(
            f"scheduled run {current.id} can no longer be deleted: it is {current.status}"
        )

    def bulk_delete(
        self,
        ids: Sequence[str] | None = None,
        *,
        task: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
    ) -> builtins.list[str]:
        """Deletes the runs not fired yet with these ids, or matching the filter (task or
        workflow names, due in ``[since, until)``, metadata containing
        ``additional_metadata``); the ids deleted. An empty filter is refused."""
        f = _filter(ids, task, None, since, until, additional_metadata, 0)
        return list(
            self._connection.calls.delete_schedules(spb.DeleteSchedulesRequest(filter=f)).ids
        )

    async def aio_bulk_delete(
        self,
        ids: Sequence[str] | None = None,
        *,
        task: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
    ) -> builtins.list[str]:
        f = _filter(ids, task, None, since, until, additional_metadata, 0)
        resp = await self._connection.calls.aio_delete_schedules(
            spb.DeleteSchedulesRequest(filter=f)
        )
        return list(resp.ids)


_UNSET: Any = object()


def _id(schedule_id: str | ScheduledRun) -> str:
    return schedule_id.id if isinstance(schedule_id, ScheduledRun) else schedule_id


def _filter(
    ids: Sequence[str] | None,
    names: str | Sequence[str] | None,
    status: str | Sequence[str] | None,
    since: datetime | None,
    until: datetime | None,
    additional_metadata: Mapping[str, Any] | None,
    limit: int,
) -> spb.ScheduleFilter:
    def strings(v: str | Sequence[str] | None) -> builtins.list[str]:
        if v is None:
            return []
        return [v] if isinstance(v, str) else list(v)

    return spb.ScheduleFilter(
        ids=list(ids or []),
        names=strings(names),
        statuses=[s.upper() for s in strings(status)],
        since_ms=at_ms(since, "since") if since else 0,
        until_ms=at_ms(until, "until") if until else 0,
        additional_metadata=encode_json(dict(additional_metadata), "filter additional_metadata")
        if additional_metadata
        else b"",
        limit=limit,
    )


__all__ = ["ScheduledRun", "Schedules", "When", "at_ms", "schedule_item"]
