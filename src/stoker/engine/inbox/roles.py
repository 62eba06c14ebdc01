"""Which database roles may enqueue runs in their own transactions, and for which tenant.

An administrator maps a role to one tenant (``stoker enqueue-role grant ROLE --tenant
NAME``); ``grant_enqueue_role()`` (db/schema.sql) also grants the role USAGE on the schema
and EXECUTE on ``enqueue_runs(text)``, which is all it needs: no privilege on any table.
"""

from __future__ import annotations

import psycopg

from stoker.db import Executor, NoParams
from stoker.db.store import inbox as store
from stoker.errors import InvalidRequestError, NotFoundError


async def grant(db: Executor, role_name: str, tenant_name: str) -> int:
    """Lets ``role_name`` enqueue for the tenant (replacing an earlier mapping); the
    tenant's id. NotFoundError for an unknown role or tenant."""
    if not role_name or not tenant_name:
        raise InvalidRequestError("a grant needs a database role and a tenant name")
    try:
        row = await store.grant_enqueue_role(db, store.GrantEnqueueRole(role_name, tenant_name))
    except (psycopg.errors.UndefinedObject, psycopg.errors.NoDataFound) as exc:
        raise NotFoundError(exc.diag.message_primary or str(exc)) from None
    assert row is not None
    return int(row["tenant_id"])


async def revoke(db: Executor, role_name: str) -> bool:
    """Takes the permission back; False when the role was not mapped."""
    row = await store.revoke_enqueue_role(db, store.RevokeEnqueueRole(role_name))
    return bool(row and row["revoked"])


async def list_roles(db: Executor) -> list[store.EnqueueRoleRow]:
    """The mapped roles and their tenants."""
    return await store.list_enqueue_roles(db, NoParams())


__all__ = ["grant", "list_roles", "revoke"]
