"""User-facing idempotency keys through real engine and worker processes: 50 concurrent
triggers of one key (through two replicas) make one run; until-finished mode lets a new run
start once the first finished; TTL mode holds past the run's end and lets go at expiry; keys
within run_many and on workflows; a key declared on the task with a CEL expression."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from pydantic import BaseModel

from stoker import Context, Idempotency, InvalidRequestError, Stoker
from tests.apps import basic
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(120)


class Order(BaseModel):
    order_id: int
    note: str = ""


def _count(db_url: str, tenant_id: int, task_name: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM stoker.task WHERE tenant_id = %s AND task_name = %s",
            (tenant_id, task_name),
        ).fetchone()
    return int(row[0]) if row else 0


def _expired(db_url: str, tenant_id: int, key: str) -> bool:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT expires_at <= now() FROM stoker.idempotency_key"
            " WHERE tenant_id = %s AND key = %s",
            (tenant_id, key),
        ).fetchone()
    return bool(row and row[0])


def test_fifty_concurrent_triggers_of_one_key_make_one_run(
    engine_factory: Any, tenant_factory: Any
) -> None:
    first = engine_factory()
    second = engine_factory(db_url=first.db_url)
    ten = tenant_factory(first)
    apps = [basic.declare(Stoker(address=e.grpc_address, token=ten.token)) for e in (first, second)]
    for app in apps:
        app.register([app.tasks["greet"]])

    def trigger(n: int) -> Any:
        return apps[n % 2].tasks["greet"].run_no_wait({"name": f"n{n}"}, idempotency_key="order-42")

    with ThreadPoolExecutor(50) as pool:
        refs = list(pool.map(trigger, range(50)))
    assert len({r.run_id for r in refs}) == 1
    assert sum(not r.deduplicated for r in refs) == 1
    assert _count(first.db_url, ten.tenant_id, "greet") == 1

    async def many() -> list[Any]:
        greet = apps[0].tasks["greet"]
        return await asyncio.gather(
            *(greet.aio_run_no_wait({"name": "a"}, idempotency_key="order-43") for _ in range(50))
        )

    arefs = asyncio.run(many())
    assert len({r.run_id for r in arefs}) == 1 and sum(not r.deduplicated for r in arefs) == 1
    assert _count(first.db_url, ten.tenant_id, "greet") == 2
    # Keys are per tenant: another tenant's same key makes its own run.
    other = basic.declare(tenant_factory(first).client())
    assert (
        not other.tasks["greet"].run_no_wait({"name": "x"}, idempotency_key="order-42").deduplicated
    )
    for app in [*apps, other]:
        app.close()


def test_until_finished_mode_lets_a_new_run_after_the_first_finishes(
    engine: Any, tenant: Any, worker_factory: Any
) -> None:
    app = basic.declare(tenant.client())
    greet = app.tasks["greet"]
    first = greet.run_no_wait({"name": "one"}, idempotency_key="k-finish")
    again = greet.run_no_wait({"name": "two"}, idempotency_key="k-finish")
    assert not first.deduplicated and again.deduplicated and again.run_id == first.run_id
    worker_factory("tests.apps.basic:app", tenant=tenant).wait_ready()
    assert again.result(timeout=30)["message"] == "hello one"  # the first run's output
    after = greet.run_no_wait({"name": "three"}, idempotency_key="k-finish")
    assert not after.deduplicated and after.run_id != first.run_id
    assert after.result(timeout=30)["message"] == "hello three"
    # The same through the blocking form: run() of a live key waits for the existing run.
    assert greet.run({"name": "four"}, idempotency_key="k-other")["message"] == "hello four"
    app.close()


def test_ttl_mode_holds_after_the_run_finished_and_expires(
    engine: Any, tenant: Any, worker_factory: Any
) -> None:
    worker_factory("tests.apps.basic:app", tenant=tenant).wait_ready()
    app = basic.declare(tenant.client())
    greet = app.tasks["greet"]
    first = greet.run_no_wait({"name": "ttl"}, idempotency_key="k-ttl", idempotency_ttl="2s")
    first.result(timeout=30)
    held = greet.run_no_wait({"name": "again"}, idempotency_key="k-ttl", idempotency_ttl="2s")
    if not _expired(engine.db_url, tenant.tenant_id, "k-ttl"):
        assert held.deduplicated and held.run_id == first.run_id  # finished, but within TTL
    wait_until(lambda: _expired(engine.db_url, tenant.tenant_id, "k-ttl"), what="the TTL")
    after = greet.run_no_wait({"name": "later"}, idempotency_key="k-ttl", idempotency_ttl="2s")
    assert not after.deduplicated and after.run_id != first.run_id
    with pytest.raises(ValueError, match="idempotency_ttl needs an idempotency_key"):
        greet.run_no_wait({"name": "x"}, idempotency_ttl="1h")
    app.close()


def test_keys_within_run_many_and_on_workflows(engine: Any, tenant: Any) -> None:
    app = basic.declare(tenant.client())
    greet = app.tasks["greet"]
    refs = greet.run_many(
        [{"name": "a"}, {"name": "b"}, {"name": "a2"}, {"name": "none"}],
        idempotency_keys=["ka", "kb", "ka", None],
    )
    assert [r.deduplicated for r in refs] == [False, False, True, False]
    assert refs[2].run_id == refs[0].run_id and len({r.run_id for r in refs}) == 3
    again = greet.run_many([{"name": "b"}, {"name": "c"}], idempotency_keys=["kb", "kc"])
    assert again[0].deduplicated and again[0].run_id == refs[1].run_id
    assert not again[1].deduplicated
    with pytest.raises(ValueError, match="one key"):
        greet.run_many([{"name": "a"}], idempotency_keys=["a", "b"])
    with pytest.raises(InvalidRequestError, match="over the limit"):
        greet.run_no_wait({"name": "a"}, idempotency_key="x" * 201)

    wf = app.workflow("keyed_flow")

    @wf.task()
    async def only(input: dict[str, Any], ctx: Context) -> None:
        return None

    one = wf.run_no_wait({"n": 1}, idempotency_key="wf-1")
    two = wf.run_no_wait({"n": 2}, idempotency_key="wf-1")
    assert two.deduplicated and two.run_id == one.run_id
    # A task and a workflow share the tenant's keys: one key names one run.
    assert greet.run_no_wait({"name": "a"}, idempotency_key="wf-1").run_id == one.run_id
    app.close()


def test_a_key_declared_on_the_task_with_a_cel_expression(engine: Any, tenant: Any) -> None:
    app = tenant.client()

    @app.task(idempotency=Idempotency(expression="input.order_id"))
    async def charge(input: Order, ctx: Context) -> None:
        return None

    @app.task(idempotency=Idempotency(expression="input.order_id"))
    async def ship(input: Order, ctx: Context) -> None:
        return None

    first = charge.run_no_wait(Order(order_id=7))
    second = charge.run_no_wait(Order(order_id=7, note="retry"))
    other = charge.run_no_wait(Order(order_id=8))
    assert second.deduplicated and second.run_id == first.run_id and not other.deduplicated
    # The declared key is scoped to the task: ship's order 7 is another run.
    assert not ship.run_no_wait(Order(order_id=7)).deduplicated
    # An explicit key wins over the expression.
    assert not charge.run_no_wait(Order(order_id=7), idempotency_key="manual").deduplicated
    refs = charge.run_many([Order(order_id=9), Order(order_id=9), Order(order_id=7)])
    assert [r.deduplicated for r in refs] == [False, True, True]
    assert _count(engine.db_url, tenant.tenant_id, "charge") == 4
    app.close()
