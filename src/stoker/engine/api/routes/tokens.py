"""REST management of API tokens, for admin tokens of a tenant.

``GET /api/v1/tokens`` lists the tenant's tokens (``?include_revoked=true`` for revoked
ones too), ``POST /api/v1/tokens`` creates one (the secret is in the response, once) and
``DELETE /api/v1/tokens/{token_id}`` revokes one. Every route needs a token with the admin
role (``stoker token create --admin``; the token ``stoker lite`` provisions is one) and sees
only its own tenant's tokens; member tokens get 403. A token's secret is never listed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from stoker.config import parse_duration
from stoker.db.store import tenants as tenant_store
from stoker.engine.api.deps import Auth, StateDep
from stoker.engine.api.models import ErrorBody
from stoker.engine.auth import ADMIN, MEMBER, get_token, issue_token, list_tokens, revoke_token
from stoker.errors import ConfigError, InvalidRequestError, NotFoundError

router = APIRouter(
    prefix="/api/v1/tokens",
    tags=["tokens"],
    responses={
        401: {"model": ErrorBody, "description": "The API token is missing, unknown or revoked"},
        403: {"model": ErrorBody, "description": "The API token is not an admin token"},
        422: {"model": ErrorBody, "description": "A parameter is invalid; the message names it"},
    },
)


class TokenInfo(BaseModel):
    """An API token as listed: everything but its secret."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID = Field(description="The token's id (what revocation takes).")
    name: str
    role: Literal["admin", "member"]
    created_at: datetime
    expires_at: datetime | None = Field(description="When it stops working; null: never.")
    revoked_at: datetime | None
    last_used_at: datetime | None = Field(
        description="When an engine last accepted it (recorded about once a minute)."
    )


class TokenList(BaseModel):
    items: list[TokenInfo]


class CreateToken(BaseModel):
    """What to create: a label, a role, and optionally how long the token lives."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="default", min_length=1, max_length=200)
    role: Literal["admin", "member"] = "member"
    expires_in: str | float | None = Field(
        default=None,
        description="Lifetime: seconds, or a duration such as '30m', '12h', '90d'. "
        "Null: the token never expires.",
    )


class CreatedToken(TokenInfo):
    token: str = Field(description="The secret: shown only in this response.")


def _info(row: tenant_store.TokenInfo) -> dict[str, Any]:
    return {
        "id": row["external_id"],
        "name": row["name"],
        "role": row["role"],
        "created_at": row["created_at"],
        "expires_at": row["expires_at"],
        "revoked_at": row["revoked_at"],
        "last_used_at": row["last_used_at"],
    }


def expiry(expires_in: str | float | timedelta | None) -> datetime | None:
    """The expiry time of a token created now that lives ``expires_in``; None: never."""
    try:
        life = parse_duration(expires_in, "expires_in")
    except ConfigError as exc:
        raise InvalidRequestError(exc.message) from None
    if life is None:
        return None
    if life <= timedelta(0):
        raise InvalidRequestError("expires_in must be positive")
    return datetime.now(UTC) + life


@router.get("", response_model=TokenList)
async def list_tenant_tokens(
    who: Auth,
    state: StateDep,
    include_revoked: Annotated[bool, Query(description="List revoked tokens too.")] = False,
) -> TokenList:
    """The tenant's tokens, oldest first."""
    who.require_admin()
    rows = await list_tokens(state.db, who.tenant_id, include_revoked=include_revoked)
    return TokenList(items=[TokenInfo(**_info(r)) for r in rows])


@router.post("", response_model=CreatedToken, status_code=201)
async def create_tenant_token(body: CreateToken, who: Auth, state: StateDep) -> CreatedToken:
    """Creates a token of the tenant; its secret is in this response only."""
    who.require_admin()
    issued = await issue_token(
        state.db,
        who.tenant_id,
        body.name,
        role=ADMIN if body.role == ADMIN else MEMBER,
        expires_at=expiry(body.expires_in),
    )
    row = await get_token(state.db, issued.external_id, who.tenant_id)
    assert row is not None
    return CreatedToken(token=issued.token, **_info(row))


@router.delete(
    "/{token_id}",
    response_model=TokenInfo,
    responses={404: {"model": ErrorBody, "description": "No such unrevoked token here"}},
)
async def revoke_tenant_token(token_id: uuid.UUID, who: Auth, state: StateDep) -> TokenInfo:
    """Revokes a token of the tenant; every engine replica refuses it within a second."""
    who.require_admin()
    revoked = await revoke_token(state.db, token_id, who.tenant_id, sender=state.engine_id)
    if revoked is None:
        raise NotFoundError(f"no unrevoked token {token_id} in this tenant")
    # This replica ignores its own notification: drop the token from its cache here.
    state.auth.forget(revoked)
    row = await get_token(state.db, token_id, who.tenant_id)
    assert row is not None
    return TokenInfo(**_info(row))
