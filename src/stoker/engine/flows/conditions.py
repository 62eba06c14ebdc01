"""Conditions: the registry of what waiting workflow steps wait for (``task_wait``).

A PENDING step whose parents are final but whose ``wait_for`` is not yet met waits on
sleep and event conditions, one ``task_wait`` row per condition (its path in the step's
condition tree, see :func:`stoker._core.dag.waits_of`):

* **registering** — progression collects the conditions of the steps it decided must wait
  (:func:`register_waits`) and writes them with its other decisions (:func:`insert_waits`),
  in the transaction that made the decision; a condition already known is not registered
  twice;
* **firing sleeps** — a sleep is due at ``fire_at``; the leader's sweeper
  (:mod:`stoker.engine.controllers.sweeper`) reads the runs with due sleeps
  (:meth:`Conditions.due_sleeps`), and :meth:`Conditions.fire` marks them satisfied and
  progresses the runs in one transaction, after locking the runs (the order every writer
  keeps: ``dag`` rows, then their waits);
* **matching events** — user events satisfy event conditions whose key matches and whose
  expression holds; the matching is done by the event ingest
  (:mod:`stoker.engine.ingest.workflows`), which then progresses the runs.

Satisfied conditions are read back by progression with the steps (``dag_steps``), and
:func:`stoker._core.dag.decide` decides again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

from stoker._core.dag import StepSpec, waits_of
from stoker.db import Executor, NoParams
from stoker.db.store import conditions as condition_store
from stoker.db.store import dags as dag_store
from stoker.engine.signals import Outbox, Signals

Progress = Callable[[Executor, Outbox, Iterable[int]], Awaitable[None]]
"""Progresses DAG runs inside a transaction, telling what it changed through its outbox."""


def no_waits() -> condition_store.InsertWaits:
    """An empty batch of waits to register."""
    return condition_store.InsertWaits([], [], [], [], [], [], [], [])


def register_waits(
    waits: condition_store.InsertWaits,
    task_id: int,
    step: StepSpec,
    dag_id: int,
    tenant_id: int,
    known: dict[str, bool] | None,
) -> None:
    """Adds to ``waits`` the sleep and event conditions of a step that must wait, except
    those already registered (``known``: satisfied or not, by condition path)."""
    for path, cond in waits_of(step):
        if known is not None and path in known:
            continue
        waits.task_ids.append(task_id)
        waits.conds.append(path)
        waits.tenant_ids.append(tenant_id)
        waits.dag_ids.append(dag_id)
        waits.kinds.append(cond.kind)
        waits.sleeps_ms.append(int(cond.seconds * 1000))
        waits.event_keys.append(cond.event_key)
        waits.expressions.append(cond.expression)


async def insert_waits(tx: Executor, waits: condition_store.InsertWaits) -> None:
    """Writes registered waits inside the progression's transaction."""
    if waits.task_ids:
        await condition_store.insert_waits(tx, waits)


class Conditions:
    """Fires due sleeps; the runs they belong to are progressed with ``progress``."""

    def __init__(self, db: Executor, signals: Signals, progress: Progress) -> None:
        self._db = db
        self._signals = signals
        self._progress = progress

    async def due_sleeps(self, limit: int) -> list[int]:
        """Up to ``limit`` DAG runs with a sleep that has elapsed (earliest first)."""
        rows = await condition_store.due_sleep_dags(self._db, condition_store.DueSleepDags(limit))
        return [int(r["dag_id"]) for r in rows]

    async def next_sleep(self) -> datetime | None:
        """When the next unfired sleep is due (None: no sleep waits)."""
        row = await condition_store.next_sleep(self._db, NoParams())
        return None if row is None else row["fire_at"]

    async def fire(self, dag_ids: Iterable[int]) -> None:
        """Fires the due sleeps of runs and progresses them, in one transaction."""
        async with self._signals.transaction(self._db) as (tx, out):
            # Lock the runs before touching their waits: the order every writer keeps.
            ids = [
                int(r["id"])
                for r in await dag_store.lock_dags(tx, dag_store.LockDags(list(dag_ids)))
            ]
            await condition_store.fire_sleeps(tx, condition_store.FireSleeps(ids))
            await self._progress(tx, out, ids)
