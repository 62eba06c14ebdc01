"""Tenants and API tokens.

A token is ``stk_`` + 32 random url-safe bytes. Only its SHA-256 is stored; the engine keeps
a short-lived cache of verified hashes so authentication costs no query per request.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from stoker.db import Executor
from stoker.errors import AuthenticationError

TOKEN_PREFIX = "stk_"


@dataclass(frozen=True, slots=True)
class TenantParams:
    name: str


@dataclass(frozen=True, slots=True)
class CreateTokenParams:
    tenant_id: int
    name: str
    token_hash: bytes


@dataclass(frozen=True, slots=True)
class FindTokenParams:
    token_hash: bytes


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for."""

    tenant_id: int
    tenant_name: str


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_tenant(db: Executor, name: str) -> int:
    """Creates the tenant ``name`` (or finds it) and returns its id."""
    row = await db.fetchone("create_tenant", TenantParams(name))
    assert row is not None
    return int(row["id"])


async def create_token(db: Executor, tenant_id: int, name: str = "default") -> str:
    """Creates an API token for the tenant and returns it (it is not stored in clear)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    await db.execute("create_api_token", CreateTokenParams(tenant_id, name, hash_token(token)))
    return token


class TokenAuth:
    """Verifies bearer tokens against the database, caching positive answers briefly."""

    def __init__(self, db: Executor, cache_ttl_s: float = 30.0) -> None:
        self._db = db
        self._ttl = cache_ttl_s
        self._cache: dict[bytes, tuple[float, Principal]] = {}

    async def authenticate(self, token: str | None) -> Principal:
        """The principal for ``token``; AuthenticationError when missing, unknown or revoked."""
        if not token:
            raise AuthenticationError("missing API token: send 'authorization: Bearer <token>'")
        digest = hash_token(token)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit and hit[0] > now:
            return hit[1]
        row = await self._db.fetchone("find_api_token", FindTokenParams(digest))
        if row is None:
            self._cache.pop(digest, None)
            raise AuthenticationError("invalid API token: it is unknown or has been revoked")
        principal = Principal(int(row["tenant_id"]), str(row["tenant_name"]))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self._ttl, principal)
        return principal


def bearer(value: str | None) -> str | None:
    """The token of an ``authorization`` header value (``Bearer <token>``)."""
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
