"""``app.events`` and ``app.filters``: user events and the filters of their subscribers.

An event pushed with ``app.events.push(key, payload)`` is stored, starts a run of every
task and workflow subscribed to its key (``on_events``; their filters decide), and satisfies
the waits for it (workflow conditions, durable waits), all in one transaction. Stored
events are listed, read with the runs they started, and replayed. README "Events".
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pydantic_core

from stoker._core.events import key_problem
from stoker._core.wire import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    checked_json,
    encode_json,
    message_limit,
    split_batches,
)
from stoker._proto import events_pb2 as epb
from stoker._proto import workflows_pb2 as wpb
from stoker._sdk.calls import request_key
from stoker._sdk.refs import RunRef
from stoker._sdk.schedules import When, at_ms
from stoker.errors import InvalidRequestError, PayloadTooLargeError

if TYPE_CHECKING:
    from stoker._sdk.calls import Connection
    from stoker._sdk.task import Task
    from stoker._sdk.workflow import Workflow

# bulk_push sends at most this many events per call (each call is one transaction).
_PUSH_BATCH = 1000


@dataclass(frozen=True, slots=True)
class PushedEvent:
    """A pushed event: its id, the runs it started (``runs``: references to wait on, their
    ids in ``run_ids``), and how many waiting conditions (workflow conditions, durable
    waits) it satisfied."""

    event_id: str
    run_ids: list[str]
    satisfied: int
    runs: list[RunRef[Any]] = field(default_factory=list, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class EventPush:
    """One event of a ``bulk_push``."""

    key: str
    payload: Any = None
    scope: str | None = None
    additional_metadata: Mapping[str, Any] | None = None
    priority: int | None = None


@dataclass(frozen=True, slots=True)
class EventRun:
    """A run an event started: ``replay`` 0 by its push, n by its n-th replay; ``filter_id``
    the filter that let it through (None: no filter applied); ``status`` now."""

    run_id: str
    task_name: str | None
    workflow_name: str | None
    filter_id: str | None
    replay: int
    status: str | None
    triggered_at: datetime | None


@dataclass(frozen=True, slots=True)
class EventInfo:
    """A stored event. ``payload`` and ``runs`` are filled by ``app.events.get``."""

    id: str
    key: str
    scope: str | None
    additional_metadata: dict[str, Any]
    priority: int
    created_at: datetime | None
    run_count: int
    payload: Any = None
    runs: list[EventRun] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FilterInfo:
    """A filter of an event subscriber (``source`` "code": declared with default_filters)."""

    id: str
    task_name: str | None
    workflow_name: str | None
    scope: str | None
    expression: str
    payload: dict[str, Any]
    source: str
    created_at: datetime | None
    updated_at: datetime | None


def _time(ms: int) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


def _event_info(e: epb.EventInfo) -> EventInfo:
    return EventInfo(
        id=e.id,
        key=e.key,
        scope=e.scope or None,
        additional_metadata=json.loads(e.additional_metadata or b"{}"),
        priority=e.priority,
        created_at=_time(e.created_at_ms),
        run_count=e.run_count,
        payload=json.loads(e.payload) if e.payload else None,
        runs=[
            EventRun(
                run_id=r.run_id,
                task_name=r.task_name or None,
                workflow_name=r.workflow_name or None,
                filter_id=r.filter_id or None,
                replay=r.replay,
                status=r.status or None,
                triggered_at=_time(r.triggered_at_ms),
            )
            for r in e.runs
        ],
    )


def _filter_info(f: epb.FilterInfo) -> FilterInfo:
    return FilterInfo(
        id=f.id,
        task_name=f.task_name or None,
        workflow_name=f.workflow_name or None,
        scope=f.scope or None,
        expression=f.expression,
        payload=json.loads(f.payload or b"{}"),
        source=f.source,
        created_at=_time(f.created_at_ms),
        updated_at=_time(f.updated_at_ms),
    )


def _pushed(resp: wpb.PushEventsResponse, connection: Connection) -> list[PushedEvent]:
    if resp.events:
        return [
            PushedEvent(
                e.event_id,
                list(e.run_ids),
                e.satisfied,
                [RunRef(connection, r, None) for r in e.run_ids],
            )
            for e in resp.events
        ]
    # An engine that does not start runs from events answers only ids and a total.
    return [PushedEvent(i, [], resp.satisfied) for i in resp.event_ids]


class Events:
    """User events: ``app.events.push("payment:settled", {"order_id": 7})``."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def _event(
        self,
        key: str,
        payload: Any,
        scope: str | None,
        additional_metadata: Mapping[str, Any] | None,
        priority: int | None,
    ) -> wpb.UserEvent:
        """One event on the wire, checked first (InvalidRequestError, PayloadTooLargeError)."""
        problem = key_problem(key)
        if problem is not None:
            raise InvalidRequestError(f"event key {key!r}: {problem}")
        if priority is not None and not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise InvalidRequestError(
                f"event {key!r}: priority must be {MIN_PRIORITY}..{MAX_PRIORITY}, got {priority}"
            )
        try:
            raw = pydantic_core.to_json(payload)
        except pydantic_core.PydanticSerializationError as exc:
            raise InvalidRequestError(
                f"event {key!r}: payload is not JSON-serializable: {exc}"
            ) from None
        limit = self._connection.max_payload_bytes
        if len(raw) > limit:
            raise PayloadTooLargeError(
                f"event {key!r}: payload is {len(raw)} bytes, over the limit of {limit} bytes"
            )
        return wpb.UserEvent(
            key=key,
            payload=checked_json(raw, f"event {key!r}: payload"),
            additional_metadata=encode_json(
                dict(additional_metadata or {}), f"event {key!r}: additional_metadata"
            ),
            scope=scope or "",
            priority=priority or 0,
        )

    def push(
        self,
        key: str,
        payload: Any = None,
        *,
        scope: str | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
        priority: int | None = None,
    ) -> PushedEvent:
        """Pushes an event: it starts a run of every task and workflow subscribed to ``key``
        (``on_events``, as their filters allow) with ``payload`` as input, and satisfies the
        conditions waiting for it. Returns its id, the runs it started and how many
        conditions it satisfied.

        ``scope``: only the filters of that scope (or of none) apply, and only that workflow
        run's conditions (or durable waits of that scope) can match. ``priority``: of the
        runs it starts (default: each task's). ``additional_metadata`` goes on its runs.
        """
        event = self._event(key, payload, scope, additional_metadata, priority)
        req = wpb.PushEventsRequest(events=[event], request_key=request_key())
        return _pushed(self._connection.calls.push_events(req), self._connection)[0]

    async def aio_push(
        self,
        key: str,
        payload: Any = None,
        *,
        scope: str | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
        priority: int | None = None,
    ) -> PushedEvent:
        event = self._event(key, payload, scope, additional_metadata, priority)
        req = wpb.PushEventsRequest(events=[event], request_key=request_key())
        return _pushed(await self._connection.calls.aio_push_events(req), self._connection)[0]

    def _batches(self, events: Sequence[EventPush | tuple[str, Any]]) -> list[list[wpb.UserEvent]]:
        items: list[wpb.UserEvent] = []
        for e in events:
            if isinstance(e, tuple):
                e = EventPush(*e)
            if not isinstance(e, EventPush):
                raise TypeError(f"bulk_push takes EventPush objects or (key, payload), got {e!r}")
            items.append(self._event(e.key, e.payload, e.scope, e.additional_metadata, e.priority))
        limit = message_limit(self._connection.max_payload_bytes)
        return split_batches(items, limit, _PUSH_BATCH)

    def bulk_push(self, events: Sequence[EventPush | tuple[str, Any]]) -> list[PushedEvent]:
        """Pushes many events (``EventPush`` or ``(key, payload)`` each), every one checked
        before anything is sent, in calls of up to 1,000 events: each call is one
        transaction (its events and their runs are stored together, or none are). One
        result per event, in order."""
        pushed: list[PushedEvent] = []
        for batch in self._batches(events):
            req = wpb.PushEventsRequest(events=batch, request_key=request_key())
            pushed += _pushed(self._connection.calls.push_events(req), self._connection)
        return pushed

    async def aio_bulk_push(
        self, events: Sequence[EventPush | tuple[str, Any]]
    ) -> list[PushedEvent]:
        pushed: list[PushedEvent] = []
        for batch in self._batches(events):
            req = wpb.PushEventsRequest(events=batch, request_key=request_key())
            pushed += _pushed(await self._connection.calls.aio_push_events(req), self._connection)
        return pushed

    @staticmethod
    def _list_request(
        key: str | None,
        scope: str | None,
        additional_metadata: Mapping[str, Any] | None,
        since: When | None,
        until: When | None,
        limit: int,
    ) -> epb.ListEventsRequest:
        return epb.ListEventsRequest(
            key=key or "",
            scope=scope or "",
            additional_metadata=encode_json(dict(additional_metadata), "additional_metadata")
            if additional_metadata
            else b"",
            since_ms=at_ms(since, "since") if since is not None else 0,
            until_ms=at_ms(until, "until") if until is not None else 0,
            limit=limit,
        )

    def list(
        self,
        *,
        key: str | None = None,
        scope: str | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
        since: When | None = None,
        until: When | None = None,
        limit: int = 100,
    ) -> builtins.list[EventInfo]:
        """Stored events, newest first: by exact key, scope, metadata (the event's contains
        these pairs) and time pushed (aware datetimes)."""
        req = self._list_request(key, scope, additional_metadata, since, until, limit)
        return [_event_info(e) for e in self._connection.calls.list_events(req).events]

    async def aio_list(
        self,
        *,
        key: str | None = None,
        scope: str | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
        since: When | None = None,
        until: When | None = None,
        limit: int = 100,
    ) -> builtins.list[EventInfo]:
        req = self._list_request(key, scope, additional_metadata, since, until, limit)
        resp = await self._connection.calls.aio_list_events(req)
        return [_event_info(e) for e in resp.events]

    def get(self, event_id: str) -> EventInfo:
        """One event with its payload and the runs it started (NotFoundError)."""
        return _event_info(self._connection.calls.get_event(epb.GetEventRequest(id=event_id)))

    async def aio_get(self, event_id: str) -> EventInfo:
        resp = await self._connection.calls.aio_get_event(epb.GetEventRequest(id=event_id))
        return _event_info(resp)

    def replay(self, event_id: str) -> builtins.list[str]:
        """Starts the event's runs again — its subscribers and their filters as they are
        now, with the event's payload, metadata, scope and priority — without satisfying
        waits again; the new runs' ids."""
        req = epb.ReplayEventRequest(id=event_id)
        return builtins.list(self._connection.calls.replay_event(req).run_ids)

    async def aio_replay(self, event_id: str) -> builtins.list[str]:
        req = epb.ReplayEventRequest(id=event_id)
        return builtins.list((await self._connection.calls.aio_replay_event(req)).run_ids)


def _target_fields(target: Any) -> dict[str, str]:
    """The request fields naming a filter's task or workflow."""
    from stoker._sdk.task import Task
    from stoker._sdk.workflow import Workflow

    if isinstance(target, Workflow):
        return {"workflow_name": target.name}
    if isinstance(target, Task):
        return {"task_name": target.name}
    if isinstance(target, str) and target:
        return {"name": target}
    raise TypeError(f"a filter belongs to a task, a workflow or one's name, got {target!r}")


class Filters:
    """Filters of event subscribers: which events start a run of a task or workflow, and
    what payload the run gets (``ctx.filter_payload``). README "Events"."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @staticmethod
    def _payload(payload: Mapping[str, Any] | None) -> bytes:
        if payload is None:
            return b""
        if not isinstance(payload, Mapping):
            raise InvalidRequestError("a filter's payload must be a mapping (a JSON object)")
        return encode_json(dict(payload), "filter payload")

    def _create_request(
        self,
        target: Task[Any, Any] | Workflow[Any] | str,
        expression: str,
        scope: str | None,
        payload: Mapping[str, Any] | None,
    ) -> epb.CreateFilterRequest:
        return epb.CreateFilterRequest(
            **_target_fields(target),
            expression=expression,
            scope=scope or "",
            payload=self._payload(payload),
        )

    def create(
        self,
        target: Task[Any, Any] | Workflow[Any] | str,
        *,
        expression: str,
        scope: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> FilterInfo:
        """Creates a filter on a registered task or workflow (or one named so: the
        workflow when one has the name, else the task). ``expression``: CEL over ``input``
        (the event's payload), ``additional_metadata``, ``scope`` and ``key``, checked now
        (InvalidRequestError, nothing stored). ``scope``: the filter applies only to events
        pushed with it (None: to every event). ``payload``: given to the runs it lets
        through."""
        req = self._create_request(target, expression, scope, payload)
        return _filter_info(self._connection.calls.create_filter(req))

    async def aio_create(
        self,
        target: Task[Any, Any] | Workflow[Any] | str,
        *,
        expression: str,
        scope: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> FilterInfo:
        req = self._create_request(target, expression, scope, payload)
        return _filter_info(await self._connection.calls.aio_create_filter(req))

    @staticmethod
    def _list_requests(
        target: Task[Any, Any] | Workflow[Any] | str | None, scope: str | None, limit: int
    ) -> builtins.list[epb.ListFiltersRequest]:
        """The calls a list makes: one, or for a bare name the task's and the workflow's."""
        fields = _target_fields(target) if target is not None else {}
        if "name" in fields:
            name = fields["name"]
            return [
                epb.ListFiltersRequest(task_name=name, scope=scope or "", limit=limit),
                epb.ListFiltersRequest(workflow_name=name, scope=scope or "", limit=limit),
            ]
        return [epb.ListFiltersRequest(**fields, scope=scope or "", limit=limit)]

    def list(
        self,
        target: Task[Any, Any] | Workflow[Any] | str | None = None,
        *,
        scope: str | None = None,
        limit: int = 100,
    ) -> builtins.list[FilterInfo]:
        """The tenant's filters (declared in code and created here), oldest first, of one
        task or workflow (or both of a name) and one scope when given."""
        return [
            _filter_info(f)
            for req in self._list_requests(target, scope, limit)
            for f in self._connection.calls.list_filters(req).filters
        ]

    async def aio_list(
        self,
        target: Task[Any, Any] | Workflow[Any] | str | None = None,
        *,
        scope: str | None = None,
        limit: int = 100,
    ) -> builtins.list[FilterInfo]:
        found: builtins.list[FilterInfo] = []
        for req in self._list_requests(target, scope, limit):
            resp = await self._connection.calls.aio_list_filters(req)
            found += [_filter_info(f) for f in resp.filters]
        return found

    def get(self, filter_id: str) -> FilterInfo:
        """One filter (NotFoundError)."""
        from stoker.errors import NotFoundError

        found = self._connection.calls.list_filters(epb.ListFiltersRequest(id=filter_id, limit=1))
        if not found.filters:
            raise NotFoundError(f"no filter with id {filter_id}")
        return _filter_info(found.filters[0])

    async def aio_get(self, filter_id: str) -> FilterInfo:
        from stoker.errors import NotFoundError

        req = epb.ListFiltersRequest(id=filter_id, limit=1)
        found = await self._connection.calls.aio_list_filters(req)
        if not found.filters:
            raise NotFoundError(f"no filter with id {filter_id}")
        return _filter_info(found.filters[0])

    def _update_request(
        self,
        filter_id: str,
        expression: str | None,
        scope: str | None,
        payload: Mapping[str, Any] | None,
    ) -> epb.UpdateFilterRequest:
        req = epb.UpdateFilterRequest(id=filter_id)
        if expression is not None:
            req.expression = expression
        if scope is not None:
            req.scope = scope
        if payload is not None:
            req.payload = self._payload(payload)
        return req

    def update(
        self,
        filter_id: str,
        *,
        expression: str | None = None,
        scope: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> FilterInfo:
        """Changes what is given (``scope=""``: the filter applies to every scope). A
        filter declared in code is changed in code (InvalidRequestError here)."""
        req = self._update_request(filter_id, expression, scope, payload)
        return _filter_info(self._connection.calls.update_filter(req))

    async def aio_update(
        self,
        filter_id: str,
        *,
        expression: str | None = None,
        scope: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> FilterInfo:
        req = self._update_request(filter_id, expression, scope, payload)
        return _filter_info(await self._connection.calls.aio_update_filter(req))

    def delete(self, filter_id: str) -> None:
        """Deletes a filter (NotFoundError; one declared in code is removed in code)."""
        self._connection.calls.delete_filter(epb.DeleteFilterRequest(id=filter_id))

    async def aio_delete(self, filter_id: str) -> None:
        await self._connection.calls.aio_delete_filter(epb.DeleteFilterRequest(id=filter_id))


__all__ = [
    "EventInfo",
    "EventPush",
    "EventRun",
    "Events",
    "FilterInfo",
    "Filters",
    "PushedEvent",
]
