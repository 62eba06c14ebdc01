"""The durable log's statements (db/sql/durable.sql) on a real Postgres: appends are
idempotent and expose a changed call, settlements are numbered under the log's lock, due
timers are shared between sweepers by SKIP LOCKED, resets branch the visible log, and
eviction is accepted only when no wake-up can be lost, and a settlement restores an evicted
task once, ahead of ordinary work."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stoker._core.durable import (
    Branch,
    EntryKind,
    Operation,
    check_call,
    fingerprint,
    visible_positions,
)
from stoker._proto import engine_pb2 as pb
from stoker.db import Executor, connect
from stoker.db.queries import queries
from stoker.db.store import NoParams
from stoker.db.store import durable as store
from stoker.engine.durable.log import DurableLogs
from stoker.engine.durable.waits import DurableWaits
from stoker.errors import NonDeterminismError
from tests.harness import SCHEMA

TENANT = 1
CREATED = datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Call:
    """One call to append (the test's shorthand for a row of AppendDurableEntries)."""

    position: int
    kind: EntryKind
    name: str
    status: str = "pending"
    result: Any = None
    delay_ms: int | None = None
    wake_at: datetime | None = None
    child: uuid.UUID | None = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.kind, self.name, timer=self.delay_ms is not None)


def step(position: int, name: str, result: Any = None) -> Call:
    return Call(position, EntryKind.STEP, name, status="ok", result=result)


def sleep(position: int, delay_ms: int = 60_000, wake_at: datetime | None = None) -> Call:
    return Call(position, EntryKind.WAIT, "sleep", delay_ms=delay_ms, wake_at=wake_at)


async def open_log(db: Executor, *task_ids: int) -> None:
    created = await store.create_durable_logs(
        db,
        store.CreateDurableLogs(
            list(task_ids), [CREATED] * len(task_ids), [TENANT] * len(task_ids)
        ),
    )
    assert sorted(r["task_id"] for r in created) == sorted(task_ids)
    bumped = await store.bump_durable_invocations(
        db, store.BumpDurableInvocations(list(task_ids), [CREATED] * len(task_ids))
    )
    assert {r["invocation"] for r in bumped} == {1}


async def append(
    db: Executor, task_id: int, invocation: int, calls: list[Call]
) -> list[store.Appended]:
    return await store.append_durable_entries(
        db,
        store.AppendDurableEntries(
            task_id=task_id,
            created_at=CREATED,
            invocation=invocation,
            positions=[c.position for c in calls],
            kinds=[str(c.kind) for c in calls],
            names=[c.name for c in calls],
            fingerprints=[c.fingerprint for c in calls],
            requests=[None for _ in calls],
            delays_ms=[c.delay_ms for c in calls],
            wake_ats=[c.wake_at for c in calls],
            child_external_ids=[c.child for c in calls],
            statuses=[c.status for c in calls],
            results=[None if c.result is None else json.dumps(c.result) for c in calls],
            errors=[None for _ in calls],
        ),
    )


async def settle(
    db: Executor, entries: list[tuple[int, int, int]], fired: str | None = None
) -> list[store.Settled]:
    """Settles (task, branch, position) entries 'ok', as a timer firing does."""
    n = len(entries)
    return await store.settle_durable_entries(
        db,
        store.SettleDurableEntries(
            task_ids=[t for t, _, _ in entries],
            created_ats=[CREATED] * n,
            branches=[b for _, b, _ in entries],
            positions=[p for _, _, p in entries],
            statuses=["ok"] * n,
            results=["null"] * n,
            errors=[None] * n,
            fired=[fired] * n,
            event_ids=[None] * n,
        ),
    )


async def log_of(db: Executor, task_id: int) -> store.DurableLog:
    async with db.transaction() as tx:
        row = await store.lock_durable_log(tx, store.LockDurableLog(task_id, CREATED))
    assert row is not None
    return row


async def visible(db: Executor, task_id: int) -> list[tuple[int, int]]:
    rows = await store.visible_durable_log(db, store.VisibleDurableLog(task_id, CREATED))
    return [(r["position"], r["branch"]) for r in rows]


async def test_opening_a_log_twice_keeps_the_first(db: Executor) -> None:
    await open_log(db, 10)
    again = await store.create_durable_logs(
        db, store.CreateDurableLogs([10, 11], [CREATED, CREATED], [TENANT, TENANT])
    )
    assert [r["task_id"] for r in again] == [11]
    log = await log_of(db, 10)
    assert (log["invocation"], log["active_branch"], log["satisfied_counter"]) == (1, 1, 0)
    assert log["evicted_at"] is None


async def test_an_append_re_sent_is_idempotent_and_a_changed_call_is_detected(
    db: Executor,
) -> None:
    await open_log(db, 1)
    calls = [step(1, "charge", {"id": 7}), sleep(2, delay_ms=60_000)]
    first = await append(db, 1, 1, calls)
    assert [(r["position"], r["inserted"], r["status"]) for r in first] == [
        (1, True, "ok"),
        (2, True, "pending"),
    ]
    charged, slept = first
    assert (charged["result"], charged["satisfied_seq"]) == ({"id": 7}, 1)
    assert charged["satisfied_at"] is not None
    # the deadline is the database clock's now() plus the delay, written once
    assert slept["wake_at"] is not None
    assert slept["wake_at"] - slept["recorded_at"] == timedelta(seconds=60)
    assert slept["satisfied_seq"] is None
    assert (await log_of(db, 1))["satisfied_counter"] == 1

    # A re-send (a lost acknowledgement) changes nothing: the same rows come back.
    again = await append(db, 1, 1, [step(1, "charge", {"id": 8}), sleep(2, delay_ms=5)])
    assert [r["inserted"] for r in again] == [False, False]
    assert again[0]["result"] == {"id": 7}
    assert again[1]["wake_at"] == slept["wake_at"]
    assert (await log_of(db, 1))["satisfied_counter"] == 1

    # Another call at a recorded position comes back as what was recorded there.
    other = step(2, "refund")
    [found] = await append(db, 1, 1, [other])
    assert not found["inserted"] and found["fingerprint"] == slept["fingerprint"]
    recorded = Operation(found["kind"], found["name"], found["fingerprint"])
    with pytest.raises(NonDeterminismError, match="position 2"):
        check_call(2, recorded, Operation(other.kind, other.name, other.fingerprint))

    # A stale invocation records nothing.
    assert await append(db, 1, 0, [step(3, "late")]) == []
    assert await visible(db, 1) == [(1, 1), (2, 1)]


async def test_settling_takes_the_next_sequence_under_the_lock(db: Executor) -> None:
    await open_log(db, 1, 2)
    await append(db, 1, 1, [step(1, "a"), sleep(2), sleep(3), sleep(4), sleep(5)])

    async def settle_locked(position: int) -> int:
        async with db.transaction() as tx:
            await store.lock_durable_log(tx, store.LockDurableLog(1, CREATED))
            [row] = await settle(tx, [(1, 1, position)], fired="sleep")
            return row["satisfied_seq"]

    # Two writers at once (a timer and an event, say): one waits for the other's lock, and
    # each gets its own number.
    seqs = await asyncio.gather(settle_locked(2), settle_locked(3))
    assert sorted(seqs) == [2, 3]
    # A batch numbers its entries in the order given (its logs locked in task id order).
    async with db.transaction() as tx:
        locked = await store.lock_durable_logs(
            tx, store.LockDurableLogs([2, 1], [CREATED, CREATED])
        )
        assert [r["task_id"] for r in locked] == [1, 2]
        rows = await settle(tx, [(1, 1, 5), (1, 1, 4)])
    assert {r["position"]: r["satisfied_seq"] for r in rows} == {5: 4, 4: 5}
    # Settling again is a no-op, and the counter does not move.
    assert await settle(db, [(1, 1, 2)]) == []
    assert (await log_of(db, 1))["satisfied_counter"] == 5
    entries = await store.visible_durable_log(db, store.VisibleDurableLog(1, CREATED))
    assert {e["position"]: e["fired"] for e in entries}[2] == "sleep"
    assert [e["satisfied_seq"] for e in entries if e["position"] in (4, 5)] == [5, 4]


async def test_due_timers_are_shared_between_two_sweepers(db: Executor) -> None:
    await open_log(db, 1, 2, 3)
    past = datetime.now(UTC) - timedelta(seconds=10)
    await append(db, 1, 1, [sleep(1, wake_at=past)])
    await append(db, 2, 1, [sleep(1, wake_at=past + timedelta(seconds=1))])
    await append(db, 3, 1, [sleep(1, delay_ms=3_600_000)])  # not due for an hour

    async with db.transaction() as a:
        first = await store.claim_due_durable_timers(a, store.ClaimDueDurableTimers(limit=1))
        assert [r["task_id"] for r in first] == [1]
        async with db.transaction() as b:
            # Task 1's log is held by the first sweeper: the second skips it.
            second = await store.claim_due_durable_timers(b, store.ClaimDueDurableTimers(limit=10))
            assert [r["task_id"] for r in second] == [2]
            assert [r["position"] for r in await settle(b, [(2, 1, 1)])] == [1]
        assert [r["task_id"] for r in await settle(a, [(1, 1, 1)])] == [1]

    assert await store.claim_due_durable_timers(db, store.ClaimDueDurableTimers(limit=10)) == []
    nxt = await store.next_durable_wake_at(db, NoParams())
    assert nxt is not None and nxt["wake_at"] is not None
    assert nxt["wake_at"] > datetime.now(UTC) + timedelta(minutes=59)


async def test_reset_branches_the_visible_log(db: Executor) -> None:
    await open_log(db, 1)
    past = datetime.now(UTC) - timedelta(seconds=1)
    await append(db, 1, 1, [step(p, f"s{p}") for p in range(1, 5)] + [sleep(5, wake_at=past)])
    # the steps of one append are numbered in position order
    settled = await store.visible_durable_log(db, store.VisibleDurableLog(1, CREATED))
    assert [e["satisfied_seq"] for e in settled] == [1, 2, 3, 4, None]
    branches = {1: Branch(None, 1)}
    recorded = [(1, p) for p in range(1, 6)]

    async def reset(position: int) -> store.Reset | None:
        async with db.transaction() as tx:
            await store.lock_durable_log(tx, store.LockDurableLog(1, CREATED))
            return await store.reset_durable_log(
                tx, store.ResetDurableLog(1, CREATED, position, "test")
            )

    # Out of 1 .. last visible + 1: refused, nothing changes.
    assert await reset(0) is None
    assert await reset(7) is None

    done = await reset(3)
    assert done is not None
    assert (done["branch"], done["parent_branch"], done["invocation"]) == (2, 1, 2)
    assert done["dropped"] == 1  # the pending sleep at 5 is no longer visible
    branches[2] = Branch(1, 3)
    assert await visible(db, 1) == [(1, 1), (2, 1)]
    # the dropped timer is never claimed; the fenced invocation can no longer append
    assert await store.claim_due_durable_timers(db, store.ClaimDueDurableTimers(limit=10)) == []
    assert await append(db, 1, 1, [step(3, "late")]) == []

    # The new invocation records positions 3 and 4 again, on branch 2.
    rows = await append(db, 1, 2, [step(3, "s3"), step(4, "other")])
    assert [(r["branch"], r["inserted"]) for r in rows] == [(2, True), (2, True)]
    recorded += [(2, 3), (2, 4)]
    assert await visible(db, 1) == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert dict(await visible(db, 1)) == visible_positions(branches, 2, recorded)

    # Reset again below the previous fork: branch 3 shows branch 1's position 1 only.
    done = await reset(2)
    assert done is not None and (done["branch"], done["parent_branch"]) == (3, 2)
    branches[3] = Branch(2, 2)
    assert await visible(db, 1) == [(1, 1)]
    assert dict(await visible(db, 1)) == visible_positions(branches, 3, recorded)
    log = await log_of(db, 1)
    assert (log["active_branch"], log["invocation"]) == (3, 3)


async def sql(db_url: str, query: str, params: Any = ()) -> list[dict[str, Any]]:
    """Runs one statement the store has no block for (test setup and checks)."""
    conn = await connect(db_url, SCHEMA)
    try:
        cur = await conn.execute(query, params)
        if cur.description is None:
            return []
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]
    finally:
        await conn.close()


async def running_task(db_url: str, task_id: int, worker_id: int = 7) -> None:
    """A task row (RUNNING, attempt 0 on ``worker_id``) for the log ``task_id``, with the
    created_at of the logs here, so eviction and restore have a run to act on."""
    await sql(
        db_url,
        "INSERT INTO task (id, tenant_id, external_id, task_name, status, input, created_at,"
        " priority, schedule_timeout_ms) OVERRIDING SYSTEM VALUE"
        " VALUES (%s, %s, %s, 'nap', 'RUNNING', '{}', %s, 2, 60000)",
        (task_id, TENANT, uuid.uuid4(), CREATED),
    )
    await sql(
        db_url,
        "INSERT INTO task_runtime (task_id, tenant_id, attempt, worker_id) VALUES (%s, %s, 0, %s)",
        (task_id, TENANT, worker_id),
    )


async def test_eviction_is_accepted_only_when_no_wake_up_can_be_lost(
    db: Executor, db_url: str
) -> None:
    await open_log(db, 1, 2)
    await running_task(db_url, 1)
    await running_task(db_url, 2)
    await append(db, 1, 1, [step(1, "a"), sleep(2)])
    await append(db, 2, 1, [step(1, "a")])  # waits for nothing

    async def evict(
        task_id: int, invocation: int, last_seen: int, worker_id: int = 7
    ) -> store.Evicted | None:
        async with db.transaction() as tx:
            await store.lock_durable_log(tx, store.LockDurableLog(task_id, CREATED))
            return await store.evict_durable_task(
                tx, store.EvictDurableTask(task_id, CREATED, invocation, last_seen, 0, worker_id)
            )

    assert await evict(1, 0, 1) is None  # a stale invocation
    assert await evict(1, 1, 0) is None  # a settlement the worker has not seen yet
    assert await evict(2, 1, 1) is None  # nothing pending
    assert await evict(1, 1, 1, worker_id=8) is None  # not that worker's attempt
    accepted = await evict(1, 1, 1)
    assert accepted is not None and accepted["invocation"] == 1
    assert await evict(1, 1, 1) is None  # already evicted
    assert (await log_of(db, 1))["evicted_at"] == accepted["evicted_at"]
    # The attempt ended (its slot is free) without counting as a retry.
    [task] = await sql(
        db_url,
        "SELECT status, attempt, retry_count, worker_id,"
        " (SELECT count(*) FROM task_runtime WHERE task_id = 1) AS runtimes,"
        " (SELECT kind FROM task_event WHERE task_id = 1) AS event FROM task WHERE id = 1",
    )
    assert task == {
        "status": "EVICTED",
        "attempt": 0,
        "retry_count": 0,
        "worker_id": None,
        "runtimes": 0,
        "event": "EVICTED",
    }


async def test_settling_an_evicted_task_restores_it_once_ahead_of_its_priority(
    db: Executor, db_url: str
) -> None:
    await open_log(db, 1)
    await running_task(db_url, 1)
    await append(db, 1, 1, [sleep(1), sleep(2, delay_ms=120_000)])
    async with db.transaction() as tx:
        await store.lock_durable_log(tx, store.LockDurableLog(1, CREATED))
        assert await store.evict_durable_task(tx, store.EvictDurableTask(1, CREATED, 1, 0, 0, 7))
    # Ordinary work of the same priority, queued before the restore.
    await sql(
        db_url,
        "INSERT INTO queue_item (tenant_id, task_id, attempt, queue, priority)"
        " VALUES (%s, 99, 0, 'nap', 2)",
        (TENANT,),
    )

    # The settlement queues the task again in the same statement, as its next attempt.
    [woken] = await settle(db, [(1, 1, 1)])
    assert woken["restored"] and woken["evicted_at"] is not None
    assert (await log_of(db, 1))["evicted_at"] is None
    [task] = await sql(db_url, "SELECT status, attempt, retry_count FROM task WHERE id = 1")
    assert task == {"status": "QUEUED", "attempt": 1, "retry_count": 0}
    # Ahead of the ordinary item of its priority, in the scheduler's claim order.
    items = await sql(
        db_url,
        "SELECT task_id, attempt, schedule_deadline IS NOT NULL AS deadline FROM queue_item"
        " WHERE tenant_id = %s ORDER BY priority DESC, id",
        (TENANT,),
    )
    assert items == [
        {"task_id": 1, "attempt": 1, "deadline": True},
        {"task_id": 99, "attempt": 0, "deadline": False},
    ]

    # A second settlement (the other sleep) while it is queued restores nothing more.
    [again] = await settle(db, [(1, 1, 2)])
    assert not again["restored"] and again["evicted_at"] is None
    [count] = await sql(db_url, "SELECT count(*) AS n FROM queue_item WHERE task_id = 1")
    assert count == {"n": 1}


async def test_a_cancelled_evicted_task_is_not_restored(db: Executor, db_url: str) -> None:
    await open_log(db, 1)
    await running_task(db_url, 1)
    await append(db, 1, 1, [sleep(1)])
    async with db.transaction() as tx:
        await store.lock_durable_log(tx, store.LockDurableLog(1, CREATED))
        assert await store.evict_durable_task(tx, store.EvictDurableTask(1, CREATED, 1, 0, 0, 7))
    await sql(db_url, "UPDATE task SET status = 'CANCELLED' WHERE id = 1")
    [woken] = await settle(db, [(1, 1, 1)])
    assert not woken["restored"]
    assert await sql(db_url, "SELECT 1 FROM queue_item WHERE task_id = 1") == []


async def test_pending_children_are_found_by_their_run(db: Executor) -> None:
    await open_log(db, 1)
    kids = [uuid.uuid4(), uuid.uuid4()]
    await append(
        db,
        1,
        1,
        [Call(p, EntryKind.CHILD, "welcome", child=k) for p, k in enumerate(kids, start=1)],
    )
    await settle(db, [(1, 1, 1)])
    rows = await store.pending_child_entries(db, store.PendingChildEntries([*kids, uuid.uuid4()]))
    assert [(r["position"], r["child_external_id"]) for r in rows] == [(2, kids[1])]


async def test_a_run_s_log_moves_into_its_day_partition_and_is_read_from_there(
    db: Executor, db_url: str
) -> None:
    # The tables are partitioned by the run's creation day (like task_history): the
    # partition upkeep's ensure_partition moves a day's rows out of DEFAULT, and a
    # statement naming (task_id, created_at) reads that one partition.
    await open_log(db, 1)
    await append(db, 1, 1, [step(1, "a"), sleep(2)])
    conn = await connect(db_url, SCHEMA)
    try:
        await conn.set_autocommit(True)
        day = CREATED.date()
        for parent in ("durable_log", "durable_branch", "durable_entry"):
            cur = await conn.execute("SELECT ensure_partition(%s, %s)", (parent, day))
            assert await cur.fetchone() == (True,)
            cur = await conn.execute(f"SELECT count(*) FROM {parent}_default")
            assert await cur.fetchone() == (0,)
        cur = await conn.execute(
            "EXPLAIN (COSTS OFF) " + queries["visible_durable_log"],
            {"task_id": 1, "created_at": CREATED},
        )
        plan = "\n".join(r[0] for r in await cur.fetchall())
    finally:
        await conn.close()
    assert "_default" not in plan and f"durable_entry_p{day:%Y%m%d}" in plan
    assert await visible(db, 1) == [(1, 1), (2, 1)]


async def test_the_partition_upkeep_creates_and_drops_the_durable_days(db: Executor) -> None:
    # The retention loop's statements cover the durable tables: a run's log lives in its
    # day's partition from the start and goes when that day leaves the retention.
    from stoker.db.store import retention

    day = CREATED.date()
    await retention.ensure_partitions(db, retention.EnsurePartitions(day, 2))
    await open_log(db, 1)
    tables = {
        r["parent"]: r["dropped"]
        for r in await retention.drop_expired_partitions(
            db, retention.DropExpiredPartitions(day + timedelta(days=1))
        )
    }
    for parent in ("durable_log", "durable_branch", "durable_entry"):
        assert tables.get(parent) == f"{parent}_p{day:%Y%m%d}", tables
    assert await visible(db, 1) == []


async def test_the_engine_refuses_an_eviction_while_a_resolution_is_in_flight(
    db: Executor, db_url: str
) -> None:
    # The engine's handler of worker requests (engine/durable/log.py), on a real run row.
    await running_task(db_url, 1)
    logs = DurableLogs(db, DurableWaits())
    ids = iter(range(1, 100))

    async def ask(op: pb.DurableOp.ValueType, **fields: Any) -> pb.DurableReply:
        req = pb.DurableRequest(task_id=1, attempt=0, request_id=next(ids), op=op, **fields)
        return await logs.handle(7, TENANT, req)

    def nap(position: int, delay_ms: int) -> pb.DurableCall:
        return pb.DurableCall(
            position=position,
            kind="wait",
            name="sleep",
            fingerprint=fingerprint(EntryKind.WAIT, "sleep", timer=True),
            delay_ms=delay_ms,
            status="pending",
        )

    inv = (await ask(pb.OPEN)).invocation
    idle = await ask(pb.EVICT, invocation=inv, last_seen_seq=0)
    assert not idle.evicted and "waits for nothing" in idle.error
    await ask(pb.APPEND, invocation=inv, calls=[nap(1, 0), nap(2, 60_000)])
    # The timer settles the first sleep (seq 1) before the worker, which has seen nothing
    # settled, asks to be evicted (blocked on both): refused, the wake-up is on its way.
    await settle(db, [(1, 1, 1)])
    refused = await ask(pb.EVICT, invocation=inv, last_seen_seq=0)
    assert not refused.evicted and "resolution is on its way" in refused.error
    stale = await ask(pb.EVICT, invocation=inv - 1, last_seen_seq=1)
    assert not stale.evicted and "newer invocation" in stale.error
    [task] = await sql(db_url, "SELECT status FROM task WHERE id = 1")
    assert task == {"status": "RUNNING"}

    # Having seen it, blocked on the long sleep: accepted.
    accepted = await ask(pb.EVICT, invocation=inv, last_seen_seq=1)
    assert accepted.evicted and not accepted.error
    [task] = await sql(db_url, "SELECT status FROM task WHERE id = 1")
    assert task == {"status": "EVICTED"}
    # The attempt is over: the worker's further requests are refused.
    assert (await ask(pb.SYNC)).error == "the attempt is not running on this worker"


async def test_a_long_log_is_read_in_pages_that_fit_the_stream(db: Executor, db_url: str) -> None:
    # 10,000 recorded steps: OPEN answers the first page and says more follows; SYNC with
    # after_position reads the rest; every entry comes exactly once, in position order, and
    # no page holds more than PAGE_ENTRIES entries or much more than PAGE_BYTES.
    from stoker.engine.durable.log import PAGE_BYTES, PAGE_ENTRIES

    await running_task(db_url, 1)
    logs = DurableLogs(db, DurableWaits())
    ids = iter(range(1, 1000))

    async def ask(op: pb.DurableOp.ValueType, **fields: Any) -> pb.DurableReply:
        req = pb.DurableRequest(task_id=1, attempt=0, request_id=next(ids), op=op, **fields)
        reply = await logs.handle(7, TENANT, req)
        assert not reply.error, reply.error
        return reply

    def done(position: int, result: bytes) -> pb.DurableCall:
        return pb.DurableCall(
            position=position, kind="step", name=f"s{position}", status="ok", result=result,
            fingerprint=fingerprint(EntryKind.STEP, f"s{position}"),
        )  # fmt: skip

    async def read_all(first: pb.DurableReply) -> list[list[pb.DurableEntry]]:
        pages = [list(first.entries)]
        reply = first
        while reply.more:
            reply = await ask(pb.SYNC, after_position=pages[-1][-1].position)
            pages.append(list(reply.entries))
        return pages

    inv = (await ask(pb.OPEN)).invocation
    await ask(pb.APPEND, invocation=inv, calls=[done(p, b"%d" % p) for p in range(1, 10_001)])
    reopened = await ask(pb.OPEN)
    assert reopened.more and len(reopened.entries) == PAGE_ENTRIES
    pages = await read_all(reopened)
    assert [len(p) for p in pages] == [PAGE_ENTRIES] * 10
    assert [e.position for p in pages for e in p] == list(range(1, 10_001))
    assert [e.result for e in pages[-1][-2:]] == [b"9999", b"10000"]
    assert all(e.satisfied_seq for p in pages for e in p)

    # Large results: a page ends once it holds about PAGE_BYTES.
    big = b'"' + b"x" * (PAGE_BYTES // 3) + b'"'
    inv = reopened.invocation
    await ask(pb.APPEND, invocation=inv, calls=[done(p, big) for p in range(10_001, 10_008)])
    pages = await read_all(await ask(pb.SYNC, after_position=10_000))
    assert [len(p) for p in pages] == [3, 3, 1]
    assert all(sum(e.ByteSize() for e in p) < PAGE_BYTES * 1.5 for p in pages)
    assert [e.position for p in pages for e in p] == list(range(10_001, 10_008))
