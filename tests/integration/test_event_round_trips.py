"""Round trips of an event push, read from libpq's protocol trace of the connection the
ingest runs on: an event with three subscribers (no waits on its key) is stored, starts
its three runs and commits in two round trips (the pipelined transaction of
``WorkflowIngest.push_events``), whatever the machine's load; a retried push (same request
key) answers the first push's runs and stores nothing more; a pipelined transaction that
fails (in its body, or in a statement sent without waiting) stores nothing; a kept
request key (a webhook delivery's) outlives the TTL.

Printed with ``-s``: the round trips and statements of a push (``bench`` reports the
latency they make)."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import pq

from stoker._core.durable import EntryKind, WaitLeaf, fingerprint, wait_request
from stoker._core.wire import TaskConfig
from stoker.db import Batch, Executor, connect
from stoker.db.store import durable as durable_store
from stoker.db.store import requests as request_store
from stoker.db.store import retention as retention_store
from stoker.engine.auth import create_tenant
from stoker.engine.definitions import Definitions
from stoker.engine.durable.waits import DurableWaits
from stoker.engine.flows.progression import Progression
from stoker.engine.ingest import Ingest, requests
from stoker.engine.ingest.requests import RequestKey
from stoker.engine.ingest.tasks import TriggerInput, write_task_runs
from stoker.engine.ingest.workflows import EventInput, WorkflowIngest
from stoker.engine.signals import Signals

MAX = 1024 * 1024
KEY = "order:created"


@dataclass(frozen=True, slots=True)
class Trips:
    """What a traced stretch of a connection's protocol shows."""

    round_trips: int
    statements: int


class Tracer:
    """libpq's trace of one connection: every message, F (to the server) or B (back)."""

    def __init__(self, conn: psycopg.AsyncConnection[object]) -> None:
        self._conn = conn
        fd, name = tempfile.mkstemp(prefix="stoker-trace-")
        self._fd = fd
        self.path = Path(name)

    def start(self) -> None:
        self.path.write_text("")
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.ftruncate(self._fd, 0)
        self._conn.pgconn.trace(self._fd)
        self._conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

    def stop(self) -> Trips:
        self._conn.pgconn.untrace()
        os.fsync(self._fd)
        return count(self.path.read_text())

    def close(self) -> None:
        os.close(self._fd)
        self.path.unlink(missing_ok=True)


def count(trace: str) -> Trips:
    """Round trips (a run of client messages answered by a run of server messages) and
    statements (Query, or Bind of the extended protocol; BEGIN/COMMIT included)."""
    trips = statements = 0
    last = ""
    for line in trace.splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        direction, message = parts[0], parts[2]
        if direction == "F" and message in ("Query", "Bind"):
            statements += 1
        if direction == "B" and last == "F":
            trips += 1
        last = direction
    return Trips(trips, statements)


@pytest.fixture
async def traced(db_url: str) -> AsyncIterator[tuple[Executor, Tracer]]:
    conn = await connect(db_url, "stoker")
    tracer = Tracer(conn)
    try:
        yield Executor(conn), tracer
    finally:
        tracer.close()
        await conn.close()


async def _ingests(db: Executor, tenant_id: int) -> tuple[WorkflowIngest, Ingest]:
    """The event ingest (three tasks subscribed to KEY, and a durable task ``waiter``) and
    the task runs' writer."""
    signals = Signals("test")
    definitions = Definitions(db, on_limits_changed=lambda _t: None)
    config = TaskConfig(on_events=[KEY]).model_dump_json().encode()
    durable = TaskConfig(durable=True).model_dump_json().encode()
    await definitions.register_tasks(
        tenant_id, [*((n, config) for n in ("a", "b", "c")), ("waiter", durable)]
    )
    ingest = Ingest(
        db, signals, definitions, max_payload_bytes=MAX, flush_interval_ms=0, flush_max_items=1
    )
    events = WorkflowIngest(
        db,
        signals,
        definitions,
        ingest,
        Progression(db, signals),
        max_payload_bytes=MAX,
        durable_waits=DurableWaits(),
    )
    return events, ingest


async def _ingest(db: Executor, tenant_id: int) -> WorkflowIngest:
    return (await _ingests(db, tenant_id))[0]


def _event(n: int) -> EventInput:
    return EventInput(KEY, json.dumps({"n": n}).encode(), b"{}", "", 0)


async def test_a_push_with_three_subscribers_takes_two_round_trips(
    traced: tuple[Executor, Tracer], db_url: str
) -> None:
    db, tracer = traced
    tenant = await create_tenant(db, "t")
    ingest = await _ingest(db, tenant)
    await ingest.push_events(tenant, [_event(0)])  # definitions cached, statements prepared
    request = RequestKey.of("push-1", "events", b"push-1")
    tracer.start()
    pushed = await ingest.push_events(tenant, [_event(1)], request)
    trips = tracer.stop()
    print(f"\npush with 3 subscribers: {trips.round_trips} round trips, "
          f"{trips.statements} statements")  # fmt: skip
    assert len(pushed.events) == 1 and len(pushed.events[0].run_ids) == 3
    assert trips.round_trips == 2, trips
    again = await ingest.push_events(tenant, [_event(1)], request)
    assert again.events[0].event_id == pushed.events[0].event_id
    assert sorted(again.events[0].run_ids) == sorted(pushed.events[0].run_ids)
    with psycopg.connect(db_url, options="-c search_path=stoker") as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM user_event), (SELECT count(*) FROM task),"
            " (SELECT count(*) FROM event_run)"
        ).fetchone()
    assert row == (2, 6, 6)


def _waiter_task(db_url: str) -> tuple[int, datetime]:
    with psycopg.connect(db_url, options="-c search_path=stoker") as conn:
        row = conn.execute("SELECT id, created_at FROM task WHERE task_name = 'waiter'").fetchone()
    assert row is not None
    return int(row[0]), row[1]


async def _durable_waiter(db: Executor, db_url: str, tenant_id: int, ingest: Ingest) -> int:
    """A durable run whose log's first entry waits for an event on KEY (as a worker's
    APPEND records it); its task id."""
    runs = await ingest.prepare(tenant_id, [TriggerInput("waiter", b"{}", b"{}", 0)])
    async with Signals("waiter").transaction(db) as (tx, out):
        await write_task_runs(tx, tenant_id, runs, out)
    key = _waiter_task(db_url)
    await durable_store.create_durable_logs(
        db, durable_store.CreateDurableLogs([key[0]], [key[1]], [tenant_id])
    )
    await durable_store.bump_durable_invocations(
        db, durable_store.BumpDurableInvocations([key[0]], [key[1]])
    )
    leaf = WaitLeaf("0", "event", key=KEY)
    async with db.transaction() as tx:
        await durable_store.append_durable_entries(
            tx,
            durable_store.AppendDurableEntries(
                task_id=key[0], created_at=key[1], invocation=1, positions=[0],
                kinds=[str(EntryKind.WAIT)], names=["wait_for_event"],
                fingerprints=[fingerprint(EntryKind.WAIT, "wait_for_event", event_keys=[KEY])],
                requests=[json.dumps(wait_request([leaf]))], delays_ms=[None],
                wake_ats=[None], child_external_ids=[None], statuses=["pending"],
                results=[None], errors=[None],
            ),
        )  # fmt: skip
        await DurableWaits().register(tx, tenant_id, key, [(1, 0, [leaf])])
    return key[0]


async def test_a_push_that_resumes_a_durable_wait_takes_two_round_trips(
    traced: tuple[Executor, Tracer], db_url: str
) -> None:
    db, tracer = traced
    tenant = await create_tenant(db, "t")
    ingest, writer = await _ingests(db, tenant)
    await ingest.push_events(tenant, [_event(0)])
    task_id = await _durable_waiter(db, db_url, tenant, writer)
    tracer.start()
    pushed = await ingest.push_events(tenant, [_event(1)])
    trips = tracer.stop()
    print(f"\npush with 3 subscribers resuming a durable wait: {trips.round_trips} round "
          f"trips, {trips.statements} statements")  # fmt: skip
    assert pushed.satisfied == 1 and len(pushed.events[0].run_ids) == 3
    assert trips.round_trips == 2, trips
    with psycopg.connect(db_url, options="-c search_path=stoker") as conn:
        entries = conn.execute(
            "SELECT position, status, result->>'fired' FROM durable_entry WHERE task_id = %s",
            (task_id,),
        ).fetchall()
    assert entries == [(0, "ok", "0")]


async def test_a_pipelined_transaction_that_fails_late_stores_nothing(
    traced: tuple[Executor, Tracer],
) -> None:
    """A statement sent without waiting fails at COMMIT's sync: the transaction is rolled
    back (nothing written before it stays) and the connection is clean for the next."""
    db, _ = traced
    tenant = await create_tenant(db, "t")
    claim = request_store.ClaimRequestKeys(
        tenant, ["k"], ["events"], [b"f"], [1], [16], [0], uuid.uuid4().bytes, [0]
    )
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        async with db.transaction(pipeline=True) as tx:
            batch = Batch()
            claimed = request_store.claim_request_keys.add(batch, claim)
            await tx.run(batch)
            assert [r["request_key"] for r in claimed.rows] == ["k"]
            await request_store.set_request_satisfied.send(
                tx, request_store.SetRequestSatisfied(tenant, "k", 2**40)
            )
    found = request_store.FindRequestKeys(tenant, ["k"])
    assert await request_store.find_request_keys(db, found) == []
    with pytest.raises(RuntimeError, match="body"):
        async with db.transaction(pipeline=True) as tx:
            await request_store.claim_request_keys(tx, claim)
            raise RuntimeError("the body failed")
    assert await request_store.find_request_keys(db, found) == []
    async with db.transaction(pipeline=True) as tx:
        await request_store.claim_request_keys(tx, claim)
    assert len(await request_store.find_request_keys(db, found)) == 1


async def test_kept_request_keys_outlive_the_ttl_and_are_pruned_after_keep_until(
    db: Executor, db_url: str
) -> None:
    """A webhook delivery's key (``keep_s``) stays past the request key TTL, then goes
    once its keep_until passes; ordinary keys go after the TTL."""
    tenant = await create_tenant(db, "t")
    ids = uuid.uuid4().bytes
    for key, keep_s in (("plain", 0), ("kept", 3600), ("lapsed", 1)):
        await request_store.claim_request_keys(
            db,
            request_store.ClaimRequestKeys(
                tenant, [key], ["webhook"], [b"f"], [1], [16], [0], ids, [keep_s]
            ),
        )
    with psycopg.connect(db_url, options="-c search_path=stoker", autocommit=True) as conn:
        conn.execute("UPDATE trigger_request SET created_at = now() - interval '1 hour'")
        conn.execute(
            "UPDATE trigger_request SET keep_until = now() - interval '1 second'"
            " WHERE request_key = 'lapsed'"
        )
    assert await requests.prune(db, ttl_s=600, batch=1) == 2
    left = await request_store.find_request_keys(
        db, request_store.FindRequestKeys(tenant, ["plain", "kept", "lapsed"])
    )
    assert [r["request_key"] for r in left] == ["kept"]


async def test_a_push_that_settles_an_evicted_tasks_wait_queues_it_again(
    traced: tuple[Executor, Tracer], db_url: str
) -> None:
    """The settlement sent with COMMIT restores an evicted task (queued again, its entry
    settled), and the push tells the scheduler after the commit."""
    db, _ = traced
    tenant = await create_tenant(db, "t")
    ingest, writer = await _ingests(db, tenant)
    queued: list[set[int]] = []
    ingest._signals.on_queued(queued.append)
    task_id = await _durable_waiter(db, db_url, tenant, writer)
    with psycopg.connect(db_url, options="-c search_path=stoker", autocommit=True) as conn:
        conn.execute("DELETE FROM queue_item WHERE task_id = %s", (task_id,))
        conn.execute("UPDATE task SET status = 'EVICTED' WHERE id = %s", (task_id,))
        conn.execute("UPDATE durable_log SET evicted_at = now() WHERE task_id = %s", (task_id,))
    queued.clear()
    pushed = await ingest.push_events(tenant, [EventInput("order:created", b"{}", b"{}", "", 0)])
    assert pushed.satisfied == 1 and pushed.events[0].satisfied == 1
    assert {tenant} in queued
    with psycopg.connect(db_url, options="-c search_path=stoker") as conn:
        row = conn.execute(
            "SELECT t.status, t.attempt, l.evicted_at IS NULL,"
            " (SELECT count(*) FROM queue_item q WHERE q.task_id = t.id),"
            " (SELECT status FROM durable_entry e WHERE e.task_id = t.id)"
            " FROM task t JOIN durable_log l ON l.task_id = t.id WHERE t.id = %s",
            (task_id,),
        ).fetchone()
    assert row == ("QUEUED", 1, True, 1, "ok")


async def test_filter_payloads_older_than_the_retention_are_pruned(
    db: Executor, db_url: str
) -> None:
    tenant = await create_tenant(db, "t")
    old, new = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(db_url, options="-c search_path=stoker", autocommit=True) as conn:
        conn.execute(
            "INSERT INTO run_filter_payload (run_id, tenant_id, payload, created_at)"
            " VALUES (%s, %s, '{\"a\": 1}', now() - interval '10 days'),"
            " (%s, %s, '{\"b\": 2}', now())",
            (old, tenant, new, tenant),
        )
    cutoff = (datetime.now(UTC) - timedelta(days=7)).date()
    pruned = await retention_store.prune_run_filter_payloads(
        db, retention_store.PruneChildRuns(cutoff, 100)
    )
    assert pruned == 1
    with psycopg.connect(db_url, options="-c search_path=stoker") as conn:
        left = conn.execute("SELECT run_id FROM run_filter_payload").fetchall()
    assert left == [(new,)]
