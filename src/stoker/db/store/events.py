"""User events (``app.events.push``).

Statements of ``db/sql/events.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from stoker.db.store import Many


@dataclass(frozen=True, slots=True)
class InsertUserEvents:
    tenant_id: int
    keys: list[str]
    payloads: list[str]
    metadata: list[str]
    scopes: list[str]
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
