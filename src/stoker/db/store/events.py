"""User events (``app.events.push``).

Statements of ``db/sql/events.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

from stoker.db.store import Many


@dataclass(frozen=True, slots=True)
class InsertUserEvents:
    tenant_id: int
    keys: list[str]
    payloads: list[str]
    metadata: list[str]
    scopes: list[str]


class StoredEvent(TypedDict):
    """A user event just stored."""

    external_id: uuid.UUID
    created_at: datetime


insert_user_events = Many[InsertUserEvents, StoredEvent]("insert_user_events")
