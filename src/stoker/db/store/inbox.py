"""Transactional enqueue: the inbox applications write through ``enqueue_runs()``, its
receipts, and the role-to-tenant map (docs/transactional.md).

Statements of ``db/sql/inbox.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

from stoker.db.store import Exec, Many, NoParams, One


@dataclass(frozen=True, slots=True)
class TakeInbox:
    limit: int


class InboxRow(TypedDict):
    """One run an application's committed transaction enqueued, taken to be written."""

    id: int
    tenant_id: int
    external_id: uuid.UUID
    kind: str
    name: str
    input: str
    metadata: str
    priority: int
    desired_worker_id: str
    idempotency_key: str
    idempotency_ttl_ms: int
    definition: str | None
    """The task's configuration as the application declared it (JSON), if sent."""


take_inbox = Many[TakeInbox, InboxRow]("take_inbox")


@dataclass(frozen=True, slots=True)
class PutInboxReceipts:
    tenant_id: int
    external_ids: list[uuid.UUID]
    run_ids: list[uuid.UUID | None]
    errors: list[str | None]


put_inbox_receipts = Exec[PutInboxReceipts]("put_inbox_receipts")


@dataclass(frozen=True, slots=True)
class InboxStates:
    tenant_id: int
    external_ids: list[uuid.UUID]


class InboxState(TypedDict):
    """An id still in the inbox (``pending``), or the receipt of one that was
    deduplicated (``run_id``) or refused (``error``)."""

    external_id: uuid.UUID
    pending: bool
    run_id: uuid.UUID | None
    error: str | None


inbox_states = Many[InboxStates, InboxState]("inbox_states")


@dataclass(frozen=True, slots=True)
class PruneInboxReceipts:
    cutoff: datetime
    limit: int


prune_inbox_receipts = Exec[PruneInboxReceipts]("prune_inbox_receipts")


@dataclass(frozen=True, slots=True)
class GrantEnqueueRole:
    role_name: str
    tenant_name: str


class GrantedRole(TypedDict):
    tenant_id: int


grant_enqueue_role = One[GrantEnqueueRole, GrantedRole]("grant_enqueue_role")


@dataclass(frozen=True, slots=True)
class RevokeEnqueueRole:
    role_name: str


class RevokedRole(TypedDict):
    revoked: bool


revoke_enqueue_role = One[RevokeEnqueueRole, RevokedRole]("revoke_enqueue_role")


class EnqueueRoleRow(TypedDict):
    """A mapped role, with its tenant's name."""

    role_name: str
    tenant_name: str
    created_at: datetime


list_enqueue_roles = Many[NoParams, EnqueueRoleRow]("list_enqueue_roles")
