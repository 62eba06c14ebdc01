"""Tenants and API tokens.

Statements of ``db/sql/tenants.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from stoker.db.store import Exec, Many, One


@dataclass(frozen=True, slots=True)
class CreateTenant:
    name: str


class Tenant(TypedDict):
    """A tenant."""

    id: int
    external_id: uuid.UUID
    name: str


create_tenant = One[CreateTenant, Tenant]("create_tenant")


@dataclass(frozen=True, slots=True)
class CreateApiToken:
    tenant_id: int
    name: str
    token_hash: bytes
    role: str
    expires_at: datetime | None


class CreatedToken(TypedDict):
    """A token just created."""

    id: int
    external_id: uuid.UUID


create_api_token = One[CreateApiToken, CreatedToken]("create_api_token")


@dataclass(frozen=True, slots=True)
class FindApiToken:
    token_hash: bytes


class FoundToken(TypedDict):
    """A token's tenant, role and state (expires_in_s: None without expiry)."""

    token_id: int
    tenant_id: int
    tenant_name: str
    role: str
    revoked: bool
    expires_at: datetime | None
    expires_in_s: float | None


find_api_token = One[FindApiToken, FoundToken]("find_api_token")


@dataclass(frozen=True, slots=True)
class ListApiTokens:
    tenant_id: int | None
    include_revoked: bool


class TokenInfo(TypedDict):
    """A token's public description."""

    external_id: uuid.UUID
    name: str
    role: str
    tenant_name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


list_api_tokens = Many[ListApiTokens, TokenInfo]("list_api_tokens")


@dataclass(frozen=True, slots=True)
class GetApiToken:
    external_id: uuid.UUID
    tenant_id: int | None


get_api_token = One[GetApiToken, TokenInfo]("get_api_token")


@dataclass(frozen=True, slots=True)
class RevokeApiToken:
    external_id: uuid.UUID
    tenant_id: int | None
    sender: str


class RevokedToken(TypedDict):
    """A token just revoked (pg_notify: the signal's empty result)."""

    id: int
    pg_notify: Any


revoke_api_token = One[RevokeApiToken, RevokedToken]("revoke_api_token")


@dataclass(frozen=True, slots=True)
class TouchApiTokens:
    ids: list[int]
    used_at: list[datetime]


touch_api_tokens = Exec[TouchApiTokens]("touch_api_tokens")
