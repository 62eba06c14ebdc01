"""User-facing idempotency keys.

Statements of ``db/sql/idempotency.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TypedDict

from stoker.db.store import Exec, Many, One


@dataclass(frozen=True, slots=True)
class LockIdempotencyKeys:
    locks: list[int]


class Locked(TypedDict):
    locked: int


lock_idempotency_keys = One[LockIdempotencyKeys, Locked]("lock_idempotency_keys")


@dataclass(frozen=True, slots=True)
class FindIdempotencyKeys:
    tenant_id: int
    keys: list[str]


class IdempotencyKeyRow(TypedDict):
    """A recorded key, the run it names, and whether it still deduplicates."""

    key: str
    run_id: uuid.UUID
    live: bool


find_idempotency_keys = Many[FindIdempotencyKeys, IdempotencyKeyRow]("find_idempotency_keys")


@dataclass(frozen=True, slots=True)
class PutIdempotencyKeys:
    tenant_id: int
    keys: list[str]
    run_ids: list[uuid.UUID]
    ttls_ms: list[int]


put_idempotency_keys = Exec[PutIdempotencyKeys]("put_idempotency_keys")


@dataclass(frozen=True, slots=True)
class PruneIdempotencyKeys:
    limit: int


prune_idempotency_keys = Exec[PruneIdempotencyKeys]("prune_idempotency_keys")


@dataclass(frozen=True, slots=True)
class RewriteRequestIds:
    tenant_id: int
    request_key: str
    run_ids: bytes


rewrite_request_ids = Exec[RewriteRequestIds]("rewrite_request_ids")
