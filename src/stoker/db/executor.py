"""The thin seam between the engine and the Postgres driver.

An :class:`Executor` wraps either a connection pool or one open connection (for example a
transaction the caller already holds), so the same operation runs inside or outside a
caller's transaction. Every operation names a block from :mod:`stoker.db.queries` and takes
one frozen params dataclass whose fields are the statement's named parameters.

The engine does not call ``fetch``/``execute`` with block names itself: the statement
objects of :mod:`stoker.db.store` do, and give each call its params and row types.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection, AsyncCursor, AsyncPipeline
from psycopg.pq import TransactionStatus
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


class Batch:
    """Statements sent together (:meth:`Executor.run`): one round trip for all of them.

    ``add`` queues a statement and returns its index; after the run, ``rows(index)`` is what
    it returned (empty for a statement without rows). The statements run in order, each
    seeing what the earlier ones wrote, exactly as if sent one by one; the first that fails
    raises and the others do not run (inside a transaction, the transaction is aborted).
    """

    __slots__ = ("_calls", "_results")

    def __init__(self) -> None:
        self._calls: list[tuple[str, object]] = []
        self._results: list[list[Row]] | None = None

    def add(self, name: str, params: object = NoParams()) -> int:
        if self._results is not None:
            raise RuntimeError("this batch has run already")
        if name not in queries:
            raise KeyError(f"no SQL block named {name!r}")
        self._calls.append((name, params))
        return len(self._calls) - 1

    def rows(self, index: int) -> list[Row]:
        if self._results is None:
            raise RuntimeError("the batch has not run yet")
        return self._results[index]

    def __len__(self) -> int:
        return len(self._calls)


class Deferred:
    """A statement whose rows are read after its transaction commits (:meth:`Executor.defer`)."""

    __slots__ = ("_cursor", "_rows")

    def __init__(self, cursor: AsyncCursor[Row] | None, rows: list[Row] | None = None) -> None:
        self._cursor = cursor
        self._rows = rows

    async def _read(self) -> None:
        cur, self._cursor = self._cursor, None
        if cur is not None:
            self._rows = await cur.fetchall() if cur.description is not None else []

    @property
    def rows(self) -> list[Row]:
        if self._rows is None:
            raise RuntimeError("the transaction of this statement has not committed yet")
        return self._rows


class Executor:
    """Runs named statements on a pool (each call its own transaction) or on a connection.

    A transaction opened with ``pipeline=True`` runs in psycopg's pipeline mode: BEGIN
    travels with the first statements, :meth:`send` queues a statement whose result nobody
    reads (it goes out with the next statement that is read, or with COMMIT), and
    :meth:`run` sends a :class:`Batch` at once. :meth:`fetch` and :meth:`execute` still
    wait for their own result, so code written for an ordinary transaction runs unchanged
    in a pipelined one; it only gains where it sends or batches.
    """

    def __init__(
        self,
        target: AsyncConnectionPool[Any] | AsyncConnection[Any],
        pipeline: AsyncPipeline | None = None,
    ) -> None:
        self._target = target
        self._pipeline = pipeline
        self._deferred: list[Deferred] = []

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[AsyncConnection[Any]]:
        if isinstance(self._target, AsyncConnection):
            yield self._target
        else:
            async with self._target.connection() as conn:
                yield conn

    @asynccontextmanager
    async def transaction(self, *, pipeline: bool = False) -> AsyncIterator[Executor]:
        """An executor bound to one transaction; commits on success, rolls back on error.
        ``pipeline``: in pipeline mode (see the class docstring)."""
        if not pipeline:
            async with self._conn() as conn, conn.transaction():
                yield Executor(conn)
            return
        # BEGIN and COMMIT are queued like any statement (psycopg's own transaction blocks
        # would sync around each), so they cost no round trip of their own.
        async with self._conn() as conn:
            try:
                async with conn.pipeline() as p:
                    await conn.execute("BEGIN")
                    tx = Executor(conn, p)
                    yield tx
                    await conn.execute("COMMIT")
                for deferred in tx._deferred:  # their results arrived with COMMIT's
                    await deferred._read()
            except BaseException:
                # Whatever failed (the body, a queued statement, the commit), the transaction
                # is not committed: end it so the connection goes back clean.
                # (If the connection broke, the pool discards it on return instead.)
                if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                    with contextlib.suppress(psycopg.Error):
                        await conn.execute("ROLLBACK")
                raise

    async def send(self, name: str, params: object = NoParams()) -> None:
        """Runs a statement whose result is not read. In a pipelined transaction it is only
        queued: it goes out with the next statement whose result is read, or with COMMIT,
        and an error it raises is raised there (aborting the transaction)."""
        if self._pipeline is None:
            await self.execute(name, params)
            return
        async with self._conn() as conn:
            await conn.cursor().execute(queries[name], _params(params), prepare=True)

    async def defer(self, name: str, params: object = NoParams()) -> Deferred:
        """Runs a statement whose rows are read only once its transaction has committed. In
        a pipelined transaction it is queued like :meth:`send` (no round trip of its own)
        and its rows are there after the transaction's block; otherwise it runs now."""
        if self._pipeline is None:
            return Deferred(None, await self.fetch(name, params))
        async with self._conn() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(queries[name], _params(params), prepare=True)
        deferred = Deferred(cur)
        self._deferred.append(deferred)
        return deferred

    async def run(self, batch: Batch) -> None:
        """Sends a batch's statements, then reads all their results (one round trip in
        pipeline mode; outside a pipelined transaction, one pipeline for the batch)."""
        async with self._conn() as conn:
            cursors: list[AsyncCursor[Row]] = []
            if self._pipeline is not None:
                for name, params in batch._calls:
                    cur = conn.cursor(row_factory=dict_row)
                    await cur.execute(queries[name], _params(params), prepare=True)
                    cursors.append(cur)
                await self._pipeline.sync()
            else:
                async with conn.pipeline():
                    for name, params in batch._calls:
                        cur = conn.cursor(row_factory=dict_row)
                        await cur.execute(queries[name], _params(params), prepare=True)
                        cursors.append(cur)
            batch._results = [
                await cur.fetchall() if cur.description is not None else [] for cur in cursors
            ]

    async def fetch(self, name: str, params: object = NoParams()) -> list[Row]:
        async with self._conn() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(queries[name], _params(params), prepare=True)
            if self._pipeline is not None:
                await self._pipeline.sync()
            return await cur.fetchall() if cur.description else []

    async def fetchone(self, name: str, params: object = NoParams()) -> Row | None:
        rows = await self.fetch(name, params)
        return rows[0] if rows else None

    async def execute(self, name: str, params: object = NoParams()) -> int:
        """Runs a statement and returns how many rows it touched."""
        async with self._conn() as conn, conn.cursor() as cur:
            await cur.execute(queries[name], _params(params), prepare=True)
            if self._pipeline is not None:
                await self._pipeline.sync()
            return cur.rowcount
