"""Retried trigger calls never duplicate runs (request keys, docs/idempotency.md).

The SDK-level tests put a loopback TCP proxy (tests/proxy.py) between the client and the
engine that loses the reply of one call after the engine stored its runs: the SDK retries
on a new connection, and exactly the first attempt's runs must exist and be returned; the
same when the engine is killed and restarted between storing the runs and replying.
The raw-gRPC tests send the same key concurrently (one engine, two replicas), reuse a key
with other content, across tenants, and past its TTL.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import grpc
import psycopg
import pytest
from pydantic import BaseModel

from stoker import Context, InvalidRequestError, Stoker
from stoker._proto import engine_pb2 as pb
from stoker._proto import engine_pb2_grpc as pb_grpc
from stoker._proto import workflows_pb2 as wpb
from stoker._proto import workflows_pb2_grpc as wpb_grpc
from stoker.db import Executor
from stoker.engine.auth import create_tenant
from stoker.engine.definitions import Definitions
from stoker.engine.ingest import Ingest, TriggerInput
from stoker.engine.ingest.requests import RequestKey
from stoker.engine.signals import Signals
from tests.apps import spawner
from tests.harness import EngineProcess, Tenant, WorkerProcess, wait_until
from tests.proxy import ReplyLosingProxy

pytestmark = pytest.mark.timeout(120)

T = TypeVar("T")


class Item(BaseModel):
    n: int


def declare(app: Stoker) -> Stoker:
    @app.task()
    async def idem_task(input: Item, ctx: Context) -> int:
        return input.n

    flow = app.workflow("idem_flow", input_validator=Item)

    @flow.task()
    async def idem_step(input: Item, ctx: Context) -> int:
        return input.n

    return app


@pytest.fixture
def proxy(engine: EngineProcess) -> Iterator[ReplyLosingProxy]:
    p = ReplyLosingProxy(engine.grpc_address).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def app(proxy: ReplyLosingProxy, tenant: Tenant) -> Iterator[Stoker]:
    """A client of the test's tenant that talks to the engine through the proxy, with its
    channels connected (the proxy holds replies on open connections)."""
    client = declare(Stoker(address=proxy.address, token=tenant.token, connect_timeout=30))
    client.register()
    client.workflows["idem_flow"].register()
    yield client
    client.close()


def query(engine: EngineProcess, sql: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(engine.db_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(sql, args).fetchall()


def task_ids(engine: EngineProcess, tenant: Tenant, name: str) -> list[str]:
    rows = query(
        engine,
        "SELECT external_id::text AS id FROM stoker.all_tasks"
        " WHERE tenant_id = %s AND task_name = %s AND dag_id IS NULL ORDER BY id",
        tenant.tenant_id,
        name,
    )
    return [r["id"] for r in rows]


def dag_ids(engine: EngineProcess, tenant: Tenant, name: str) -> list[str]:
    rows = query(
        engine,
        "SELECT external_id::text AS id FROM stoker.all_dags"
        " WHERE tenant_id = %s AND workflow_name = %s ORDER BY id",
        tenant.tenant_id,
        name,
    )
    return [r["id"] for r in rows]


def lose_first_reply(
    proxy: ReplyLosingProxy, call: Callable[[], T], stored: Callable[[], bool]
) -> T:
    """Makes ``call`` (in a thread) with the proxy holding replies; once ``stored`` shows
    the engine wrote the first attempt, cuts the connection so that its reply is lost, and
    returns what the call returns after the SDK's retry."""
    proxy.hold()
    accepted = proxy.accepted
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = call()
        except BaseException as exc:  # handed to the test below
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    wait_until(stored, 30, "the first attempt to be stored")
    proxy.cut()
    thread.join(60)
    assert not thread.is_alive(), "the call did not return after its connection was cut"
    if "error" in out:
        raise out["error"]
    assert proxy.accepted > accepted, "the SDK did not retry on a new connection"
    return out["value"]  # type: ignore[no-any-return]


# -- the SDK retries, the engine answers with the first attempt's runs ---------------------


def test_retried_run_no_wait_makes_one_run(
    app: Stoker, proxy: ReplyLosingProxy, engine: EngineProcess, tenant: Tenant
) -> None:
    task = app.tasks["idem_task"]
    ref = lose_first_reply(
        proxy,
        lambda: task.run_no_wait(Item(n=1)),
        lambda: bool(task_ids(engine, tenant, "idem_task")),
    )
    assert task_ids(engine, tenant, "idem_task") == [ref.run_id]


def test_retried_run_many_makes_each_run_once(
    app: Stoker, proxy: ReplyLosingProxy, engine: EngineProcess, tenant: Tenant
) -> None:
    task = app.tasks["idem_task"]
    refs = lose_first_reply(
        proxy,
        lambda: task.run_many([Item(n=n) for n in range(50)]),
        lambda: len(task_ids(engine, tenant, "idem_task")) >= 50,
    )
    assert len(refs) == 50
    assert task_ids(engine, tenant, "idem_task") == sorted(r.run_id for r in refs)
    inputs = query(
        engine,
        "SELECT external_id::text AS id, input FROM stoker.task WHERE tenant_id = %s",
        tenant.tenant_id,
    )
    by_id = {r["id"]: r["input"]["n"] for r in inputs}
    assert [by_id[r.run_id] for r in refs] == list(range(50)), "ids answer their inputs in order"


def test_retried_workflow_trigger_makes_one_workflow_run(
    app: Stoker, proxy: ReplyLosingProxy, engine: EngineProcess, tenant: Tenant
) -> None:
    flow = app.workflows["idem_flow"]
    ref = lose_first_reply(
        proxy,
        lambda: flow.run_no_wait(Item(n=7)),
        lambda: bool(dag_ids(engine, tenant, "idem_flow")),
    )
    assert dag_ids(engine, tenant, "idem_flow") == [ref.run_id]
    steps = query(
        engine,
        "SELECT count(*) AS n FROM stoker.task WHERE tenant_id = %s AND dag_id IS NOT NULL",
        tenant.tenant_id,
    )
    assert steps[0]["n"] == 1


def test_retried_event_push_stores_one_event(
    app: Stoker, proxy: ReplyLosingProxy, engine: EngineProcess, tenant: Tenant
) -> None:
    key = f"idem:{uuid.uuid4().hex[:8]}"

    def events() -> int:
        rows = query(
            engine,
            "SELECT count(*) AS n FROM stoker.user_event WHERE tenant_id = %s AND key = %s",
            tenant.tenant_id,
            key,
        )
        return int(rows[0]["n"])

    satisfied = lose_first_reply(
        proxy, lambda: app.events.push(key, {"x": 1}).satisfied, lambda: events() > 0
    )
    assert satisfied == 0
    assert events() == 1


def test_retried_spawn_makes_each_child_once(
    app: Stoker, proxy: ReplyLosingProxy, engine: EngineProcess, tenant: Tenant
) -> None:
    parent = app.tasks["idem_task"].run_no_wait(Item(n=0))
    (row,) = query(engine, "SELECT id FROM stoker.task WHERE external_id = %s", parent.run_id)
    request = wpb.SpawnChildrenRequest(
        parent_task_id=int(row["id"]),
        parent_attempt=1,
        items=[
            wpb.ChildSpawn(task_name="idem_task", input=b'{"n": %d}' % n, child_index=n)
            for n in range(3)
        ],
        request_key=uuid.uuid4().hex,
    )
    # The SDK's own retry loop (what a task's spawn goes through), with a raw request
    # since a parent's context only exists inside a worker.
    calls = app.connection.calls

    def children() -> list[str]:
        rows = query(
            engine,
            "SELECT external_id::text AS id FROM stoker.child_run WHERE parent_task_id = %s"
            " ORDER BY child_index",
            row["id"],
        )
        return [r["id"] for r in rows]

    resp = lose_first_reply(
        proxy,
        lambda: calls.spawn_children(request),
        lambda: len(children()) == 3,
    )
    assert list(resp.run_ids) == children()
    assert len(task_ids(engine, tenant, "idem_task")) == 1 + 3


def test_children_spawned_by_a_worker_are_made_once_when_the_reply_is_lost(
    engine: EngineProcess,
    tenant: Tenant,
    proxy: ReplyLosingProxy,
    worker_factory: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    # The worker talks to the engine through the proxy; the test's client does not.
    worker_factory(
        "tests.apps.spawner:app", tenant=Tenant(tenant.tenant_id, tenant.token, proxy.address)
    )
    app = spawner.declare(Stoker(address=engine.grpc_address, token=tenant.token))
    try:
        go = tmp_path / "go"
        parent = app.tasks["idem_parent"].run_no_wait(spawner.Go(go=str(go)))
        (row,) = query(engine, "SELECT id FROM stoker.task WHERE external_id = %s", parent.run_id)

        def children() -> list[str]:
            rows = query(
                engine,
                "SELECT external_id::text AS id FROM stoker.child_run"
                " WHERE parent_task_id = %s ORDER BY child_index",
                row["id"],
            )
            return [r["id"] for r in rows]

        wait_until(lambda: len(children()) == 1, 30, "the warm-up child")
        proxy.hold()
        go.touch()
        wait_until(lambda: len(children()) == 4, 30, "the three children")
        proxy.cut()
        spawned = parent.result(timeout=60)
        assert spawned == children()[1:]
        assert len(task_ids(engine, tenant, "idem_child")) == 4
    finally:
        app.close()


def test_a_trigger_retried_across_an_engine_crash_makes_one_run(
    engine_factory: Callable[..., EngineProcess],
    tenant_factory: Callable[[EngineProcess], Tenant],
) -> None:
    eng = engine_factory()
    tenant = tenant_factory(eng)
    proxy = ReplyLosingProxy(eng.grpc_address).start()
    app = declare(Stoker(address=proxy.address, token=tenant.token, connect_timeout=60))
    try:
        app.register()
        task = app.tasks["idem_task"]
        # The engine is killed after it stored the runs and before its reply got out; the
        # SDK retries until the restarted engine answers.
        proxy.hold()
        out: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: out.update(refs=task.run_many([Item(n=1)] * 5)))
        thread.start()
        wait_until(lambda: len(task_ids(eng, tenant, "idem_task")) == 5, 30, "the runs")
        eng.restart()
        thread.join(90)
        assert not thread.is_alive()
        assert sorted(r.run_id for r in out["refs"]) == task_ids(eng, tenant, "idem_task")
    finally:
        app.close()
        proxy.stop()


async def test_a_retry_still_in_the_write_buffer_follows_its_first_call(
    db: Executor, db_url: str
) -> None:
    """The first call's connection dropped while it waited for the flush (its handler is
    cancelled, its runs stay buffered); its retry and a misuse of its key arrive before the
    flush: one set of runs is written, the retry gets it, the misuse is refused."""
    definitions = Definitions(db, on_limits_changed=lambda tenant_id: None)
    ingest = Ingest(
        db, Signals("test"), definitions, max_payload_bytes=1 << 20, flush_interval_ms=0,
        flush_max_items=1000,
    )  # fmt: skip
    tenant_id = await create_tenant(db, "buffered")
    await definitions.register_tasks(tenant_id, [("idem_task", b"{}")])
    items = [TriggerInput("idem_task", b'{"n": %d}' % n) for n in range(3)]
    key = RequestKey.of("k", "trigger", b"the request")
    misuse = RequestKey.of("k", "trigger", b"another request")
    first = asyncio.create_task(ingest.trigger(tenant_id, items, key))
    retry = asyncio.create_task(ingest.trigger(tenant_id, items, key))
    wrong = asyncio.create_task(ingest.trigger(tenant_id, items[:1], misuse))
    async with asyncio.timeout(10):
        # The ingest's wake-up signal, set as each call parks (its loop is not running).
        while ingest._pending_items < 7:
            await ingest._work.wait()
    first.cancel()
    await ingest.flush()
    ids = await retry
    with pytest.raises(InvalidRequestError, match="other content"):
        await wrong
    async with await psycopg.AsyncConnection.connect(db_url) as conn:
        cur = await conn.execute(
            "SELECT external_id::text FROM stoker.task WHERE tenant_id = %s", (tenant_id,)
        )
        stored = [r[0] for r in await cur.fetchall()]
    assert sorted(ids) == sorted(stored) and len(ids) == 3
    assert first.cancelled()


# -- raw gRPC: concurrency, replicas, content, tenants, expiry -----------------------------


def _metadata(tenant: Tenant) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {tenant.token}"),)


def _trigger_request(key: str, inputs: list[int]) -> pb.TriggerRequest:
    return pb.TriggerRequest(
        items=[pb.TriggerItem(task_name="idem_task", input=b'{"n": %d}' % n) for n in inputs],
        request_key=key,
    )


def _register(address: str, tenant: Tenant) -> None:
    declare(Stoker(address=address, token=tenant.token, connect_timeout=10)).register()


def _trigger(address: str, tenant: Tenant, request: pb.TriggerRequest) -> list[str]:
    with grpc.insecure_channel(address) as channel:
        resp = pb_grpc.EngineStub(channel).Trigger(request, metadata=_metadata(tenant), timeout=30)
    return list(resp.run_ids)


def test_concurrent_calls_with_one_key_get_the_same_runs(
    engine: EngineProcess, tenant: Tenant
) -> None:
    _register(engine.grpc_address, tenant)
    requests = [_trigger_request(uuid.uuid4().hex, [n, n + 100]) for n in range(10)]
    with grpc.insecure_channel(engine.grpc_address) as channel:
        stub = pb_grpc.EngineStub(channel)
        # Both copies of each call are in flight at once: they meet in one write batch or
        # in consecutive ones.
        futures = [
            (
                stub.Trigger.future(r, metadata=_metadata(tenant), timeout=30),
                stub.Trigger.future(r, metadata=_metadata(tenant), timeout=30),
            )
            for r in requests
        ]
        answers = [(list(a.result().run_ids), list(b.result().run_ids)) for a, b in futures]
    for a, b in answers:
        assert a == b and len(a) == 2
    assert len(task_ids(engine, tenant, "idem_task")) == 20


def test_one_key_sent_to_two_replicas_at_once_makes_one_set_of_runs(
    engine: EngineProcess,
    tenant: Tenant,
    engine_factory: Callable[..., EngineProcess],
) -> None:
    replica = engine_factory(engine.db_url)
    _register(engine.grpc_address, tenant)
    _register(replica.grpc_address, tenant)
    requests = [_trigger_request(uuid.uuid4().hex, [n]) for n in range(20)]
    with ThreadPoolExecutor(8) as pool:
        first = [pool.submit(_trigger, engine.grpc_address, tenant, r) for r in requests]
        second = [pool.submit(_trigger, replica.grpc_address, tenant, r) for r in requests]
        pairs = [(a.result(), b.result()) for a, b in zip(first, second, strict=True)]
    for a, b in pairs:
        assert a == b
    assert sorted(a[0] for a, _ in pairs) == task_ids(engine, tenant, "idem_task")


def test_a_key_reused_with_other_content_is_refused(engine: EngineProcess, tenant: Tenant) -> None:
    _register(engine.grpc_address, tenant)
    key = uuid.uuid4().hex
    ids = _trigger(engine.grpc_address, tenant, _trigger_request(key, [1]))
    with pytest.raises(grpc.RpcError) as caught:
        _trigger(engine.grpc_address, tenant, _trigger_request(key, [2]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_key" in (caught.value.details() or "")
    assert "other content" in (caught.value.details() or "")
    assert task_ids(engine, tenant, "idem_task") == ids
    # The same content again is a retry, answered with the first call's runs.
    assert _trigger(engine.grpc_address, tenant, _trigger_request(key, [1])) == ids

    # A key is one call's, whatever the kind: an event push may not reuse it.
    with grpc.insecure_channel(engine.grpc_address) as channel:
        stub = wpb_grpc.WorkflowsStub(channel)
        push = wpb.PushEventsRequest(events=[wpb.UserEvent(key="k", payload=b"1")], request_key=key)
        with pytest.raises(grpc.RpcError) as caught:
            stub.PushEvents(push, metadata=_metadata(tenant), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_sdk_reports_a_refused_key_as_invalid_request(
    engine: EngineProcess, tenant: Tenant
) -> None:
    app = declare(Stoker(address=engine.grpc_address, token=tenant.token, connect_timeout=10))
    try:
        app.register()
        key = uuid.uuid4().hex
        app.connection.calls.trigger(_trigger_request(key, [1]))
        with pytest.raises(InvalidRequestError, match="request_key"):
            app.connection.calls.trigger(_trigger_request(key, [3]))
    finally:
        app.close()


def test_keys_are_scoped_by_tenant(
    engine: EngineProcess, tenant: Tenant, tenant_factory: Callable[[EngineProcess], Tenant]
) -> None:
    other = tenant_factory(engine)
    _register(engine.grpc_address, tenant)
    _register(engine.grpc_address, other)
    key = uuid.uuid4().hex
    mine = _trigger(engine.grpc_address, tenant, _trigger_request(key, [1]))
    theirs = _trigger(engine.grpc_address, other, _trigger_request(key, [1]))
    assert mine != theirs
    assert task_ids(engine, tenant, "idem_task") == mine
    assert task_ids(engine, other, "idem_task") == theirs
    # Different content under the same key is not refused across tenants either.
    assert _trigger(engine.grpc_address, other, _trigger_request(uuid.uuid4().hex, [5]))
    assert _trigger(engine.grpc_address, tenant, _trigger_request(key, [1])) == mine


def test_calls_without_a_key_are_not_deduplicated(engine: EngineProcess, tenant: Tenant) -> None:
    _register(engine.grpc_address, tenant)
    a = _trigger(engine.grpc_address, tenant, _trigger_request("", [1]))
    b = _trigger(engine.grpc_address, tenant, _trigger_request("", [1]))
    assert a != b
    assert len(task_ids(engine, tenant, "idem_task")) == 2


def test_an_oversized_key_or_one_with_nul_is_refused(engine: EngineProcess, tenant: Tenant) -> None:
    _register(engine.grpc_address, tenant)
    with pytest.raises(grpc.RpcError) as caught:
        _trigger(engine.grpc_address, tenant, _trigger_request("k" * 201, [1]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_key" in (caught.value.details() or "")
    with pytest.raises(grpc.RpcError) as caught:
        _trigger(engine.grpc_address, tenant, _trigger_request("k\0", [1]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "NUL" in (caught.value.details() or "")


def test_keys_expire_after_their_ttl(
    engine_factory: Callable[..., EngineProcess],
    tenant_factory: Callable[[EngineProcess], Tenant],
) -> None:
    eng = engine_factory(env={"STOKER_REQUEST_KEY_TTL_S": "1", "STOKER_ARCHIVE_INTERVAL_S": "0.2"})
    tenant = tenant_factory(eng)
    _register(eng.grpc_address, tenant)
    key = uuid.uuid4().hex
    first = _trigger(eng.grpc_address, tenant, _trigger_request(key, [1]))
    assert _trigger(eng.grpc_address, tenant, _trigger_request(key, [1])) == first
    wait_until(
        lambda: not query(eng, "SELECT 1 FROM stoker.trigger_request"),
        30,
        "the expired key to be pruned",
    )
    again = _trigger(eng.grpc_address, tenant, _trigger_request(key, [1]))
    assert again != first
