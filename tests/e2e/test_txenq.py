"""Transactional enqueue through real engine and worker processes, for each supported
connection: psycopg (sync and async), asyncpg, SQLAlchemy (Session, Connection,
AsyncSession) and Django (the current atomic block).

Each driver: a committed run runs, a rolled-back one never existed, a savepoint rolled
back takes its run with it while the outer commit keeps its own. Then: a run is never seen
before its transaction commits; idempotency keys in transactions; invalid input and wrong
connections refused before anything is written; a database without the schema and a role
without a tenant give clear errors; a name the engine does not know is refused with a
reason the run reference reports; the tenant comes from the role; and runs enqueued while
the engine is down start when it returns.

The module shares one tenant, one worker and one database role (mapped to the tenant by
``grant_enqueue_role``, with nothing else granted) to stay fast.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from pydantic import ValidationError

from stoker import NotFoundError, Stoker, TaskRunError, TransactionalEnqueueError
from tests.apps import txenq
from tests.conftest import make_tenant
from tests.harness import (
    EngineProcess,
    Tenant,
    WorkerProcess,
    create_database,
    create_role,
    drop_database,
    drop_role,
    role_url,
    wait_until,
    with_database,
)

pytestmark = pytest.mark.timeout(120)


@dataclass
class Setup:
    engine: EngineProcess
    tenant: Tenant
    role: str
    role_url: str
    app: Stoker


def _sqlalchemy_url(url: str, driver: str) -> str:
    p = conninfo_to_dict(url)
    host, port = p.get("host") or "127.0.0.1", p.get("port", 5432)
    head = f"postgresql+{driver}://{p['user']}"
    if str(host).startswith("/"):  # a socket directory
        return f"{head}@/{p['dbname']}?host={host}&port={port}"
    return f"{head}@{host}:{port}/{p['dbname']}"


@pytest.fixture(scope="module")
def tx(engine: EngineProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tenant = make_tenant(engine)
    worker = WorkerProcess(
        "tests.apps.txenq:app", tenant, engine.db_url, tmp_path_factory.mktemp("tx"), "tx"
    ).start()
    role = create_role(engine.db_url, tenant.tenant_id)
    app = txenq.declare(tenant.client())
    try:
        yield Setup(engine, tenant, role, role_url(engine.db_url, role), app)
    finally:
        app.close()
        worker.kill()
        drop_role(engine.db_url, role)


def _rows(db_url: str, ids: list[str]) -> dict[str, int]:
    """Of ``ids``: the task/dag runs that exist, with their tenant, and the inbox rows."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT external_id::text, tenant_id FROM stoker.task WHERE external_id = ANY(%s)"
            " UNION ALL SELECT external_id::text, tenant_id FROM stoker.dag"
            " WHERE external_id = ANY(%s)"
            " UNION ALL SELECT external_id::text, -1 FROM stoker.run_inbox"
            " WHERE external_id = ANY(%s)",
            ([uuid.UUID(i) for i in ids],) * 3,
        ).fetchall()
    return {r[0]: r[1] for r in rows}


def _never_existed(s: Setup, *refs: Any) -> None:
    assert _rows(s.engine.db_url, [r.run_id for r in refs]) == {}
    for ref in refs:
        with pytest.raises(NotFoundError):
            ref.result(timeout=1)


# -- sync drivers: commit, rollback, savepoint rollback ---------------------------------


class SyncTx:
    """One driver's way of opening a transaction and a savepoint on a connection."""

    def __init__(self, url: str) -> None:
        self.url = url

    def transaction(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def savepoint(self, conn: Any) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class PsycopgTx(SyncTx):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.conn = psycopg.connect(url)

    def transaction(self) -> AbstractContextManager[Any]:
        @contextmanager
        def tx() -> Iterator[Any]:
            with self.conn.transaction():
                yield self.conn

        return tx()

    def savepoint(self, conn: Any) -> AbstractContextManager[Any]:
        return conn.transaction()  # type: ignore[no-any-return]

    def close(self) -> None:
        self.conn.close()


class SessionTx(SyncTx):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        from sqlalchemy import create_engine

        self.engine = create_engine(_sqlalchemy_url(url, "psycopg"))

    def transaction(self) -> AbstractContextManager[Any]:
        from sqlalchemy.orm import Session

        @contextmanager
        def tx() -> Iterator[Any]:
            with Session(self.engine) as session, session.begin():
                yield session

        return tx()

    def savepoint(self, conn: Any) -> AbstractContextManager[Any]:
        return conn.begin_nested()  # type: ignore[no-any-return]

    def close(self) -> None:
        self.engine.dispose()


class SqlaConnectionTx(SessionTx):
    def transaction(self) -> AbstractContextManager[Any]:
        return self.engine.begin()  # type: ignore[no-any-return]


class DjangoTx(SyncTx):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        _django(url)

    def transaction(self) -> AbstractContextManager[Any]:
        from django.db import connection, transaction

        @contextmanager
        def tx() -> Iterator[Any]:
            with transaction.atomic():
                yield connection

        return tx()

    def savepoint(self, conn: Any) -> AbstractContextManager[Any]:
        from django.db import transaction

        return transaction.atomic()

    def close(self) -> None:
        from django.db import connection

        connection.close()


def _django(url: str) -> None:
    """A minimal Django settings (PostgreSQL backend on ``url``), configured once."""
    from django.conf import settings

    p = conninfo_to_dict(url)
    db = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": p["dbname"],
        "USER": p["user"],
        "HOST": p.get("host", ""),
        "PORT": p.get("port", ""),
    }
    if not settings.configured:
        settings.configure(DATABASES={"default": db}, USE_TZ=True)
        import django

        django.setup()
    else:
        from django.db import connections

        connections["default"].close()
        connections["default"].settings_dict.update(db)


class Rollback(Exception):
    """Raised to roll a transaction (or savepoint) back."""


SYNC: dict[str, Callable[[str], SyncTx]] = {
    "psycopg": PsycopgTx,
    "sqlalchemy-session": SessionTx,
    "sqlalchemy-connection": SqlaConnectionTx,
    "django": DjangoTx,
}


@pytest.mark.parametrize("driver", list(SYNC))
def test_sync_commit_rollback_and_savepoint(tx: Setup, driver: str) -> None:
    d = SYNC[driver](tx.role_url)
    ship = tx.app.tasks["ship"]
    try:
        with pytest.raises(Rollback), d.transaction() as conn:
            rolled_back = ship.run_no_wait(txenq.Order(order_id=1), connection=conn)
            raise Rollback
        with d.transaction() as conn:
            kept = ship.run_no_wait(txenq.Order(order_id=2, note=driver), connection=conn)
            with pytest.raises(Rollback), d.savepoint(conn):
                in_savepoint = ship.run_no_wait(txenq.Order(order_id=3), connection=conn)
                raise Rollback
    finally:
        d.close()
    assert kept.result(timeout=30) == {"shipped": 2, "note": driver}
    # The run belongs to the tenant the role is mapped to, under the id the SDK gave it.
    assert _rows(tx.engine.db_url, [kept.run_id]) == {kept.run_id: tx.tenant.tenant_id}
    _never_existed(tx, rolled_back, in_savepoint)


# -- async drivers ----------------------------------------------------------------------


async def _psycopg_async(s: Setup, order: int) -> tuple[Any, Any, Any]:
    ship = s.app.tasks["ship"]
    conn = await psycopg.AsyncConnection.connect(s.role_url)
    try:
        with pytest.raises(Rollback):
            async with conn.transaction():
                a = await ship.aio_run_no_wait(txenq.Order(order_id=order), connection=conn)
                raise Rollback
        async with conn.transaction():
            b = await ship.aio_run_no_wait(txenq.Order(order_id=order + 1), connection=conn)
            with pytest.raises(Rollback):
                async with conn.transaction():
                    c = await ship.aio_run_no_wait(txenq.Order(order_id=order), connection=conn)
                    raise Rollback
    finally:
        await conn.close()
    return a, b, c


async def _asyncpg(s: Setup, order: int) -> tuple[Any, Any, Any]:
    import asyncpg

    p = conninfo_to_dict(s.role_url)
    ship = s.app.tasks["ship"]
    conn = await asyncpg.connect(
        user=p["user"], database=p["dbname"], host=p.get("host"), port=p.get("port")
    )
    try:
        with pytest.raises(Rollback):
            async with conn.transaction():
                a = await ship.aio_run_no_wait(txenq.Order(order_id=order), connection=conn)
                raise Rollback
        async with conn.transaction():
            b = await ship.aio_run_no_wait(txenq.Order(order_id=order + 1), connection=conn)
            with pytest.raises(Rollback):
                async with conn.transaction():  # nested: a savepoint
                    c = await ship.aio_run_no_wait(txenq.Order(order_id=order), connection=conn)
                    raise Rollback
    finally:
        await conn.close()
    return a, b, c


async def _async_session(s: Setup, order: int) -> tuple[Any, Any, Any]:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    engine = create_async_engine(_sqlalchemy_url(s.role_url, "asyncpg"))
    ship = s.app.tasks["ship"]
    try:
        with pytest.raises(Rollback):
            async with AsyncSession(engine) as session, session.begin():
                a = await ship.aio_run_no_wait(txenq.Order(order_id=order), connection=session)
                raise Rollback
        async with AsyncSession(engine) as session, session.begin():
            b = await ship.aio_run_no_wait(txenq.Order(order_id=order + 1), connection=session)
            with pytest.raises(Rollback):
                async with session.begin_nested():
                    c = await ship.aio_run_no_wait(txenq.Order(order_id=order), connection=session)
                    raise Rollback
    finally:
        await engine.dispose()
    return a, b, c


ASYNC = {"psycopg-async": _psycopg_async, "asyncpg": _asyncpg, "sqlalchemy-async": _async_session}


@pytest.mark.parametrize("driver", list(ASYNC))
async def test_async_commit_rollback_and_savepoint(tx: Setup, driver: str) -> None:
    rolled_back, kept, in_savepoint = await ASYNC[driver](tx, 10)
    assert await kept.aio_result(timeout=30) == {"shipped": 11, "note": ""}
    _never_existed(tx, rolled_back, in_savepoint)


# -- visibility, idempotency, validation ------------------------------------------------


def test_a_run_is_not_seen_before_its_transaction_commits(tx: Setup) -> None:
    ship = tx.app.tasks["ship"]
    other = tx.tenant.client()  # declares nothing: runs the task by name
    with psycopg.connect(tx.role_url) as conn:
        pending = ship.run_no_wait(txenq.Order(order_id=20), connection=conn)
        by_name = other.run_no_wait("ship", {"order_id": 22}, connection=conn)
        # A run triggered meanwhile through the engine starts and ends: the engine and the
        # worker are busy, and still nothing of the uncommitted run exists.
        assert ship.run(txenq.Order(order_id=21))["shipped"] == 21
        assert _rows(tx.engine.db_url, [pending.run_id]) == {}
        with pytest.raises(NotFoundError):
            pending.result(timeout=1)
        conn.commit()
    assert pending.result(timeout=30)["shipped"] == 20
    assert by_name.result(timeout=30) == {"shipped": 22, "note": ""}
    other.close()


def test_idempotency_keys_apply_to_runs_enqueued_in_transactions(tx: Setup) -> None:
    ship, invoice = tx.app.tasks["ship"], tx.app.tasks["invoice"]
    key = f"order-{uuid.uuid4().hex}"
    # A TTL keeps the key live after its run ends (the default: until then; the first
    # run may well end before the second transaction is drained).
    keyed: dict[str, Any] = {"idempotency_key": key, "idempotency_ttl": "1h"}
    with psycopg.connect(tx.role_url) as conn:
        first = ship.run_no_wait(txenq.Order(order_id=30), connection=conn, **keyed)
    with psycopg.connect(tx.role_url) as conn:
        again = ship.run_no_wait(txenq.Order(order_id=31), connection=conn, **keyed)
        # A declared expression (invoice: input.order_id) applies too: twice in one call.
        n = 900_000 + uuid.uuid4().int % 100_000
        a, b = invoice.run_many([txenq.Order(order_id=n)] * 2, connection=conn)
    assert first.result(timeout=30)["shipped"] == 30
    # The second run never existed: its reference answers with the live run its key named.
    assert again.result(timeout=30)["shipped"] == 30
    assert a.result(timeout=30) == b.result(timeout=30) == {"invoiced": n}
    rows = _rows(tx.engine.db_url, [first.run_id, again.run_id, a.run_id, b.run_id])
    assert first.run_id in rows and again.run_id not in rows
    assert len({a.run_id, b.run_id} & set(rows)) == 1


def test_bad_input_and_wrong_connections_are_refused_before_writing(tx: Setup) -> None:
    ship = tx.app.tasks["ship"]
    flow = tx.app.workflows["fulfilment"]
    with psycopg.connect(tx.role_url) as conn:
        with pytest.raises(ValidationError):
            ship.run_no_wait({"order_id": -1}, connection=conn)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            flow.run_many([{"order_id": 1}, {"nope": 2}], connection=conn)
        with pytest.raises(ValueError, match="priority"):
            ship.run_no_wait(txenq.Order(order_id=1), connection=conn, priority=9)
        # Nothing ran on the connection: its transaction is still usable.
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(TypeError, match=r"psycopg\.Connection.*django"):
        ship.run_no_wait(txenq.Order(order_id=1), connection="postgresql://x")
    with pytest.raises(TypeError, match=r"psycopg\.Connection.*got builtins\.dict"):
        flow.run_no_wait(txenq.Order(order_id=1), connection={})

    async def mixed() -> None:
        aconn = await psycopg.AsyncConnection.connect(tx.role_url)
        try:
            with pytest.raises(TypeError, match="aio_run_no_wait"):
                ship.run_no_wait(txenq.Order(order_id=1), connection=aconn)
        finally:
            await aconn.close()
        with psycopg.connect(tx.role_url) as sconn:
            with pytest.raises(TypeError, match="blocking connection"):
                await ship.aio_run_no_wait(txenq.Order(order_id=1), connection=sconn)

    asyncio.run(mixed())


def test_a_database_without_the_schema_or_a_role_without_a_tenant_is_a_clear_error(
    tx: Setup, pg_url: str
) -> None:
    ship = tx.app.tasks["ship"]
    # The engine's database, as a role no tenant is mapped to (the server's superuser).
    with psycopg.connect(tx.engine.db_url) as conn:
        with pytest.raises(TransactionalEnqueueError, match="no tenant is mapped"):
            ship.run_no_wait(txenq.Order(order_id=1), connection=conn)
    # A database without Stoker's schema.
    empty = create_database(pg_url)
    try:
        with psycopg.connect(with_database(pg_url, empty)) as conn:
            with pytest.raises(TransactionalEnqueueError, match="no Stoker schema 'stoker'"):
                ship.run_no_wait(txenq.Order(order_id=1), connection=conn)
    finally:
        drop_database(pg_url, empty)


def test_workflows_tasks_not_declared_yet_and_refused_names(tx: Setup) -> None:
    flow = tx.app.workflows["fulfilment"]
    suffix = uuid.uuid4().hex[:6]

    @tx.app.task(name=f"declared_later_{suffix}", retries=2)
    async def later(input: txenq.Order, ctx: Any) -> None: ...

    # A workflow the engine was never told of is refused, with the reason.
    stray = tx.app.workflow(f"stray_{suffix}", input_validator=txenq.Order)

    @stray.task()
    async def step(input: txenq.Order, ctx: Any) -> None: ...

    with psycopg.connect(tx.role_url) as conn:
        runs = flow.run_many([txenq.Order(order_id=40), txenq.Order(order_id=41)], connection=conn)
        queued = later.run_no_wait(txenq.Order(order_id=42), connection=conn)
        refused = stray.run_no_wait(txenq.Order(order_id=43), connection=conn)
    assert [r.result(timeout=30)["pack"] for r in runs] == [{"packed": 40}, {"packed": 41}]
    with pytest.raises(TaskRunError, match="no workflow named"):
        refused.result(timeout=30)

    # A task no worker declared yet is registered from the definition the run carried
    # (no worker serves it here: it waits in the queue).
    def drained() -> Any:
        with psycopg.connect(tx.engine.db_url) as conn:
            return conn.execute(
                "SELECT t.status, d.config->>'retries' FROM stoker.task t JOIN stoker.task_def d"
                " ON d.tenant_id = t.tenant_id AND d.name = t.task_name"
                " WHERE t.external_id = %s",
                (uuid.UUID(queued.run_id),),
            ).fetchone()

    row = wait_until(drained, what="the run of a task declared by its first run")
    assert row == ("QUEUED", "2")


# -- the engine is down at commit time --------------------------------------------------


def test_runs_enqueued_while_the_engine_is_down_start_when_it_returns(
    engine_factory: Callable[..., EngineProcess], worker_factory: Any, tmp_path: Path
) -> None:
    engine = engine_factory()
    tenant = make_tenant(engine)
    worker_factory("tests.apps.txenq:app", engine=engine, tenant=tenant)
    role = create_role(engine.db_url, tenant.tenant_id)
    url = role_url(engine.db_url, role)
    app = txenq.declare(tenant.client())
    try:
        engine.stop()
        ship = app.tasks["ship"]
        refs = []
        for d in (PsycopgTx(url), SessionTx(url), DjangoTx(url)):
            with d.transaction() as conn:
                refs.append(ship.run_no_wait(txenq.Order(order_id=len(refs)), connection=conn))
            d.close()

        async def aio() -> None:
            for make in (_psycopg_async, _asyncpg, _async_session):
                s = Setup(engine, tenant, role, url, app)
                refs.append((await make(s, 100 + len(refs)))[1])

        asyncio.run(aio())
        assert len(_rows(engine.db_url, [r.run_id for r in refs])) == len(refs)  # in the inbox
        engine.start()
        outputs = [r.result(timeout=60)["shipped"] for r in refs]
        assert outputs == [0, 1, 2, 104, 105, 106]
    finally:
        app.close()
        drop_role(engine.db_url, role)


def test_the_application_role_can_enqueue_and_nothing_else(tx: Setup) -> None:
    """Least privilege: the mapped role calls enqueue_runs() and reaches no table, no
    admin function; the tenant of its runs is not something it can choose."""
    statements = [
        "SELECT count(*) FROM stoker.task",
        "SELECT count(*) FROM stoker.run_inbox",
        "SELECT count(*) FROM stoker.enqueue_role",
        "INSERT INTO stoker.run_inbox (tenant_id, external_id, kind, name, input)"
        " VALUES (1, gen_random_uuid(), 'task', 'ship', '{}')",
        "UPDATE stoker.enqueue_role SET tenant_id = 1",
        f"SELECT stoker.grant_enqueue_role('{tx.role}', 'other')",
    ]
    for statement in statements:
        with psycopg.connect(tx.role_url, autocommit=True) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement.encode())
    # A run made through the role belongs to the role's tenant, whatever it sends.
    run_id = str(uuid.uuid4())
    row = {"id": run_id, "kind": "task", "name": "ship", "input": {"order_id": 50},
           "tenant_id": 1, "tenant": 1}  # fmt: skip
    with psycopg.connect(tx.role_url) as conn:
        conn.execute("SELECT stoker.enqueue_runs(%s)", (json.dumps([row]),))
    ran = wait_until(lambda: _rows(tx.engine.db_url, [run_id]).get(run_id, -1) >= 0)
    assert ran and _rows(tx.engine.db_url, [run_id]) == {run_id: tx.tenant.tenant_id}
