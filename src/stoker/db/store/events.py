"""User events (``app.events.push``), the runs they started, and the filters of their
subscribers.

Statements of ``db/sql/events.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from stoker.db.store import Exec, Many, One


@dataclass(frozen=True, slots=True)
class InsertUserEvents:
    tenant_id: int
    external_ids: list[uuid.UUID]
    keys: list[str]
    payloads: list[str]
    metadata: list[str]
    scopes: list[str]
    priorities: list[int]
    webhook_ids: list[int | None]
    bodies: list[bytes | None]


class StoredEvent(TypedDict):
    """A user event just stored."""

    id: int
    external_id: uuid.UUID
    created_at: datetime


insert_user_events = Many[InsertUserEvents, StoredEvent]("insert_user_events")


@dataclass(frozen=True, slots=True)
class LockEventKeys:
    tenant_id: int
    keys: list[str]
    """Sorted: every transaction takes the locks of its keys in the same order."""


class HeldKey(TypedDict):
    """An event key whose (tenant, key) lock this transaction holds."""

    key: str
    held: str


lock_event_keys = Many[LockEventKeys, HeldKey]("lock_event_keys")


@dataclass(frozen=True, slots=True)
class LookbackEvents:
    tenant_id: int
    key: str
    since: datetime
    scope: str | None
    task_id: int
    limit: int


class PastEvent(TypedDict):
    """An event a durable wait's lookback may take."""

    id: int
    created_at: datetime
    payload: Any
    additional_metadata: Any
    scope: str | None


lookback_events = Many[LookbackEvents, PastEvent]("lookback_events")


@dataclass(frozen=True, slots=True)
class SubscriberFilters:
    tenant_id: int
    task_names: list[str]
    workflow_names: list[str]


class FilterRow(TypedDict):
    """A filter as stored (``source``, times: only in reads of the filter itself)."""

    external_id: uuid.UUID
    task_name: str | None
    workflow_name: str | None
    scope: str | None
    expression: str
    payload: Any


subscriber_filters = Many[SubscriberFilters, FilterRow]("subscriber_filters")


@dataclass(frozen=True, slots=True)
class InsertEventRuns:
    tenant_id: int
    event_ids: list[int]
    created_at: list[datetime]
    run_ids: list[uuid.UUID]
    task_names: list[str | None]
    workflow_names: list[str | None]
    filter_ids: list[uuid.UUID | None]
    replay: int


insert_event_runs = Exec[InsertEventRuns]("insert_event_runs")


@dataclass(frozen=True, slots=True)
class InsertRunFilterPayloads:
    tenant_id: int
    run_ids: list[uuid.UUID]
    payloads: list[str]
    """JSON documents."""


insert_run_filter_payloads = Exec[InsertRunFilterPayloads]("insert_run_filter_payloads")


@dataclass(frozen=True, slots=True)
class ListEvents:
    tenant_id: int
    key: str | None
    scope: str | None
    metadata: str | None
    since: datetime | None
    until: datetime | None
    limit: int


class EventSummary(TypedDict):
    external_id: uuid.UUID
    key: str
    scope: str | None
    additional_metadata: Any
    priority: int
    created_at: datetime
    runs: int


list_events = Many[ListEvents, EventSummary]("list_events")


@dataclass(frozen=True, slots=True)
class GetEvent:
    tenant_id: int
    external_id: uuid.UUID


class EventRow(TypedDict):
    id: int
    external_id: uuid.UUID
    key: str
    payload: Any
    scope: str | None
    additional_metadata: Any
    priority: int
    created_at: datetime


get_event = One[GetEvent, EventRow]("get_event")


@dataclass(frozen=True, slots=True)
class EventRuns:
    event_id: int
    created_at: datetime


class EventRunRow(TypedDict):
    run_id: uuid.UUID
    task_name: str | None
    workflow_name: str | None
    filter_id: uuid.UUID | None
    replay: int
    triggered_at: datetime
    status: str | None


event_runs = Many[EventRuns, EventRunRow]("event_runs")


@dataclass(frozen=True, slots=True)
class DeleteCodeFilters:
    tenant_id: int
    task_names: list[str]
    workflow_names: list[str]


delete_code_filters = Exec[DeleteCodeFilters]("delete_code_filters")


@dataclass(frozen=True, slots=True)
class InsertCodeFilters:
    tenant_id: int
    task_names: list[str | None]
    workflow_names: list[str | None]
    scopes: list[str | None]
    expressions: list[str]
    payloads: list[str]


insert_code_filters = Exec[InsertCodeFilters]("insert_code_filters")


class FilterInfo(FilterRow):
    """A filter as the API shows it."""

    source: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CreateFilter:
    tenant_id: int
    task_name: str | None
    workflow_name: str | None
    scope: str | None
    expression: str
    payload: str


create_filter = One[CreateFilter, FilterInfo]("create_filter")


@dataclass(frozen=True, slots=True)
class ListFilters:
    tenant_id: int
    external_id: uuid.UUID | None
    task_name: str | None
    workflow_name: str | None
    scope: str | None
    limit: int


list_filters = Many[ListFilters, FilterInfo]("list_filters")


@dataclass(frozen=True, slots=True)
class UpdateFilter:
    tenant_id: int
    external_id: uuid.UUID
    expression: str | None
    scope: str | None
    clear_scope: bool
    payload: str | None


update_filter = One[UpdateFilter, FilterInfo]("update_filter")


@dataclass(frozen=True, slots=True)
class DeleteFilter:
    tenant_id: int
    external_id: uuid.UUID


delete_filter = Exec[DeleteFilter]("delete_filter")


@dataclass(frozen=True, slots=True)
class RunsOfEvents:
    tenant_id: int
    external_ids: list[uuid.UUID]


class EventRunId(TypedDict):
    event_id: uuid.UUID
    run_id: uuid.UUID


runs_of_events = Many[RunsOfEvents, EventRunId]("runs_of_events")
