"""Tenants and API tokens.

A token is ``stk_`` + 32 random url-safe bytes. Only its SHA-256 is stored, with the token's
role (``admin`` or ``member``), optional expiry, revocation time and last-used time.

Verification costs no query per request: each replica keeps the answer for a token (the
principal, or why it is refused) for ``cache_ttl_s`` (0.5 s by default). Revocation reaches
every replica two ways: the revoking transaction sends ``stoker_token`` (body: the token's
id) and each replica drops the token from its cache when that arrives; if a notification is
lost, the short cache life still bounds how long a revoked token works, so a revocation is
effective on every replica within one second. Expiry is checked on the database's clock and
a cached answer never outlives the token's expiry.

Unauthenticated callers cannot make the engine hold much: malformed tokens are refused
without a query, at most ``max_lookups`` lookups run at once (the rest wait their turn),
concurrent lookups of one token share one query, and the cache is bounded.

Last use is recorded without a write per request: accepted tokens are noted in memory and
written in one statement every ``last_used_interval_s`` (60 s by default), and on stop.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from stoker.db import Executor
from stoker.db.store import tenants as tenant_store
from stoker.engine.service import LoopService
from stoker.errors import AuthenticationError, PermissionDeniedError

log = logging.getLogger("stoker.engine.auth")

TOKEN_PREFIX = "stk_"
ADMIN = "admin"
MEMBER = "member"
ROLES = (ADMIN, MEMBER)

# Notification channel of revocations (see the module docstring).
TOKEN_CHANNEL = "stoker_token"

_MAX_TOKEN_CHARS = 200
_MAX_CACHE = 10_000
# A revoked or expired token stays refused; its answer may be kept longer.
_FINAL_TTL_S = 60.0


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for: a tenant, through one token with one role."""

    tenant_id: int
    tenant_name: str
    token_id: int = 0
    role: str = MEMBER

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    def require_admin(self) -> None:
        """PermissionDeniedError unless the token has the admin role."""
        if not self.is_admin:
            raise PermissionDeniedError(
                "this API token has the member role; managing tokens needs an admin token "
                "(stoker token create --admin)"
            )


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just created: the secret (shown once) and its public id."""

    token: str
    external_id: uuid.UUID


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def create_tenant(db: Executor, name: str) -> int:
    """Creates the tenant ``name`` (or finds it) and returns its id."""
    row = await tenant_store.create_tenant(db, tenant_store.CreateTenant(name))
    assert row is not None
    return int(row["id"])


async def issue_token(
    db: Executor,
    tenant_id: int,
    name: str = "default",
    *,
    role: str = MEMBER,
    expires_at: datetime | None = None,
) -> IssuedToken:
    """Creates an API token for the tenant (stored only as a hash)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = await tenant_store.create_api_token(
        db, tenant_store.CreateApiToken(tenant_id, name, hash_token(token), role, expires_at)
    )
    assert row is not None
    return IssuedToken(token, row["external_id"])


async def create_token(
    db: Executor,
    tenant_id: int,
    name: str = "default",
    *,
    role: str = MEMBER,
    expires_at: datetime | None = None,
) -> str:
    """Creates an API token for the tenant and returns it (it is not stored in clear)."""
    return (await issue_token(db, tenant_id, name, role=role, expires_at=expires_at)).token


async def list_tokens(
    db: Executor, tenant_id: int | None, *, include_revoked: bool = False
) -> list[tenant_store.TokenInfo]:
    """Tokens of a tenant (of every tenant when ``tenant_id`` is None), never their secret."""
    return await tenant_store.list_api_tokens(
        db, tenant_store.ListApiTokens(tenant_id, include_revoked)
    )


async def get_token(
    db: Executor, external_id: uuid.UUID, tenant_id: int | None
) -> tenant_store.TokenInfo | None:
    """One token's public description, or None."""
    return await tenant_store.get_api_token(db, tenant_store.GetApiToken(external_id, tenant_id))


async def revoke_token(
    db: Executor, external_id: uuid.UUID, tenant_id: int | None, *, sender: str
) -> int | None:
    """Revokes a token and signals every replica (``sender`` names the revoker in the
    signal); the token's internal id, or None when there is no such unrevoked token."""
    row = await tenant_store.revoke_api_token(
        db, tenant_store.RevokeApiToken(external_id, tenant_id, sender)
    )
    return None if row is None else int(row["id"])


@dataclass(frozen=True, slots=True)
class _Answer:
    """A cached verification: the principal, or the message of the refusal."""

    deadline: float
    principal: Principal | None
    refusal: str


class TokenAuth(LoopService):
    """Verifies bearer tokens against the database, caching answers briefly (see module)."""

    name = "auth"

    def __init__(
        self,
        db: Executor,
        cache_ttl_s: float = 0.5,
        *,
        last_used_interval_s: float = 60.0,
        max_lookups: int = 8,
    ) -> None:
        super().__init__()
        self._db = db
        self._ttl = cache_ttl_s
        self._last_used_interval = last_used_interval_s
        self._cache: dict[bytes, _Answer] = {}
        self._inflight: dict[bytes, asyncio.Task[_Answer]] = {}
        self._lookups = asyncio.Semaphore(max_lookups)
        self._used: dict[int, float] = {}

    async def authenticate(self, token: str | None) -> Principal:
        """The principal for ``token``; AuthenticationError when missing, unknown, revoked
        or expired (the message says which)."""
        if not token:
            raise AuthenticationError("missing API token: send 'authorization: Bearer <token>'")
        if not token.startswith(TOKEN_PREFIX) or len(token) > _MAX_TOKEN_CHARS:
            raise AuthenticationError(
                f"invalid API token: Stoker tokens start with {TOKEN_PREFIX!r} "
                "(create one with `stoker token create`)"
            )
        digest = hash_token(token)
        answer = self._cache.get(digest)
        if answer is None or answer.deadline <= time.monotonic():
            answer = await self._lookup(digest)
        if answer.principal is None:
            raise AuthenticationError(answer.refusal)
        self._used[answer.principal.token_id] = time.time()
        return answer.principal

    async def _lookup(self, digest: bytes) -> _Answer:
        """One query per token at a time, at most ``max_lookups`` at once.

        The query runs in a task of its own that every caller awaits through a shield: a
        caller that goes away (its call cancelled, say a worker's heartbeat at its deadline)
        must not cancel the answer the others wait for, or their calls would end without a
        status and their clients wait for their deadlines.
        """
        task = self._inflight.get(digest)
        if task is None:
            task = asyncio.create_task(self._query(digest), name="stoker-token-lookup")
            self._inflight[digest] = task
            task.add_done_callback(functools.partial(self._lookup_done, digest))
        return await asyncio.shield(task)

    def _lookup_done(self, digest: bytes, task: asyncio.Task[_Answer]) -> None:
        if self._inflight.get(digest) is task:
            del self._inflight[digest]
        if not task.cancelled():
            task.exception()  # retrieved: the callers that still wait get it raised

    async def _query(self, digest: bytes) -> _Answer:
        async with self._lookups:
            row = await tenant_store.find_api_token(self._db, tenant_store.FindApiToken(digest))
        answer = self._answer(row)
        self._remember(digest, answer)
        return answer

    def _answer(self, row: tenant_store.FoundToken | None) -> _Answer:
        now = time.monotonic()
        if row is None:
            return _Answer(now + self._ttl, None, "invalid API token: it is unknown")
        if row["revoked"]:
            return _Answer(now + _FINAL_TTL_S, None, "API token has been revoked")
        left, expires_at = row["expires_in_s"], row["expires_at"]
        if left is not None and left <= 0 and expires_at is not None:
            at = expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            return _Answer(
                now + _FINAL_TTL_S,
                None,
                f"API token expired at {at}; create a new one with `stoker token create`",
            )
        principal = Principal(
            int(row["tenant_id"]), str(row["tenant_name"]), int(row["token_id"]), str(row["role"])
        )
        ttl = self._ttl if left is None else min(self._ttl, float(left))
        return _Answer(now + ttl, principal, "")

    def _remember(self, digest: bytes, answer: _Answer) -> None:
        if len(self._cache) >= _MAX_CACHE:
            now = time.monotonic()
            self._cache = {d: a for d, a in self._cache.items() if a.deadline > now}
            if len(self._cache) >= _MAX_CACHE:
                self._cache.clear()
        self._cache[digest] = answer

    def forget(self, token_id: int) -> None:
        """Drops a (revoked) token from the cache: its next use is checked again."""
        stale = [
            d for d, a in self._cache.items() if a.principal and a.principal.token_id == token_id
        ]
        for digest in stale:
            del self._cache[digest]

    def on_revoked(self, body: str) -> None:
        """Handles a ``stoker_token`` notification from another replica or the CLI."""
        if body.isdigit():
            self.forget(int(body))

    async def run(self) -> None:
        while not await self.sleep(self._last_used_interval):
            await self.flush_last_used()
        await self.flush_last_used()

    async def flush_last_used(self) -> None:
        """Writes the last-used times noted since the previous flush, in one statement."""
        used, self._used = self._used, {}
        if not used:
            return
        ids = sorted(used)
        when = [datetime.fromtimestamp(used[i], UTC) for i in ids]
        await tenant_store.touch_api_tokens(self._db, tenant_store.TouchApiTokens(ids, when))


def bearer(value: str | None) -> str | None:
    """The token of an ``authorization`` header value (``Bearer <token>``)."""
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
