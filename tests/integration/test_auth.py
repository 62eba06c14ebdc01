"""Token verification against a real Postgres: callers of one lookup share its answer."""

from __future__ import annotations

import asyncio

import psycopg

from stoker.db import Executor
from stoker.engine.auth import TokenAuth, create_tenant, create_token


def _lookup_is_blocked(db_url: str) -> bool:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE '%api_token%'"
        ).fetchone()
    return bool(row and row[0])


async def test_a_caller_that_goes_away_leaves_the_shared_lookup_to_the_others(
    db: Executor, db_url: str
) -> None:
    """A worker's heartbeat cancelled at its deadline may own the lookup that a client's
    call joined: the client's call must still get its answer."""
    tenant_id = await create_tenant(db, "shared")
    token = await create_token(db, tenant_id)
    auth = TokenAuth(db)
    with psycopg.connect(db_url) as blocker:  # holds the lock until it rolls back
        blocker.execute("LOCK TABLE stoker.api_token IN ACCESS EXCLUSIVE MODE")
        owner = asyncio.create_task(auth.authenticate(token))
        for _ in range(500):
            if await asyncio.to_thread(_lookup_is_blocked, db_url):
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the token lookup never reached the database")
        joined = asyncio.create_task(auth.authenticate(token))
        await asyncio.sleep(0)  # it joins the lookup in flight
        owner.cancel()
        await asyncio.gather(owner, return_exceptions=True)
        blocker.rollback()
    principal = await asyncio.wait_for(joined, 10)
    assert principal.tenant_id == tenant_id
