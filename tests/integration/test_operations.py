"""The request-driven operations the REST API, the SDK's Admin calls, the CLI and the
dashboard share, against a real Postgres: workers (list with current runs, pause, resume),
rate limits (put, list with use, delete), run listing and bulk filters — each scoped to
its tenant."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg import AsyncConnection

from stoker.db import Executor, connect
from stoker.engine import ratelimits, workers
from stoker.engine.auth import create_tenant
from stoker.engine.runs import bulk, listing
from stoker.engine.runs.ops import RunFilter
from stoker.errors import InvalidRequestError, NotFoundError
from tests.harness import SCHEMA

T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
async def seed(db_url: str) -> AsyncIterator[AsyncConnection[Any]]:
    async with await connect(db_url, SCHEMA) as conn:
        yield conn


async def _worker(conn: AsyncConnection[Any], tenant_id: int, name: str) -> tuple[int, str]:
    ext = uuid.uuid4()
    cur = await conn.execute(
        "INSERT INTO worker (tenant_id, external_id, name, slots, task_names)"
        " VALUES (%s, %s, %s, 4, '{add}') RETURNING id",
        (tenant_id, ext, name),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), str(ext)


async def _run(
    conn: AsyncConnection[Any], tenant_id: int, status: str, created_at: datetime, **meta: str
) -> tuple[int, str]:
    ext = uuid.uuid4()
    cur = await conn.execute(
        "INSERT INTO task (tenant_id, external_id, task_name, status, input,"
        " additional_metadata, created_at) VALUES (%s, %s, 'add', %s, '{}', %s, %s) RETURNING id",
        (tenant_id, ext, status, json.dumps(meta), created_at),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), str(ext)


class Pauses:
    """Records what a dispatcher would be told."""

    engine_id = "test"

    def __init__(self) -> None:
        self.calls: list[tuple[int, bool]] = []

    def set_paused(self, worker_id: int, paused: bool) -> bool:
        self.calls.append((worker_id, paused))
        return True


async def test_workers_list_pause_resume_within_the_tenant(
    db: Executor, seed: AsyncConnection[Any]
) -> None:
    mine, theirs = await create_tenant(db, "acme"), await create_tenant(db, "globex")
    wid, ext = await _worker(seed, mine, "w1")
    await _worker(seed, theirs, "their")
    task_id, run_id = await _run(seed, mine, "RUNNING", T0)
    await seed.execute(
        "INSERT INTO task_runtime (task_id, tenant_id, attempt, worker_id) VALUES (%s, %s, 0, %s)",
        (task_id, mine, wid),
    )
    (listed,) = await workers.list_workers(db, mine)
    assert (listed.worker_id, listed.running, listed.current_runs) == (ext, 1, [run_id])
    assert (listed.paused, listed.free_slots) == (False, 3)
    assert listed.heartbeat_age_s < 60

    pauses = Pauses()
    paused = await workers.pause_worker(db, mine, ext, dispatcher=pauses)
    assert (paused.paused, paused.free_slots, pauses.calls) == (True, 0, [(wid, True)])
    first_pause = paused.paused_at
    again = await workers.pause_worker(db, mine, ext, dispatcher=pauses)
    assert again.paused_at == first_pause  # pausing twice keeps the first time
    assert (await workers.get_worker(db, mine, ext)).current_runs == [run_id]
    resumed = await workers.resume_worker(db, mine, uuid.UUID(ext), dispatcher=pauses)
    assert (resumed.paused, resumed.paused_at, pauses.calls[-1]) == (False, None, (wid, False))

    for call in (workers.get_worker, workers.pause_worker, workers.resume_worker):
        with pytest.raises(NotFoundError, match=f"no worker with id {ext}"):
            await call(db, theirs, ext)
    with pytest.raises(NotFoundError, match="is not a worker id"):
        await workers.get_worker(db, mine, "w1")
    assert await workers.list_workers(db, mine, ["DEAD"]) == []


async def test_rate_limits_put_list_delete_within_the_tenant(
    db: Executor, seed: AsyncConnection[Any]
) -> None:
    mine, theirs = await create_tenant(db, "acme"), await create_tenant(db, "globex")
    made = await ratelimits.put_rate_limit(db, mine, "llm", 10, "1m")
    assert (made.key, made.limit, made.duration_s, made.dynamic, made.used) == (
        "llm",
        10,
        60.0,
        False,
        0,
    )
    # Three units started a moment ago count; a start older than the window does not.
    now_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    recent = [[now_us - 120_000_000, 5], [now_us - 1_000_000, 3]]
    await seed.execute(
        "UPDATE rate_limit SET recent = %s, clock = to_timestamp(%s / 1e6) WHERE key = 'llm'",
        (json.dumps(recent), now_us - 1_000_000),
    )
    (listed,) = await ratelimits.list_rate_limits(db, mine)
    assert listed.used == 3
    assert await ratelimits.list_rate_limits(db, theirs) == []

    class Writer:
        def __init__(self) -> None:
            self.puts: list[tuple[int, str, int, int]] = []

        async def put_rate_limit(
            self, tenant_id: int, key: str, limit: int, window_ms: int
        ) -> None:
            self.puts.append((tenant_id, key, limit, window_ms))
            await ratelimits.put_rate_limit(db, tenant_id, key, limit, window_ms / 1000)

    writer = Writer()
    await ratelimits.put_rate_limit(db, mine, "llm", 20, 30, definitions=writer)
    assert writer.puts == [(mine, "llm", 20, 30_000)]

    with pytest.raises(NotFoundError):
        await ratelimits.delete_rate_limit(db, theirs, "llm")
    gone = await ratelimits.delete_rate_limit(db, mine, "llm")
    assert (gone.key, gone.waiting_runs) == ("llm", 0)
    with pytest.raises(NotFoundError, match="no rate limit with key 'llm'"):
        await ratelimits.get_rate_limit(db, mine, "llm")
    for bad in [("", 1, 1), ("k", 0, 1), ("k", 1, "soon"), ("k", 1, 0), ("k\x00", 1, 1)]:
        with pytest.raises(InvalidRequestError):
            await ratelimits.put_rate_limit(db, mine, *bad)  # type: ignore[arg-type]


async def test_run_pages_and_bulk_filters(db: Executor, seed: AsyncConnection[Any]) -> None:
    mine, theirs = await create_tenant(db, "acme"), await create_tenant(db, "globex")
    ids = [
        (await _run(seed, mine, "QUEUED", T0 + timedelta(minutes=i), batch="b1"))[1]
        for i in range(5)
    ]
    _, failed = await _run(seed, mine, "FAILED", T0 + timedelta(minutes=9), batch="b1")
    await _run(seed, theirs, "QUEUED", T0, batch="b1")

    first = await listing.list_runs(db, mine, statuses=["queued"], limit=3)
    assert [str(r["external_id"]) for r in first.items] == ids[::-1][:3]
    second = await listing.list_runs(db, mine, statuses=["QUEUED"], cursor=first.next_cursor)
    assert [str(r["external_id"]) for r in second.items] == ids[::-1][3:]
    assert second.next_cursor is None
    assert (await listing.get_run(db, mine, failed))["status"] == "FAILED"
    with pytest.raises(NotFoundError):
        await listing.get_run(db, theirs, failed)
    with pytest.raises(InvalidRequestError, match="unknown run status DONE"):
        await listing.list_runs(db, mine, statuses=["DONE"])
    with pytest.raises(InvalidRequestError, match=r"outside 1\.\.500"):
        await listing.list_runs(db, mine, limit=0)

    # A filter is narrowed to what the action applies to.
    everything = RunFilter(additional_metadata={"batch": "b1"})
    cancel = bulk.narrow("cancel", everything)
    assert sorted(await bulk.matching_runs(db, mine, cancel, 100)) == sorted(ids)
    replay = bulk.narrow("replay", everything)
    assert await bulk.matching_runs(db, mine, replay, 100) == [failed]
    assert len(await bulk.matching_runs(db, mine, cancel, 2)) == 2
    window = RunFilter(since=T0 + timedelta(minutes=3), additional_metadata={"batch": "b1"})
    assert len(await bulk.matching_runs(db, mine, bulk.narrow("cancel", window), 100)) == 2
    with pytest.raises(InvalidRequestError, match="matches none of them"):
        bulk.narrow("cancel", RunFilter(statuses=["COMPLETED"]))
    with pytest.raises(NotFoundError):
        await bulk.get_operation(db, mine, uuid.uuid4())
    assert await bulk.list_operations(db, mine) == []


async def test_bulk_operation_rows_advance_once_fail_after_errors_and_change_hands(
    db: Executor,
) -> None:
    from stoker.db.store import bulk as store

    tenant = await create_tenant(db, "acme")
    oid = uuid.uuid4()
    made = await store.create_bulk_operation(
        db, store.CreateBulkOperation(tenant, oid, "cancel", "", None, ["a", "b", "c"], "e1")
    )
    assert made is not None
    op = int(made["id"])
    chunk = await store.next_bulk_chunk(db, store.NextBulkChunk(op, "e1", 2))
    assert chunk == {"position": 0, "run_ids": ["a", "b"]}
    assert await store.next_bulk_chunk(db, store.NextBulkChunk(op, "e2", 2)) is None  # not e2's
    step = store.AdvanceBulkOperation(op, "e1", 0, 2, 2, 0)
    assert await store.advance_bulk_operation(db, step) == {"state": "RUNNING"}
    assert await store.advance_bulk_operation(db, step) is None  # a chunk counts once
    progress = await bulk.get_operation(db, tenant, oid)
    assert (progress.state, progress.done, progress.failed) == ("RUNNING", 2, 0)

    # Another replica takes over only once the owner's heartbeat is stale.
    claim = store.ClaimStaleBulkOperations("e2", 60_000, 10)
    assert await store.claim_stale_bulk_operations(db, claim) == []
    stale = store.ClaimStaleBulkOperations("e2", 0, 10)
    (claimed,) = await store.claim_stale_bulk_operations(db, stale)
    assert (claimed["external_id"], claimed["action"]) == (oid, "cancel")
    assert await store.next_bulk_chunk(db, store.NextBulkChunk(op, "e1", 2)) is None
    chunk = await store.next_bulk_chunk(db, store.NextBulkChunk(op, "e2", 2))
    assert chunk == {"position": 2, "run_ids": ["c"]}

    # A failing chunk is noted; the third failure gives the operation up.
    for state in ("RUNNING", "RUNNING", "FAILED"):
        noted = await store.note_bulk_error(db, store.NoteBulkError(op, "e2", "boom", 3))
        assert noted == {"state": state}
    failed = await bulk.get_operation(db, tenant, oid)
    assert (failed.state, failed.error, failed.finished_at is not None) == ("FAILED", "boom", True)
    assert await store.claim_stale_bulk_operations(db, stale) == []
