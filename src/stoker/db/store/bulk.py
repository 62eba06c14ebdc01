"""Bulk cancel and replay operations: creation, progress, ownership.

Statements of ``db/sql/bulk.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from stoker.db.store import Many, One


@dataclass(frozen=True, slots=True)
class CreateBulkOperation:
    tenant_id: int
    external_id: uuid.UUID
    action: str
    reason: str
    filter: str | None
    run_ids: list[str]
    owner: str


class CreatedBulkOperation(TypedDict):
    """A bulk operation just created."""

    id: int


create_bulk_operation = One[CreateBulkOperation, CreatedBulkOperation]("create_bulk_operation")


@dataclass(frozen=True, slots=True)
class GetBulkOperation:
    tenant_id: int
    external_id: uuid.UUID


class BulkOperationRow(TypedDict):
    """A bulk operation's progress."""

    external_id: uuid.UUID
    action: str
    state: str
    reason: str
    filter: dict[str, Any] | None
    total: int
    done: int
    failed: int
    error: str | None
    created_at: datetime
    finished_at: datetime | None


get_bulk_operation = One[GetBulkOperation, BulkOperationRow]("get_bulk_operation")


@dataclass(frozen=True, slots=True)
class ListBulkOperations:
    tenant_id: int
    limit: int


list_bulk_operations = Many[ListBulkOperations, BulkOperationRow]("list_bulk_operations")


@dataclass(frozen=True, slots=True)
class NextBulkChunk:
    id: int
    owner: str
    size: int


class BulkChunk(TypedDict):
    """The next runs of an operation, from ``position``."""

    position: int
    run_ids: list[str] | None


next_bulk_chunk = One[NextBulkChunk, BulkChunk]("next_bulk_chunk")


@dataclass(frozen=True, slots=True)
class AdvanceBulkOperation:
    id: int
    owner: str
    from_position: int
    to_position: int
    done: int
    failed: int


class BulkState(TypedDict):
    """An operation's state after a change."""

    state: str


advance_bulk_operation = One[AdvanceBulkOperation, BulkState]("advance_bulk_operation")


@dataclass(frozen=True, slots=True)
class NoteBulkError:
    id: int
    owner: str
    error: str
    max_errors: int


note_bulk_error = One[NoteBulkError, BulkState]("note_bulk_error")


@dataclass(frozen=True, slots=True)
class ClaimStaleBulkOperations:
    owner: str
    stale_ms: int
    limit: int


class ClaimedBulkOperation(TypedDict):
    """An operation this replica took over."""

    id: int
    tenant_id: int
    external_id: uuid.UUID
    action: str
    reason: str


claim_stale_bulk_operations = Many[ClaimStaleBulkOperations, ClaimedBulkOperation](
    "claim_stale_bulk_operations"
)
