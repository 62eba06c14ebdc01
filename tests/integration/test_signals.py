"""Signals against a real Postgres: NOTIFY goes out with the commit, local subscribers run
after it, a rollback does neither, and capacity changes stay in the replica.

A second connection LISTENs like another replica's listener. Postgres delivers
notifications in commit order, so "nothing was sent" is checked by committing a marker
afterwards and seeing it arrive first: no sleeps.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from stoker.db import Executor, connect
from stoker.engine.notify import FINISHED, QUEUE
from stoker.engine.signals import Signals
from tests.harness import SCHEMA

MARKER = 999_999


class Boom(Exception):
    """Rolls a test transaction back."""


@pytest.fixture
async def listener(db_url: str) -> AsyncIterator[psycopg.AsyncConnection[object]]:
    conn = await connect(db_url, SCHEMA)
    try:
        for channel in (QUEUE, FINISHED):
            await conn.execute(f"LISTEN {channel}")
        yield conn
    finally:
        await conn.close()


async def received(conn: psycopg.AsyncConnection[object], n: int) -> list[tuple[str, str]]:
    """The next ``n`` notifications as (channel, payload), waiting for them."""
    got: list[tuple[str, str]] = []
    async for note in conn.notifies(timeout=10.0, stop_after=n):
        got.append((note.channel, note.payload))
    assert len(got) == n, f"expected {n} notifications, got {got}"
    return got


async def commit_marker(signals: Signals, db: Executor) -> None:
    async with signals.transaction(db) as (_, out):
        out.queued(MARKER)


async def test_a_committed_transaction_notifies_then_calls_local_subscribers(
    db: Executor, listener: psycopg.AsyncConnection[object]
) -> None:
    signals = Signals("e1")
    queued: list[set[int]] = []
    finished: list[list[uuid.UUID]] = []
    signals.on_queued(queued.append)
    signals.on_finished(finished.append)
    run = uuid.uuid4()

    async with signals.transaction(db) as (_, out):
        out.queued(1)
        out.finished(2, [run])
        assert queued == [] and finished == []  # nothing before the commit

    assert queued == [{1}]
    assert finished == [[run]]
    assert sorted(await received(listener, 2)) == [(FINISHED, "2:e1"), (QUEUE, "1:e1")]


async def test_a_rolled_back_transaction_signals_nothing(
    db: Executor, listener: psycopg.AsyncConnection[object]
) -> None:
    signals = Signals("e1")
    calls: list[object] = []
    signals.on_queued(calls.append)
    signals.on_finished(calls.append)

    with pytest.raises(Boom):
        async with signals.transaction(db) as (_, out):
            out.queued(1, gated=True)
            out.finished(2, [uuid.uuid4()])
            raise Boom
    assert calls == []
    assert signals.gated() == set()

    await commit_marker(signals, db)
    assert await received(listener, 1) == [(QUEUE, f"{MARKER}:e1")]
    assert calls == [{MARKER}]


async def test_gated_tenants_are_set_after_commit_and_cleared_by_the_scheduler(
    db: Executor,
) -> None:
    signals = Signals("e1")
    async with signals.transaction(db) as (_, out):
        out.queued(3, gated=True)
        out.queued(4)
        assert signals.gated() == set()
    assert signals.gated() == {3}
    # What the scheduler does after an admission round for each gated tenant.
    signals.ungate(3)
    signals.gate([5])
    assert signals.gated() == {5}


async def test_capacity_wakes_local_subscribers_only(
    db: Executor, listener: psycopg.AsyncConnection[object]
) -> None:
    signals = Signals("e1")
    capacity: list[int] = []
    queued: list[set[int]] = []
    signals.on_capacity(capacity.append)
    signals.on_queued(queued.append)

    signals.capacity(7)
    assert capacity == [7]
    assert queued == []

    await commit_marker(signals, db)
    assert await received(listener, 1) == [(QUEUE, f"{MARKER}:e1")]


async def test_remote_signals_reach_local_subscribers_without_notifying_again(
    db: Executor, listener: psycopg.AsyncConnection[object]
) -> None:
    signals = Signals("e1")
    queued: list[set[int]] = []
    tenants: list[int] = []
    signals.on_queued(queued.append)
    signals.on_tenant_finished(tenants.append)

    signals.remote_queued(8)
    signals.remote_finished(9)
    assert queued == [{8}]
    assert tenants == [9]

    await commit_marker(signals, db)
    assert await received(listener, 1) == [(QUEUE, f"{MARKER}:e1")]
