"""The statements behind a durable run's operations on a real Postgres: the REST log's
pages and pending entries follow the active branch after a reset, and the retention's
ANALYZE covers today's partitions of the durable log."""

from __future__ import annotations

import asyncio

from stoker.db import Executor, connect
from stoker.db.store import NoParams, retention
from stoker.db.store import durable as store
from tests.harness import SCHEMA
from tests.integration.test_durable_store import CREATED, append, open_log, sleep, step


async def test_the_log_pages_and_its_pending_entries_follow_the_active_branch(
    db: Executor,
) -> None:
    await open_log(db, 1)
    await append(db, 1, 1, [step(1, "a", 1), step(2, "b", 2), step(3, "c", 3), sleep(4)])

    async def page(after: int, limit: int) -> list[tuple[int, int, str]]:
        rows = await store.durable_log_page(db, store.DurableLogPage(1, CREATED, after, limit))
        return [(r["position"], r["branch"], r["name"]) for r in rows]

    async def pending() -> list[tuple[int, int, str]]:
        rows = await store.durable_log_pending(db, store.DurableLogPending(1, CREATED))
        return [(r["position"], r["branch"], r["name"]) for r in rows]

    assert await page(0, 2) == [(1, 1, "a"), (2, 1, "b")]
    assert await page(2, 10) == [(3, 1, "c"), (4, 1, "sleep")]
    assert await pending() == [(4, 1, "sleep")]

    async with db.transaction() as tx:
        await store.lock_durable_log(tx, store.LockDurableLog(1, CREATED))
        done = await store.reset_durable_log(tx, store.ResetDurableLog(1, CREATED, 2, "test"))
    assert done is not None and (done["branch"], done["dropped"]) == (2, 1)
    # Position 1 still shows the root branch's entry; 2.. are gone until recorded again.
    assert await page(0, 10) == [(1, 1, "a")]
    assert await pending() == []
    await append(db, 1, done["invocation"], [step(2, "b", 20), sleep(3)])
    assert await page(0, 10) == [(1, 1, "a"), (2, 2, "b"), (3, 2, "sleep")]
    assert await pending() == [(3, 2, "sleep")]


async def test_the_retention_analyzes_today_s_durable_partitions(db: Executor, db_url: str) -> None:
    day = CREATED.date()
    await retention.ensure_partitions(db, retention.EnsurePartitions(day, 1))
    await open_log(db, 1)
    await append(db, 1, 1, [step(1, "a", 1)])
    parts = [f"{t}_p{day:%Y%m%d}" for t in ("durable_log", "durable_branch", "durable_entry")]

    async def analyzed() -> set[str]:
        conn = await connect(db_url, SCHEMA)
        try:
            cur = await conn.execute(
                "SELECT relname FROM pg_stat_user_tables"
                " WHERE relname = ANY(%s) AND last_analyze IS NOT NULL",
                (parts,),
            )
            return {r[0] for r in await cur.fetchall()}
        finally:
            await conn.close()

    assert await analyzed() == set()
    await retention.analyze_durable_day(db, NoParams())
    for _ in range(100):  # the statistics are reported as the ANALYZE ends
        if await analyzed() == set(parts):
            break
        await asyncio.sleep(0.05)
    assert await analyzed() == set(parts)


async def test_a_due_sleep_is_numbered_before_the_calls_appended_after_it(db: Executor) -> None:
    # The worker goes past a sleep whose deadline passed without waiting for the sweeper;
    # what it appends next must be numbered after the sleep, or a replay's release gate
    # would hold the sleep back for a call the body only makes after it.
    await open_log(db, 1)
    await append(db, 1, 1, [step(1, "a", 1), sleep(2, delay_ms=0)])
    async with db.transaction() as tx:
        await store.lock_durable_log(tx, store.LockDurableLog(1, CREATED))
        settled = await store.settle_due_durable_timers_of(
            tx, store.SettleDueDurableTimersOf(1, CREATED)
        )
        await append(tx, 1, 1, [step(3, "c", 3)])
    assert [r["position"] for r in settled] == [2]
    rows = await store.visible_durable_log(db, store.VisibleDurableLog(1, CREATED))
    assert [(r["position"], r["status"], r["satisfied_seq"]) for r in rows] == [
        (1, "ok", 1),
        (2, "ok", 2),
        (3, "ok", 3),
    ]
