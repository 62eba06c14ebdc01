"""Shared fixtures: a real Postgres, migrated databases, engine and worker processes.

Tests sit in tiers by folder (tests/README.md): ``unit/``, ``integration/``, ``e2e/``,
``docs/`` and ``browser/``. Each test is marked with its tier here, from its folder, so
``pytest -m unit`` runs the fast tier alone; the docs tier runs processes, so it is marked
``e2e`` as well.

Postgres is ``DATABASE_URL`` when set, otherwise an embedded server started once per
session. The schema is migrated once into a template database; every test that needs a
database gets a fresh clone of it (``CREATE DATABASE ... TEMPLATE``), which takes tens of
milliseconds. End-to-end tests share one engine process per session and isolate by tenant.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

# This process starts engines, workers and Postgres (fork, then exec) while gRPC calls are
# in flight; gRPC's fork handlers have been seen to crash such a child before its exec.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from stoker.config import EngineSettings
from stoker.db import Executor, connect, open_pool
from stoker.db.store import retention as retention_store
from stoker.engine.auth import create_tenant, create_token
from tests.harness import (
    SCHEMA,
    EngineProcess,
    Tenant,
    WorkerProcess,
    create_database,
    drop_database,
    embedded_postgres,
    kill_children,
    migrate,
    with_database,
)

TESTS = Path(__file__).parent
TIERS = {
    "unit": ("unit",),
    "integration": ("integration",),
    "e2e": ("e2e",),
    "browser": ("browser",),
    "docs": ("docs", "e2e"),
}


def pytest_configure(config: pytest.Config) -> None:
    """A SIGTERM to the session (``timeout``, a CI runner giving up) interrupts it like
    Ctrl-C, so fixtures stop their engines, workers and embedded Postgres; whatever a test
    started and left running is killed at exit."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)
    atexit.register(kill_children)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test with the tier(s) of the folder it sits in."""
    for item in items:
        if not item.path.is_relative_to(TESTS):
            continue
        for marker in TIERS.get(item.path.relative_to(TESTS).parts[0], ()):
            item.add_marker(marker)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A Postgres server: DATABASE_URL, or an embedded one for this session."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    with embedded_postgres() as url:
        yield url


@pytest.fixture(scope="session")
def template_db(pg_url: str) -> Iterator[str]:
    """The name of a database migrated once, to clone per test."""
    name = create_database(pg_url)
    migrate(with_database(pg_url, name))
    try:
        yield name
    finally:
        drop_database(pg_url, name)


@pytest.fixture(scope="session")
def engine_template(pg_url: str, template_db: str) -> Iterator[str]:
    """The migrated template with the day partitions an engine creates at start already
    made (yesterday to the default days ahead): an engine on a clone of it starts without
    that DDL. Statement tests keep the bare template, whose partition upkeep they test."""
    name = create_database(pg_url, template_db)

    async def partitions() -> None:
        conn = await connect(with_database(pg_url, name), SCHEMA)
        try:
            await conn.set_autocommit(True)
            ahead = EngineSettings.model_fields["partitions_ahead_days"].default
            today = datetime.now(UTC).date()
            await retention_store.ensure_partitions(
                Executor(conn),
                retention_store.EnsurePartitions(today - timedelta(days=1), ahead + 2),
            )
        finally:
            await conn.close()

    asyncio.run(partitions())
    try:
        yield name
    finally:
        drop_database(pg_url, name)


@pytest.fixture
def db_url(pg_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = create_database(pg_url, template_db)
    try:
        yield with_database(pg_url, name)
    finally:
        drop_database(pg_url, name)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Executor]:
    """An Executor on a pool for the test's fresh database."""
    pool = await open_pool(db_url, SCHEMA, min_size=1, max_size=4)
    try:
        yield Executor(pool)
    finally:
        await pool.close()


# -- processes ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def engine(
    pg_url: str, engine_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    """One engine process for the session, on its own database; tests isolate by tenant."""
    name = create_database(pg_url, engine_template)
    proc = EngineProcess(with_database(pg_url, name), tmp_path_factory.mktemp("engine")).start()
    try:
        yield proc
    finally:
        proc.stop()
        drop_database(pg_url, name)


def make_tenant(engine: EngineProcess) -> Tenant:
    """A new tenant with an API token, in the engine's database."""

    async def create() -> Tenant:
        conn = await connect(engine.db_url, SCHEMA)
        try:
            db = Executor(conn)
            tenant_id = await create_tenant(db, f"t-{uuid.uuid4().hex[:10]}")
            return Tenant(tenant_id, await create_token(db, tenant_id), engine.grpc_address)
        finally:
            await conn.close()

    return asyncio.run(create())


@pytest.fixture
def tenant(engine: EngineProcess) -> Tenant:
    return make_tenant(engine)


@pytest.fixture
def tenant_factory() -> Callable[[EngineProcess], Tenant]:
    return make_tenant


@pytest.fixture
def engine_factory(
    pg_url: str, engine_template: str, tmp_path: Path
) -> Iterator[Callable[..., EngineProcess]]:
    """Starts extra engines: on a fresh database, or on ``db_url`` (another replica)."""
    made: list[EngineProcess] = []
    databases: list[str] = []
    own: set[str] = set()  # the URLs of the databases made here (dropped at the end)

    def start(db_url: str | None = None, env: dict[str, str] | None = None) -> EngineProcess:
        if db_url is None:
            name = create_database(pg_url, engine_template)
            databases.append(name)
            db_url = with_database(pg_url, name)
            own.add(db_url)
        proc = EngineProcess(db_url, tmp_path, env=env or {})
        made.append(proc)
        return proc.start()

    yield start
    for proc in made:
        # An engine on a database made here is killed: nothing is checked after the test,
        # and a clean stop waits for the gRPC grace period and every service. A replica on
        # a database that outlives the test (the session engine's) stops cleanly, handing
        # its leases back at once.
        if proc.db_url in own:
            proc.kill()
        else:
            proc.stop()
    for name in databases:
        drop_database(pg_url, name)


@pytest.fixture
def worker_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts worker processes (for the test's tenant unless told otherwise)."""
    made: list[WorkerProcess] = []

    def start(
        target: str,
        slots: int = 8,
        name: str | None = None,
        engine: EngineProcess | None = None,
        tenant: Tenant | None = None,
        labels: dict[str, str | int] | None = None,
        durable_slots: int = 0,
    ) -> WorkerProcess:
        eng = engine or request.getfixturevalue("engine")
        ten = tenant or request.getfixturevalue("tenant")
        proc = WorkerProcess(
            target,
            ten,
            eng.db_url,
            tmp_path,
            name or f"w{len(made)}",
            slots=slots,
            durable_slots=durable_slots,
            labels=labels or {},
        )
        made.append(proc)
        return proc.start()

    yield start
    for proc in made:
        proc.kill()
