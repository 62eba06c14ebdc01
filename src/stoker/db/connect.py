"""Opening connections with Stoker's schema on the search path."""

from __future__ import annotations

import re
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from stoker.errors import ConfigError

POOL_WAIT_S = 5.0
"""How long a statement waits for a pooled connection before failing with PoolTimeout.

While the database is down the pool cannot make connections, and every caller would wait
this long: short enough that the engine answers UNAVAILABLE (which clients retry) well
within a client's deadline, long enough that a busy pool is not mistaken for an outage.
"""

_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_schema(schema: str) -> str:
    """Returns ``schema`` if it is a plain lower-case identifier, else raises ConfigError."""
    if not _SCHEMA.match(schema):
        raise ConfigError(
            f"schema name {schema!r} is not a plain identifier (lower-case letters, digits, _)"
        )
    return schema


def _kwargs(schema: str) -> dict[str, Any]:
    # Batch statements unnest arrays whose length only the actual parameters tell; a generic
    # plan guesses 10 rows and can pick nested loops that are quadratic in the batch size.
    # Custom plans cost a fraction of a millisecond per batch and always see the real sizes.
    options = f"-c search_path={check_schema(schema)} -c plan_cache_mode=force_custom_plan"
    return {"autocommit": True, "options": options}


async def connect(url: str, schema: str) -> AsyncConnection[Any]:
    """One autocommit connection whose search_path is ``schema``."""
    return await AsyncConnection.connect(url, **_kwargs(schema))


async def open_pool(
    url: str, schema: str, *, min_size: int = 2, max_size: int = 10, name: str = "stoker"
) -> AsyncConnectionPool[Any]:
    """An opened pool of autocommit connections whose search_path is ``schema``."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs=_kwargs(schema),
        open=False,
        name=name,
        timeout=POOL_WAIT_S,
    )
    await pool.open(wait=True, timeout=30)
    return pool
