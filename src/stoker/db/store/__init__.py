"""The typed statement layer: every SQL statement the engine runs, with its params and rows.

One module per aggregate (``tasks``, ``queue``, ``dags``, ...) sits beside one ``.sql`` file
of the same name under ``stoker/db/sql``. For each named block the module declares

* a frozen params dataclass whose fields are exactly the block's ``%(name)s`` placeholders,
* a ``TypedDict`` for the rows it returns (when it returns rows), and
* one module-level statement object named like the block, whose kind says what a call
  returns — :class:`Many` (all rows), :class:`One` (the first row or ``None``) or
  :class:`Exec` (the number of rows touched), as River's ``:many``/``:one``/``:execrows``::

      @dataclass(frozen=True, slots=True)
      class ClaimQueueItems:
          tenant_id: int
          limit: int

      class ClaimedItem(TypedDict):
          id: int
          task_id: int

      claim_queue_items = Many[ClaimQueueItems, ClaimedItem]("claim_queue_items")

      rows = await claim_queue_items(tx, ClaimQueueItems(tenant_id, 100))

A call runs on an :class:`~stoker.db.Executor` — a pool (its own transaction) or the
caller's open transaction. ``tests/unit/test_store.py`` checks every statement object
against its block: the names match, the params fields equal the placeholders, and no block
is left without a statement.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Generic, TypeVar, cast

from stoker.db.executor import Batch, Deferred, Executor, NoParams
from stoker.db.queries import queries

P = TypeVar("P")
R = TypeVar("R")

__all__ = ["Exec", "Later", "Many", "NoParams", "One", "Queued", "Statement", "params_type"]


class Queued(Generic[R]):
    """A statement added to a :class:`~stoker.db.Batch`: its rows once the batch has run."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: Batch, index: int) -> None:
        self._batch = batch
        self._index = index

    @property
    def rows(self) -> list[R]:
        return cast(list[R], self._batch.rows(self._index))

    @property
    def row(self) -> R | None:
        rows = self.rows
        return rows[0] if rows else None


class Later(Generic[R]):
    """A statement run with :meth:`Many.defer`: its rows once its transaction committed."""

    __slots__ = ("_deferred",)

    def __init__(self, deferred: Deferred) -> None:
        self._deferred = deferred

    @property
    def rows(self) -> list[R]:
        return cast(list[R], self._deferred.rows)


class Statement(Generic[P]):
    """A named SQL block; the kinds below say what a call returns.

    Declared as ``Kind[Params, Row]("block_name")``; the params type is read back from that
    alias by :func:`params_type` (for the drift test), so it is written once.
    """

    def __init__(self, name: str) -> None:
        if name not in queries:
            raise KeyError(f"no SQL block named {name!r}")
        self.name = name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class Many(Statement[P], Generic[P, R]):
    """A statement whose call returns every row."""

    async def __call__(self, db: Executor, params: P) -> list[R]:
        return cast(list[R], await db.fetch(self.name, params))

    def add(self, batch: Batch, params: P) -> Queued[R]:
        """Adds the statement to ``batch``; its rows once the batch has run."""
        return Queued(batch, batch.add(self.name, params))

    async def defer(self, db: Executor, params: P) -> Later[R]:
        """Runs the statement, its rows read once the transaction has committed
        (:meth:`Executor.defer`: only queued in a pipelined transaction)."""
        return Later(await db.defer(self.name, params))


class One(Statement[P], Generic[P, R]):
    """A statement whose call returns its first row, or ``None`` when there is none."""

    async def __call__(self, db: Executor, params: P) -> R | None:
        return cast(R | None, await db.fetchone(self.name, params))

    def add(self, batch: Batch, params: P) -> Queued[R]:
        """Adds the statement to ``batch``; its row (``.row``) once the batch has run."""
        return Queued(batch, batch.add(self.name, params))


class Exec(Statement[P]):
    """A statement whose call returns how many rows it touched."""

    async def __call__(self, db: Executor, params: P) -> int:
        return await db.execute(self.name, params)

    async def send(self, db: Executor, params: P) -> None:
        """Runs the statement without reading its result (:meth:`Executor.send`: only
        queued in a pipelined transaction)."""
        await db.send(self.name, params)


def params_type(statement: Statement[Any]) -> type[Any]:
    """The params dataclass a statement was declared with (``Kind[Params, ...]``)."""
    alias = getattr(statement, "__orig_class__", None)
    args = getattr(alias, "__args__", ())
    if not args or not dataclasses.is_dataclass(args[0]):
        raise TypeError(f"{statement!r} must be declared as Kind[Params, ...](name)")
    return cast(type[Any], args[0])
