"""The thin seam between the engine and the Postgres driver.

An :class:`Executor` wraps either a connection pool or one open connection (for example a
transaction the caller already holds), so the same operation runs inside or outside a
caller's transaction. Every operation names a block from :mod:`stoker.db.queries` and takes
one frozen params dataclass whose fields are the statement's named parameters.

The engine does not call ``fetch``/``execute`` with block names itself: the statement
objects of :mod:`stoker.db.store` do, and give each call its params and row types.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from stoker.db.queries import queries

Row = dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class NoParams:
    """Params of a statement that takes none."""


def int_array(values: Iterable[int]) -> str:
    """A Postgres array literal of integers (``'{1,2,3}'``), for ``%(x)s::bigint[]``.

    psycopg dumps a Python list element by element; on batches of thousands a literal built
    with one ``join`` is many times cheaper.
    """
    return "{" + ",".join(map(str, map(int, values))) + "}"


def json_array(documents: Iterable[bytes]) -> str:
    """One JSON array of already-serialized JSON documents, for ``jsonb_array_elements``."""
    return "[" + b",".join(documents).decode() + "]"


def _params(params: object) -> dict[str, Any]:
    if not dataclasses.is_dataclass(params) or isinstance(params, type):
        raise TypeError(f"expected a params dataclass instance, got {type(params).__name__}")
    return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}


class Executor:
    """Runs named statements on a pool (each call its own transaction) or on a connection."""

    def __init__(self, target: AsyncConnectionPool[Any] | AsyncConnection[Any]) -> None:
        self._target = target

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[AsyncConnection[Any]]:
        if isinstance(self._target, AsyncConnection):
            yield self._target
        else:
            async with self._target.connection() as conn:
                yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        """An executor bound to one transaction; commits on success, rolls back on error."""
        async with self._conn() as conn, conn.transaction():
            yield Executor(conn)

    async def fetch(self, name: str, params: object = NoParams()) -> list[Row]:
        async with self._conn() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(queries[name], _params(params), prepare=True)
            return await cur.fetchall() if cur.description else []

    async def fetchone(self, name: str, params: object = NoParams()) -> Row | None:
        rows = await self.fetch(name, params)
        return rows[0] if rows else None

    async def execute(self, name: str, params: object = NoParams()) -> int:
        """Runs a statement and returns how many rows it touched."""
        async with self._conn() as conn, conn.cursor() as cur:
            await cur.execute(queries[name], _params(params), prepare=True)
            return cur.rowcount
