"""The REST API against a real, migrated Postgres: auth, runs, pagination, workers, errors."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from psycopg import AsyncConnection

from stoker.db import Executor, connect
from stoker.engine.api.app import create_app
from stoker.engine.auth import TokenAuth, create_tenant, create_token

SCHEMA = "stoker"
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

# --- helpers ------------------------------------------------------------------------------


class Seed:
    """Writes rows straight into the schema, the way the engine would have left them."""

    def __init__(self, conn: AsyncConnection[Any]) -> None:
        self.conn = conn

    async def worker(
        self, tenant_id: int, name: str, *, slots: int = 4, status: str = "ACTIVE"
    ) -> tuple[int, uuid.UUID]:
        ext = uuid.uuid4()
        cur = await self.conn.execute(
            "INSERT INTO worker (tenant_id, external_id, name, slots, task_names, status)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (tenant_id, ext, name, slots, ["add", "mul"], status),
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0]), ext

    async def run(
        self,
        tenant_id: int,
        task_name: str = "add",
        *,
        status: str = "QUEUED",
        created_at: datetime = T0,
        attempt: int = 0,
        worker_id: int | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        output: Any = None,
        error: dict[str, str] | None = None,
    ) -> tuple[int, uuid.UUID]:
        ext = uuid.uuid4()
        cur = await self.conn.execute(
            "INSERT INTO task (tenant_id, external_id, task_name, status, attempt, retry_count,"
            " max_retries, input, additional_metadata, output, error, worker_id, created_at,"
            " started_at, finished_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, 3, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                tenant_id,
                ext,
                task_name,
                status,
                attempt,
                attempt,
                json.dumps({"a": 1, "b": 2}),
                json.dumps({"customer": "acme"}),
                None if output is None else json.dumps(output),
                None if error is None else json.dumps(error),
                worker_id,
                created_at,
                started_at,
                finished_at,
            ),
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0]), ext

    async def event(
        self,
        tenant_id: int,
        task_id: int,
        attempt: int,
        kind: str,
        worker_id: int | None,
        data: dict[str, Any],
        created_at: datetime,
    ) -> None:
        await self.conn.execute(
            "INSERT INTO task_event (tenant_id, task_id, attempt, kind, worker_id, data,"
            " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (tenant_id, task_id, attempt, kind, worker_id, json.dumps(data), created_at),
        )

    async def runtime(self, tenant_id: int, task_id: int, worker_id: int) -> None:
        await self.conn.execute(
            "INSERT INTO task_runtime (task_id, tenant_id, attempt, worker_id)"
            " VALUES (%s, %s, 0, %s)",
            (task_id, tenant_id, worker_id),
        )


class Env:
    """An API client for one tenant, another tenant's token, and a seeding connection."""

    def __init__(
        self, client: httpx.AsyncClient, seed: Seed, tenant: int, token: str, other: int
    ) -> None:
        self.client = client
        self.seed = seed
        self.tenant = tenant
        self.token = token
        self.other_tenant = other

    async def conn_execute(self, sql: str) -> None:
        await self.seed.conn.execute(sql)

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(
            path, params=params, headers={"authorization": f"Bearer {self.token}"}
        )


@pytest.fixture
async def env(db: Executor, db_url: str) -> AsyncIterator[Env]:
    tenant = await create_tenant(db, "acme")
    token = await create_token(db, tenant)
    other = await create_tenant(db, "globex")
    app = create_app(db, TokenAuth(db), version="9.9.9")
    transport = httpx.ASGITransport(app=app)
    async with (
        await connect(db_url, SCHEMA) as conn,
        httpx.AsyncClient(transport=transport, base_url="http://stoker") as client,
    ):
        yield Env(client, Seed(conn), tenant, token, other)


def _ids(page: dict[str, Any]) -> list[str]:
    return [item["run_id"] for item in page["items"]]


# --- health and docs ----------------------------------------------------------------------


async def test_healthz_needs_no_token(env: Env) -> None:
    response = await env.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_healthz_is_503_when_the_database_is_gone(db_url: str, db: Executor) -> None:
    conn = await connect(db_url, SCHEMA)
    broken = Executor(conn)
    await conn.close()
    app = create_app(broken, TokenAuth(db), version="0")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        response = await c.get("/healthz")
    assert response.status_code == 503


async def test_openapi_lists_every_route(env: Env) -> None:
    spec = (await env.client.get("/openapi.json")).json()
    assert spec["info"]["title"] == "Stoker"
    assert spec["info"]["version"] == "9.9.9"
    assert set(spec["paths"]) >= {
        "/healthz",
        "/api/v1/runs",
        "/api/v1/runs/{run_id}",
        "/api/v1/workers",
        "/api/v1/tasks",
        "/api/v1/webhooks",
        "/api/v1/webhooks/{name}",
        "/webhooks/{tenant}/{name}",
    }
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert (await env.client.get("/docs")).status_code == 200


async def test_docs_page_and_its_assets_come_from_the_engine(env: Env) -> None:
    """/docs works offline: every script, style and icon it loads is served by the engine."""
    page = await env.client.get("/docs")
    assert page.status_code == 200
    html = page.text
    assert "http://" not in html and "https://" not in html and "//" + "cdn" not in html
    refs = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
    assert len(refs) >= 4, refs  # script, stylesheet, icon, the OpenAPI document
    for ref in refs:
        assert ref.startswith("/") and not ref.startswith("//"), ref
        got = await env.client.get(ref)
        assert got.status_code == 200, ref
        assert got.content, ref
    bundle = await env.client.get("/docs/assets/swagger-ui-bundle.js")
    assert "javascript" in bundle.headers["content-type"]
    assert "SwaggerUIBundle" in bundle.text
    # FastAPI writes OpenAPI 3.1, which Swagger UI renders from version 5 on.
    assert (await env.client.get("/openapi.json")).json()["openapi"].startswith("3.1")
    assert re.search(r'PACKAGE_VERSION:"5\.\d+\.\d+"', bundle.text)


# --- auth ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (None, "missing"),
        ("Basic dXNlcjpwdw==", "missing"),
        ("Bearer stk_not-a-real-token", "invalid"),
    ],
)
async def test_api_routes_need_a_valid_token(env: Env, header: str | None, words: str) -> None:
    headers = {"authorization": header} if header else {}
    for path in ("/api/v1/runs", f"/api/v1/runs/{uuid.uuid4()}", "/api/v1/workers"):
        response = await env.client.get(path, headers=headers)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        error = response.json()["error"]
        assert error["type"] == "AuthenticationError"
        assert words in error["message"]


async def test_other_tenants_runs_and_workers_are_invisible(env: Env) -> None:
    _, theirs = await env.seed.run(env.other_tenant, "secret")
    await env.seed.worker(env.other_tenant, "their-worker")
    _, mine = await env.seed.run(env.tenant, "add")

    response = await env.get(f"/api/v1/runs/{theirs}")
    assert response.status_code == 404
    assert response.json()["error"] == {
        "type": "NotFoundError",
        "message": f"no run with id {theirs}",
    }
    assert _ids((await env.get("/api/v1/runs")).json()) == [str(mine)]
    assert (await env.get("/api/v1/runs", task_name="secret")).json()["items"] == []
    assert (await env.get("/api/v1/workers")).json()["items"] == []


# --- one run ------------------------------------------------------------------------------


async def test_a_queued_run_says_when_no_live_worker_serves_its_task(env: Env) -> None:
    await env.seed.worker(env.tenant, "w")  # serves add and mul
    await env.seed.worker(env.tenant, "gone", status="DEAD")
    await env.conn_execute("UPDATE worker SET task_names = '{div}' WHERE name = 'gone'")
    _, served = await env.seed.run(env.tenant, "add")
    _, unserved = await env.seed.run(env.tenant, "div")
    _, finished = await env.seed.run(env.tenant, "div", status="COMPLETED", output=1)
    assert (await env.get(f"/api/v1/runs/{served}")).json()["waiting_reason"] is None
    reason = (await env.get(f"/api/v1/runs/{unserved}")).json()["waiting_reason"]
    assert reason.startswith("no connected worker serves task 'div'")
    assert (await env.get(f"/api/v1/runs/{finished}")).json()["waiting_reason"] is None
    spec = (await env.client.get("/openapi.json")).json()
    assert "waiting_reason" in spec["components"]["schemas"]["RunDetail"]["properties"]


async def test_served_tasks_are_read_once_per_tenant_while_fresh(env: Env, db: Executor) -> None:
    from stoker.engine.dispatcher.served import ServedTasks

    await env.seed.worker(env.tenant, "w")  # serves add and mul
    served = ServedTasks(db, max_age_s=3600)
    assert await served.unserved(env.tenant, ["add", "div"]) == ["div"]
    await env.conn_execute("UPDATE worker SET task_names = '{add,div}'")
    # Cached: triggers do not query the worker table each time...
    assert await served.unserved(env.tenant, ["div"]) == ["div"]
    # ...workers connected to this replica answer without it...
    local = ServedTasks(db, lambda tenant_id: [frozenset({"div"})], max_age_s=3600)
    assert await local.unserved(env.tenant, ["div"]) == []
    # ...and a fresh read sees the change.
    assert await ServedTasks(db, max_age_s=0).unserved(env.tenant, ["add", "div", "mul"]) == ["mul"]
    assert await ServedTasks(db).unserved(env.other_tenant, ["add"]) == ["add"]


async def test_a_failed_read_of_live_workers_is_not_repeated_by_every_waiting_trigger() -> None:
    """While the database is unreachable, triggers waiting for the live-worker check must
    not each wait for a pooled connection in turn: one failed read answers them all."""
    import asyncio

    from psycopg_pool import AsyncConnectionPool

    from stoker.engine.dispatcher.served import ServedTasks
    from tests.harness import free_port

    class CountingExecutor(Executor):
        reads = 0

        async def fetch(self, name: str, params: object) -> Any:  # type: ignore[override]
            CountingExecutor.reads += 1
            return await super().fetch(name, params)

    # A real pool for a server that is not there: each read fails after the pool's wait.
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        f"postgresql://postgres@127.0.0.1:{free_port()}/none",
        min_size=1,
        timeout=0.2,
        open=False,
        reconnect_timeout=60,
    )
    await pool.open(wait=False)
    try:
        served = ServedTasks(CountingExecutor(pool), max_age_s=60, answer_within_s=60)
        answers = await asyncio.gather(*(served.report(1, ["add"]) for _ in range(10)))
        assert answers == [[]] * 10
        assert CountingExecutor.reads == 1
    finally:
        await pool.close()


async def test_get_run_tells_every_attempt(env: Env) -> None:
    w1, w1_ext = await env.seed.worker(env.tenant, "w1")
    w2, w2_ext = await env.seed.worker(env.tenant, "w2")
    started = T0 + timedelta(seconds=30)
    task_id, run_id = await env.seed.run(
        env.tenant,
        status="RUNNING",
        attempt=2,
        worker_id=w2,
        started_at=started,
        # the row keeps the last failure while later attempts run
        error={"type": "ValueError", "message": "boom", "traceback": "tb"},
    )
    boom = {"type": "ValueError", "message": "boom", "traceback": "Traceback ...\nValueError"}
    await env.seed.event(
        env.tenant,
        task_id,
        0,
        "FAILED",
        w1,
        {"error": boom, "started_at": (T0 + timedelta(seconds=1)).isoformat(), "retry": True},
        T0 + timedelta(seconds=2),
    )
    lost = {"type": "WorkerLost", "message": "worker w1 stopped heartbeating", "traceback": ""}
    await env.seed.event(
        env.tenant,
        task_id,
        1,
        "WORKER_LOST",
        w1,
        {"error": lost, "started_at": None},
        T0 + timedelta(seconds=20),
    )

    response = await env.get(f"/api/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["run_id"] == str(run_id)
    assert run["status"] == "RUNNING"
    assert run["input"] == {"a": 1, "b": 2}
    assert run["output"] is None
    assert run["additional_metadata"] == {"customer": "acme"}
    assert run["worker_id"] == str(w2_ext)
    assert run["duration_ms"] is None
    assert (run["attempt"], run["retry_count"], run["max_retries"]) == (2, 2, 3)

    first, second, current = run["attempts"]
    assert first["number"] == 0 and first["status"] == "FAILED"
    assert first["error"] == boom
    assert first["worker_id"] == str(w1_ext)
    assert datetime.fromisoformat(first["started_at"]) == T0 + timedelta(seconds=1)
    assert datetime.fromisoformat(first["finished_at"]) == T0 + timedelta(seconds=2)
    assert second["number"] == 1 and second["status"] == "WORKER_LOST"
    assert second["error"]["type"] == "WorkerLost" and second["started_at"] is None
    assert current == {
        "number": 2,
        "status": "RUNNING",
        "error": None,
        "worker_id": str(w2_ext),
        "started_at": current["started_at"],
        "finished_at": None,
    }
    assert datetime.fromisoformat(current["started_at"]) == started


async def test_finished_runs_have_outcome_and_duration(env: Env) -> None:
    w, w_ext = await env.seed.worker(env.tenant, "w")
    start, end = T0, T0 + timedelta(milliseconds=1500)
    _, done = await env.seed.run(
        env.tenant,
        status="COMPLETED",
        worker_id=w,
        started_at=start,
        finished_at=end,
        output={"sum": 3},
    )
    run = (await env.get(f"/api/v1/runs/{done}")).json()
    assert run["output"] == {"sum": 3}
    assert run["duration_ms"] == 1500
    assert run["error"] is None
    assert [(a["number"], a["status"], a["worker_id"]) for a in run["attempts"]] == [
        (0, "COMPLETED", str(w_ext))
    ]

    # A final failure is described by its event, not repeated from the task row.
    error = {"type": "KeyError", "message": "'x'", "traceback": "tb"}
    task_id, failed = await env.seed.run(
        env.tenant, status="FAILED", worker_id=w, started_at=start, finished_at=end, error=error
    )
    await env.seed.event(
        env.tenant, task_id, 0, "FAILED", w, {"error": error, "started_at": start.isoformat()}, end
    )
    run = (await env.get(f"/api/v1/runs/{failed}")).json()
    assert run["error"] == error
    # lists carry the error without its traceback
    listed = (await env.get("/api/v1/runs", status="FAILED")).json()["items"]
    assert [r["error"] for r in listed] == [{"type": "KeyError", "message": "'x'"}]
    assert [(a["number"], a["status"], a["error"]) for a in run["attempts"]] == [
        (0, "FAILED", error)
    ]


async def test_unknown_and_malformed_run_ids(env: Env) -> None:
    missing = uuid.uuid4()
    response = await env.get(f"/api/v1/runs/{missing}")
    assert response.status_code == 404
    assert str(missing) in response.json()["error"]["message"]

    response = await env.get("/api/v1/runs/12345")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "InvalidRequestError"
    assert "path parameter 'run_id'" in error["message"] and "UUID" in error["message"]


# --- listing runs -------------------------------------------------------------------------


async def test_list_filters(env: Env) -> None:
    made: list[tuple[str, str, str]] = []  # (run_id, task_name, status), oldest first
    for i, (name, status) in enumerate(
        [
            ("add", "QUEUED"),
            ("add", "COMPLETED"),
            ("mul", "FAILED"),
            ("mul", "COMPLETED"),
            ("add", "CANCELLED"),
            ("mul", "RUNNING"),
        ]
    ):
        _, ext = await env.seed.run(
            env.tenant, name, status=status, created_at=T0 + timedelta(minutes=i)
        )
        made.append((str(ext), name, status))

    def newest_first(names: set[str], statuses: set[str]) -> list[str]:
        return [r for r, n, s in reversed(made) if n in names and s in statuses]

    everything = {"QUEUED", "COMPLETED", "FAILED", "CANCELLED", "RUNNING"}
    page = (await env.get("/api/v1/runs")).json()
    assert _ids(page) == newest_first({"add", "mul"}, everything)
    assert page["next_cursor"] is None
    assert "input" not in page["items"][0] and "output" not in page["items"][0]

    page = (await env.get("/api/v1/runs", status=["COMPLETED", "FAILED"])).json()
    assert _ids(page) == newest_first({"add", "mul"}, {"COMPLETED", "FAILED"})
    page = (await env.get("/api/v1/runs", status="COMPLETED", task_name="mul")).json()
    assert _ids(page) == newest_first({"mul"}, {"COMPLETED"})
    page = (await env.get("/api/v1/runs", task_name="add")).json()
    assert _ids(page) == newest_first({"add"}, everything)

    since, until = T0 + timedelta(minutes=2), T0 + timedelta(minutes=4)
    page = (await env.get("/api/v1/runs", since=since.isoformat(), until=until.isoformat())).json()
    assert _ids(page) == [made[3][0], made[2][0]]
    # a timestamp without a zone is UTC
    page = (await env.get("/api/v1/runs", since="2025-03-01T12:05:00")).json()
    assert _ids(page) == [made[5][0]]


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"status": "DONE"}, "query parameter 'status'"),
        ({"limit": "0"}, "query parameter 'limit'"),
        ({"limit": "501"}, "query parameter 'limit'"),
        ({"since": "yesterday"}, "query parameter 'since'"),
        ({"cursor": "not-a-cursor"}, "query parameter 'cursor'"),
        ({"cursor": "WyJ4Il0"}, "query parameter 'cursor'"),
    ],
)
async def test_invalid_filters_are_422_naming_the_parameter(
    env: Env, params: dict[str, str], names: str
) -> None:
    response = await env.get("/api/v1/runs", **params)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "InvalidRequestError"
    assert names in error["message"]


@pytest.mark.parametrize(
    ("status", "task_name"),
    [(None, None), (["COMPLETED", "FAILED"], None), (None, "mul"), (["QUEUED"], "mul")],
)
async def test_cursor_walks_every_page_once(
    env: Env, status: list[str] | None, task_name: str | None
) -> None:
    expected: list[str] = []  # oldest first
    for i in range(61):
        # groups of runs created in the same microsecond: the id breaks the tie
        at = T0 + timedelta(seconds=i // 4)
        run_status = ("COMPLETED", "FAILED", "QUEUED")[i % 3]
        name = ("add", "mul")[i % 2]
        _, ext = await env.seed.run(env.tenant, name, status=run_status, created_at=at)
        if (status is None or run_status in status) and task_name in (None, name):
            expected.append(str(ext))
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 4}
        if status:
            params["status"] = status
        if task_name:
            params["task_name"] = task_name
        if cursor:
            params["cursor"] = cursor
        page = (await env.get("/api/v1/runs", **params)).json()
        pages += 1
        assert 0 < len(page["items"]) <= 4
        seen += _ids(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == len(expected)
    assert pages == -(-len(expected) // 4)
    # newest first; within one timestamp, later inserts first
    assert seen == list(reversed(expected))


# --- workers and task definitions ---------------------------------------------------------


async def test_workers_with_running_counts(env: Env) -> None:
    busy, busy_ext = await env.seed.worker(env.tenant, "busy", slots=3)
    _, idle_ext = await env.seed.worker(env.tenant, "idle", slots=2)
    dead, dead_ext = await env.seed.worker(env.tenant, "gone", slots=5, status="DEAD")
    for _ in range(2):
        task_id, _ = await env.seed.run(env.tenant, status="RUNNING", worker_id=busy)
        await env.seed.runtime(env.tenant, task_id, busy)
    task_id, _ = await env.seed.run(env.tenant, status="RUNNING", worker_id=dead)
    await env.seed.runtime(env.tenant, task_id, dead)

    items = (await env.get("/api/v1/workers")).json()["items"]
    by_name = {w["name"]: w for w in items}
    assert set(by_name) == {"busy", "idle", "gone"}
    assert by_name["busy"]["worker_id"] == str(busy_ext)
    assert (by_name["busy"]["running"], by_name["busy"]["free_slots"]) == (2, 1)
    assert (by_name["idle"]["running"], by_name["idle"]["free_slots"]) == (0, 2)
    assert (by_name["gone"]["running"], by_name["gone"]["free_slots"]) == (1, 0)
    assert by_name["busy"]["task_names"] == ["add", "mul"]
    assert by_name["busy"]["status"] == "ACTIVE"

    active = (await env.get("/api/v1/workers", status="ACTIVE")).json()["items"]
    assert {w["worker_id"] for w in active} == {str(busy_ext), str(idle_ext)}
    dead_only = (await env.get("/api/v1/workers", status=["DEAD", "STOPPED"])).json()["items"]
    assert [w["worker_id"] for w in dead_only] == [str(dead_ext)]
    response = await env.get("/api/v1/workers", status="ZOMBIE")
    assert response.status_code == 422
    assert "query parameter 'status'" in response.json()["error"]["message"]


async def test_task_definitions(env: Env) -> None:
    for tenant, name in ((env.tenant, "mul"), (env.tenant, "add"), (env.other_tenant, "x")):
        await env.seed.conn.execute(
            "INSERT INTO task_def (tenant_id, name, config) VALUES (%s, %s, %s)",
            (tenant, name, json.dumps({"retries": 2})),
        )
    items = (await env.get("/api/v1/tasks")).json()["items"]
    assert [(t["name"], t["config"]) for t in items] == [
        ("add", {"retries": 2}),
        ("mul", {"retries": 2}),
    ]


# --- errors -------------------------------------------------------------------------------


async def test_unknown_route_has_the_error_shape(env: Env) -> None:
    response = await env.get("/api/v1/nope")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "NotFoundError"


async def test_unexpected_errors_are_500_without_internals(env: Env) -> None:
    _, run_id = await env.seed.run(env.tenant)
    await env.seed.conn.execute("DROP TABLE task_event")
    response = await env.get(f"/api/v1/runs/{run_id}")
    assert response.status_code == 500
    body = response.json()
    assert body["error"]["type"] == "InternalError"
    assert "task_event" not in response.text
