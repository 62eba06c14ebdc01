"""Request keys of idempotent calls.

Statements of ``db/sql/requests.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from stoker.db.store import Exec, Many


@dataclass(frozen=True, slots=True)
class ClaimRequestKeys:
    tenant_id: int
    keys: list[str]
    kinds: list[str]
    fingerprints: list[bytes]
    starts: list[int]
    lengths: list[int]
    satisfied: list[int]
    run_ids: bytes
    keep_s: list[int]


class ClaimedKey(TypedDict):
    """A request key recorded by this transaction."""

    request_key: str


claim_request_keys = Many[ClaimRequestKeys, ClaimedKey]("claim_request_keys")


@dataclass(frozen=True, slots=True)
class FindRequestKeys:
    tenant_id: int
    keys: list[str]


class StoredRequest(TypedDict):
    """A recorded request key with the ids its call answered (16 bytes each)."""

    request_key: str
    kind: str
    fingerprint: bytes
    run_ids: bytes
    satisfied: int


find_request_keys = Many[FindRequestKeys, StoredRequest]("find_request_keys")


@dataclass(frozen=True, slots=True)
class PruneRequestKeys:
    ttl_s: float
    limit: int


prune_request_keys = Exec[PruneRequestKeys]("prune_request_keys")


@dataclass(frozen=True, slots=True)
class SetRequestSatisfied:
    tenant_id: int
    request_key: str
    satisfied: int


set_request_satisfied = Exec[SetRequestSatisfied]("set_request_satisfied")


@dataclass(frozen=True, slots=True)
class SetRequestSatisfiedCounting:
    tenant_id: int
    request_key: str
    satisfied: int
    task_ids: list[int]
    event_ids: list[int]


set_request_satisfied_counting = Exec[SetRequestSatisfiedCounting]("set_request_satisfied_counting")
