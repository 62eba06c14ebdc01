"""Acting on runs and workers over REST with a real engine and workers: cancel and replay
one run, bulk operations by ids and by filter (the cap, progress, a crashed owner's
operation resumed), worker pause and resume, rate limits, tokens, triggering — each
tenant-scoped, and refused for a revoked token.

One engine for the module (its bulk cap lowered to 5, so the cap is cheap to cross); each
test makes its own tenants.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from stoker import AuthenticationError, Stoker
from stoker.db import Executor, connect
from stoker.engine.auth import ADMIN, create_token
from tests.apps import basic, workflows
from tests.apps.basic import Sleep
from tests.harness import (
    SCHEMA,
    EngineProcess,
    Tenant,
    create_database,
    drop_database,
    wait_until,
    with_database,
)

pytestmark = pytest.mark.timeout(180)

CAP = 5
PAYLOAD_LIMIT = 65_536


@pytest.fixture(scope="module")
def engine(
    pg_url: str, engine_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    """This module's engine: the session engine's settings with a bulk cap of 5 and a
    payload limit of 64 KiB."""
    name = create_database(pg_url, engine_template)
    env = {"STOKER_BULK_CAP": str(CAP), "STOKER_MAX_PAYLOAD_BYTES": str(PAYLOAD_LIMIT)}
    proc = EngineProcess(with_database(pg_url, name), tmp_path_factory.mktemp("rest"), env=env)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        drop_database(pg_url, name)


class Api:
    """A REST client of one tenant (closed at the end of the test)."""

    made: list[Api] = []

    def __init__(self, engine: EngineProcess, token: str) -> None:
        Api.made.append(self)
        self.http = httpx.Client(
            base_url=f"{engine.http_url}/api/v1",
            headers={"authorization": f"Bearer {token}"},
            timeout=15,
        )

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params)

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return self.http.post(path, json=body)

    def status(self, run_id: str) -> str:
        response = self.get(f"/runs/{run_id}")
        assert response.status_code == 200, response.text
        return str(response.json()["status"])

    def operation(self, operation_id: str) -> dict[str, Any]:
        response = self.get(f"/bulk-operations/{operation_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def finished(self, operation_id: str) -> dict[str, Any]:
        """The operation once it stopped RUNNING."""
        wait_until(
            lambda: self.operation(operation_id)["state"] != "RUNNING",
            30,
            f"bulk operation {operation_id} to finish",
        )
        return self.operation(operation_id)


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while Api.made:
        Api.made.pop().http.close()


@pytest.fixture
def tenants(tenant_factory: Any, engine: EngineProcess) -> Iterator[tuple[Tenant, Tenant]]:
    yield tenant_factory(engine), tenant_factory(engine)


def admin_token(engine: EngineProcess, tenant: Tenant) -> str:
    """A new admin token of ``tenant`` (the tenants' own tokens are member tokens)."""

    async def make() -> str:
        conn = await connect(engine.db_url, SCHEMA)
        try:
            return await create_token(Executor(conn), tenant.tenant_id, "admin", role=ADMIN)
        finally:
            await conn.close()

    return asyncio.run(make())


def _app(tenant: Tenant) -> contextlib.closing[Stoker]:
    """A client app of the tenant with the basic tasks registered (closed after use)."""
    app = basic.declare(tenant.client())
    app.register()
    return contextlib.closing(app)


def _queued(app: Stoker, n: int, **metadata: str) -> list[str]:
    """``n`` runs of ``slow`` that stay queued (no worker of the tenant serves it)."""
    slow = app.tasks["slow"]
    return [
        slow.run_no_wait(Sleep(seconds=30), additional_metadata=dict(metadata)).run_id
        for _ in range(n)
    ]


def test_cancel_and_replay_one_run_is_scoped_to_the_tenant(
    engine: EngineProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    mine, theirs = tenants
    api, other = Api(engine, mine.token), Api(engine, theirs.token)
    with _app(mine) as app:
        (run,) = _queued(app, 1)

    # Another tenant's token cannot see or touch the run.
    for path in (f"/runs/{run}/cancel", f"/runs/{run}/replay"):
        refused = other.post(path)
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"]["message"] == f"no run with id {run}"
    assert api.status(run) == "QUEUED"

    cancelled = api.post(f"/runs/{run}/cancel", {"reason": "not needed"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["outcome"] == "cancelled"
    assert api.status(run) == "CANCELLED"
    again = api.post(f"/runs/{run}/cancel").json()
    assert again["outcome"] == "already_finished"

    replayed = api.post(f"/runs/{run}/replay").json()
    assert replayed["outcome"] == "replayed"
    assert api.status(run) == "QUEUED"
    assert api.post(f"/runs/{run}/replay").json()["outcome"] == "not_finished"

    unknown = api.post(f"/runs/{uuid.uuid4()}/cancel")
    assert unknown.status_code == 404
    assert api.post("/runs/not-a-uuid/cancel").status_code == 422
    assert api.post(f"/runs/{run}/cancel", {"reason": "x", "extra": 1}).status_code == 422


def test_bulk_cancel_by_filter_needs_confirm_past_the_cap(
    engine: EngineProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    mine, theirs = tenants
    api, other = Api(engine, mine.token), Api(engine, theirs.token)
    with _app(mine) as app:
        batch = _queued(app, CAP + 2, batch="b1")
        kept = _queued(app, 2, batch="b2")
    with _app(theirs) as their_app:
        their_runs = _queued(their_app, 2, batch="b1")

    body = {"filter": {"names": ["slow"], "additional_metadata": {"batch": "b1"}}}
    refused = api.post("/runs/bulk/cancel", body)
    assert refused.status_code == 409, refused.text
    message = refused.json()["error"]["message"]
    assert f"matches {CAP + 2} runs" in message and f"bulk cap of {CAP}" in message
    assert "confirm=true" in message
    assert all(api.status(r) == "QUEUED" for r in batch)

    started = api.post("/runs/bulk/cancel", body | {"confirm": True, "reason": "bad batch"})
    assert started.status_code == 202, started.text
    op = api.finished(started.json()["operation_id"])
    assert (op["state"], op["total"], op["done"], op["failed"]) == (
        "COMPLETED",
        CAP + 2,
        CAP + 2,
        0,
    )
    assert op["filter"]["additional_metadata"] == {"batch": "b1"}
    assert all(api.status(r) == "CANCELLED" for r in batch)
    # Neither the other batch nor the other tenant's runs with the same metadata moved.
    assert all(api.status(r) == "QUEUED" for r in kept)
    their = Api(engine, theirs.token)
    assert all(their.status(r) == "QUEUED" for r in their_runs)
    # The operation is the tenant's own.
    assert other.get(f"/bulk-operations/{op['operation_id']}").status_code == 404
    assert [o["operation_id"] for o in api.get("/bulk-operations").json()["items"]] == [
        op["operation_id"]
    ]

    # Replay by ids is not capped; an unknown id counts as failed.
    ids = {"run_ids": [*batch[:2], str(uuid.uuid4())]}
    op = api.finished(api.post("/runs/bulk/replay", ids).json()["operation_id"])
    assert (op["state"], op["total"], op["done"], op["failed"]) == ("COMPLETED", 3, 2, 1)
    assert [api.status(r) for r in batch[:3]] == ["QUEUED", "QUEUED", "CANCELLED"]

    # A filter matching nothing completes at once; bad bodies name the problem.
    nothing = {"filter": {"names": ["slow"], "additional_metadata": {"batch": "none"}}}
    empty = api.post("/runs/bulk/cancel", nothing).json()
    assert (empty["state"], empty["total"]) == ("COMPLETED", 0)
    both = api.post("/runs/bulk/cancel", {"run_ids": batch[:1]} | nothing)
    assert both.status_code == 422 and "one of them" in both.json()["error"]["message"]
    bad_status = api.post("/runs/bulk/replay", {"filter": {"statuses": ["QUEUED"]}})
    assert bad_status.status_code == 422
    assert "replay applies to runs that are FAILED, CANCELLED" in bad_status.text
    unknown = api.post("/runs/bulk/cancel", {"filter": {"statuses": ["DONE"]}})
    assert unknown.status_code == 422 and "unknown run status DONE" in unknown.text


def test_a_bulk_operation_whose_owner_died_is_resumed(
    engine: EngineProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    mine, _ = tenants
    api = Api(engine, mine.token)
    with _app(mine) as app:
        runs = _queued(app, 3)
    op_id = uuid.uuid4()
    # As a replica that died after the first run leaves it: RUNNING, stale, position 1.
    with psycopg.connect(engine.db_url) as conn:
        conn.execute(
            "INSERT INTO stoker.bulk_operation (tenant_id, external_id, action, run_ids,"
            " total, position, done, owner, heartbeat_at)"
            " VALUES (%s, %s, 'cancel', %s, 3, 1, 1, 'a-dead-replica', now() - interval '1 hour')",
            (mine.tenant_id, op_id, runs),
        )
    op = api.finished(str(op_id))
    assert (op["state"], op["done"], op["failed"]) == ("COMPLETED", 3, 0)
    # The run the dead replica had done is left to it; the rest were cancelled now.
    assert [api.status(r) for r in runs] == ["QUEUED", "CANCELLED", "CANCELLED"]


def test_a_revoked_token_is_refused_on_every_mutation(
    engine: EngineProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    mine, _ = tenants
    admin = Api(engine, admin_token(engine, mine))
    created = admin.post("/tokens", {"name": "ci", "role": "member"}).json()
    api = Api(engine, created["token"])
    with _app(mine) as app:
        (run,) = _queued(app, 1)
    assert api.get(f"/runs/{run}").status_code == 200
    assert admin.http.delete(f"/tokens/{created['id']}").status_code == 200
    for path, body in [
        (f"/runs/{run}/cancel", None),
        (f"/runs/{run}/replay", None),
        ("/runs/bulk/cancel", {"run_ids": [run]}),
        (f"/workers/{uuid.uuid4()}/pause", None),
    ]:
        refused = api.post(path, body)
        assert refused.status_code == 401, (path, refused.text)
        assert "revoked" in refused.json()["error"]["message"]
    assert admin.status(run) == "QUEUED"


def _worker_runs(api: Api) -> dict[str, list[str]]:
    return {w["name"]: w["current_runs"] for w in api.get("/workers").json()["items"]}


def test_a_paused_worker_gets_nothing_new_and_keeps_what_it_runs(
    engine: EngineProcess, tenants: tuple[Tenant, Tenant], worker_factory: Any, tmp_path: Path
) -> None:
    mine, theirs = tenants
    api, other = Api(engine, mine.token), Api(engine, theirs.token)
    paused_worker = worker_factory(
        "tests.apps.basic:app", slots=4, name="a", engine=engine, tenant=mine
    )
    worker_a = paused_worker.wait_ready()
    with _app(mine) as app:
        slow = app.tasks["slow"]
        first = slow.run_no_wait(Sleep(seconds=3, tag="first"))
        wait_until(lambda: _worker_runs(api).get("a") == [first.run_id], 30, "a to run the first")

        # Another tenant cannot pause it.
        assert other.post(f"/workers/{worker_a}/pause").status_code == 404
        paused = api.post(f"/workers/{worker_a}/pause")
        assert paused.status_code == 200, paused.text
        assert paused.json()["paused"] is True and paused.json()["free_slots"] == 0

        worker_factory(
            "tests.apps.basic:app", slots=4, name="b", engine=engine, tenant=mine
        ).wait_ready()
        later = [slow.run_no_wait(Sleep(seconds=3, tag="later")).run_id for _ in range(3)]
        wait_until(
            lambda: sorted(_worker_runs(api).get("b", [])) == sorted(later),
            30,
            "b to run the later runs",
        )
        # a ran none of them, and finished what it had.
        assert _worker_runs(api)["a"] in ([first.run_id], [])
        assert first.result(timeout=30)["tag"] == "first"
        listed = {w["name"]: w for w in api.get("/workers").json()["items"]}
        assert listed["a"]["paused"] is True and listed["b"]["paused"] is False
        assert listed["a"]["heartbeat_age_s"] < 5

        # Resumed, it takes runs again: with b full, the rest go to a.
        resumed = api.post(f"/workers/{worker_a}/resume").json()
        assert resumed["paused"] is False
        more = [slow.run_no_wait(Sleep(seconds=3, tag="more")).run_id for _ in range(3)]
        wait_until(
            lambda: set(more) & set(_worker_runs(api).get("a", [])),
            30,
            "a to take runs again",
        )
    detail = api.get(f"/workers/{worker_a}").json()
    assert detail["name"] == "a" and detail["slots"] == 4
    assert api.get(f"/workers/{uuid.uuid4()}").status_code == 404


def test_trigger_a_task_and_a_workflow_over_rest(
    engine: EngineProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    mine, theirs = tenants
    api, other = Api(engine, mine.token), Api(engine, theirs.token)
    with _app(mine) as app:
        flows = workflows.declare(app)
        flows.workflows["diamond"].run_no_wait(workflows.Job())  # registers it
    body = {"input": {"name": "rest"}, "additional_metadata": {"via": "rest"}, "priority": 3}
    made = api.post("/tasks/greet/trigger", body)
    assert made.status_code == 201, made.text
    run = made.json()
    assert run["unserved_task_names"] == ["greet"] and run["deduplicated"] is False
    detail = api.get(f"/runs/{run['run_id']}").json()
    assert (detail["input"], detail["additional_metadata"]) == ({"name": "rest"}, {"via": "rest"})
    # The other tenant has no such task; its runs are its own.
    unknown = other.post("/tasks/greet/trigger", body)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == (
        "no task named 'greet' is registered; registered tasks: none"
    )
    assert other.get(f"/runs/{run['run_id']}").status_code == 404

    keyed = body | {"idempotency_key": "order-7", "idempotency_ttl": "1h"}
    first = api.post("/tasks/greet/trigger", keyed).json()
    again = api.post("/tasks/greet/trigger", keyed).json()
    assert again["run_id"] == first["run_id"] and again["deduplicated"] is True

    flow = api.post("/workflows/diamond/trigger", {"input": {"value": 3}})
    assert flow.status_code == 201, flow.text
    assert api.get(f"/workflow-runs/{flow.json()['run_id']}").json()["input"] == {"value": 3}

    missing = api.post("/tasks/nope/trigger", {"input": 1})
    assert missing.status_code == 404
    assert "registered tasks: " in missing.json()["error"]["message"]
    assert "greet" in missing.json()["error"]["message"]
    big = api.post("/tasks/greet/trigger", {"input": {"name": "x" * (PAYLOAD_LIMIT + 10)}})
    assert big.status_code == 413, big.text
    assert f"over the limit of {PAYLOAD_LIMIT} bytes" in big.json()["error"]["message"]
    assert api.post("/tasks/greet/trigger", {"priority": 9}).status_code == 422
    assert api.post("/tasks/greet/trigger", {"inputs": 1}).status_code == 422
    bad_ttl = api.post("/tasks/greet/trigger", {"idempotency_key": "k", "idempotency_ttl": "soon"})
    assert bad_ttl.status_code == 422 and "idempotency_ttl" in bad_ttl.text


def test_rate_limits_list_put_delete_per_tenant(
    engine: EngineProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    mine, theirs = tenants
    api, other = Api(engine, mine.token), Api(engine, theirs.token)
    put = api.http.put("/rate-limits/openai", json={"limit": 60, "duration": "1m"})
    assert put.status_code == 200, put.text
    assert put.json() | {"updated_at": None} == {
        "key": "openai",
        "limit": 60,
        "duration_s": 60.0,
        "dynamic": False,
        "used": 0,
        "updated_at": None,
    }
    api.http.put("/rate-limits/email", json={"limit": 5, "duration": 1})
    assert [r["key"] for r in api.get("/rate-limits").json()["items"]] == ["email", "openai"]
    assert api.get("/rate-limits/email").json()["duration_s"] == 1.0

    # Another tenant sees none of them and cannot delete them.
    assert other.get("/rate-limits").json()["items"] == []
    assert other.get("/rate-limits/openai").status_code == 404
    assert other.http.delete("/rate-limits/openai").status_code == 404

    updated = api.http.put("/rate-limits/openai", json={"limit": 120, "duration": "1m"})
    assert updated.json()["limit"] == 120
    gone = api.http.delete("/rate-limits/openai")
    assert gone.status_code == 200 and gone.json() == {"key": "openai", "waiting_runs": 0}
    assert api.get("/rate-limits/openai").status_code == 404
    assert api.http.delete("/rate-limits/openai").status_code == 404

    zero = api.http.put("/rate-limits/x", json={"limit": 0})
    assert zero.status_code == 422 and "limit" in zero.text
    soon = api.http.put("/rate-limits/x", json={"limit": 1, "duration": "soon"})
    assert soon.status_code == 422 and "duration" in soon.json()["error"]["message"]


def test_an_expired_token_is_refused_on_rest_and_grpc(
    engine: EngineProcess, tenants: tuple[Tenant, Tenant]
) -> None:
    mine, _ = tenants
    admin = Api(engine, admin_token(engine, mine))
    made = admin.post("/tokens", {"name": "short", "expires_in": "1s"})
    assert made.status_code == 201, made.text
    api = Api(engine, made.json()["token"])
    wait_until(lambda: api.get("/runs").status_code == 401, 10, "the token to expire")
    refused = api.post(f"/runs/{uuid.uuid4()}/cancel")
    assert refused.status_code == 401 and "expired" in refused.json()["error"]["message"]
    client = Tenant(mine.tenant_id, made.json()["token"], mine.address).client()
    try:
        with pytest.raises(AuthenticationError, match="expired"):
            client.runs.cancel(str(uuid.uuid4()))
    finally:
        client.close()


def test_openapi_documents_the_actions_with_examples(engine: EngineProcess) -> None:
    spec = httpx.get(f"{engine.http_url}/openapi.json", timeout=10).json()
    paths = spec["paths"]
    for path, method in [
        ("/api/v1/runs/{run_id}/cancel", "post"),
        ("/api/v1/runs/{run_id}/replay", "post"),
        ("/api/v1/runs/bulk/cancel", "post"),
        ("/api/v1/runs/bulk/replay", "post"),
        ("/api/v1/bulk-operations/{operation_id}", "get"),
        ("/api/v1/bulk-operations", "get"),
        ("/api/v1/tasks/{name}/trigger", "post"),
        ("/api/v1/workflows/{name}/trigger", "post"),
        ("/api/v1/rate-limits", "get"),
        ("/api/v1/rate-limits/{key}", "put"),
        ("/api/v1/rate-limits/{key}", "delete"),
        ("/api/v1/workers/{worker_id}", "get"),
        ("/api/v1/workers/{worker_id}/pause", "post"),
        ("/api/v1/workers/{worker_id}/resume", "post"),
        ("/api/v1/tokens", "post"),
        ("/api/v1/tokens/{token_id}", "delete"),
    ]:
        op = paths[path][method]
        assert op["summary"] and op.get("description"), (path, method)
        assert "401" in op["responses"], (path, method)
    assert "409" in paths["/api/v1/runs/bulk/cancel"]["post"]["responses"]
    schemas = spec["components"]["schemas"]
    for name in ("BulkBody", "BulkOperation", "TriggerBody", "RateLimit", "PutRateLimit"):
        assert schemas[name].get("examples"), name
    assert "paused" in schemas["Worker"]["properties"]
    assert "current_runs" in schemas["Worker"]["properties"]
