"""Browser tests of the dashboard: Playwright driving the system's chromium, headless.

Playwright's own browser downloads are never used: ``CHROMIUM`` (``/usr/bin/chromium``,
installed by ``.ci/run``) is launched by path. Each module gets a
tenant of the session engine with its users (:class:`DashSite`), a worker and a browser
(one per module: see ``browser``); each test a fresh,
signed-in page (``page``, an operator) — ``page_as("viewer")`` signs in someone else.

``shot(page, name)`` saves a screenshot in the session's screenshot folder; with
``STOKER_README_SCREENSHOTS=1`` the README's screenshots are also written to
``docs/images/``.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from argon2 import PasswordHasher
from playwright.sync_api import Browser, Page, sync_playwright

from stoker import Stoker
from stoker.db import Executor, connect
from stoker.db.store import dashboard as dash_store
from stoker.engine.dashboard import users
from tests.apps import dashboard as dashboard_app
from tests.conftest import make_tenant
from tests.harness import SCHEMA, EngineProcess, Tenant, WorkerProcess

T = TypeVar("T")


def off_loop(fn: Callable[[], T]) -> T:
    """Runs ``fn`` in a thread of its own: Playwright's sync API keeps an event loop running
    in the test's thread, where ``asyncio.run`` (database setup) cannot start another."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


CHROMIUM = os.environ.get("STOKER_CHROMIUM", "/usr/bin/chromium")
README_IMAGES = Path(__file__).parents[2] / "docs" / "images"
PASSWORD = "correct horse battery"
# A cheap argon2 hash (verification reads the cost from the hash): the default cost takes
# about a second per hash on a loaded test machine.
CHEAP_HASH = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)


@dataclass
class DashSite:
    """A tenant of the test engine with one dashboard user per role."""

    engine: EngineProcess
    tenant: Tenant
    emails: dict[str, str]

    @property
    def base(self) -> str:
        return self.engine.http_url

    def sign_in_link(self, role: str) -> str:
        """A one-time link that signs the user of ``role`` in."""

        async def make() -> str:
            conn = await connect(self.engine.db_url, SCHEMA)
            try:
                db = Executor(conn)
                found = await users.verify_password(db, self.emails[role], PASSWORD)
                assert found is not None
                return await users.create_login_link(db, found)
            finally:
                await conn.close()

        return f"{self.base}/ui/login/link?token={off_loop(lambda: asyncio.run(make()))}"


@pytest.fixture(scope="module")
def browser(engine: EngineProcess) -> Iterator[Browser]:
    # Depends on the engine so that the engine (and its database) is set up first. One
    # browser per module, not per session: Playwright's sync API keeps an event loop
    # running in the main thread while it is open, and the async tests of other tiers
    # that run after this module need that thread's loop free.
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM}: apt-get install chromium (or STOKER_CHROMIUM)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def site(engine: EngineProcess) -> DashSite:
    tenant = off_loop(lambda: make_tenant(engine))
    tag = uuid.uuid4().hex[:8]
    emails = {role: f"{role}-{tag}@example.test" for role in ("admin", "operator", "viewer")}

    async def create() -> None:
        conn = await connect(engine.db_url, SCHEMA)
        try:
            db = Executor(conn)
            for role, email in emails.items():
                await dash_store.dash_create_user(
                    db, dash_store.DashCreateUser(tenant.tenant_id, email, role, CHEAP_HASH)
                )
        finally:
            await conn.close()

    off_loop(lambda: asyncio.run(create()))
    return DashSite(engine, tenant, emails)


@pytest.fixture
def page_as(browser: Browser, site: DashSite) -> Iterator[Callable[[str], Page]]:
    """Opens a page signed in as the user of a role (each in its own browser context)."""
    contexts = []

    def open_page(role: str) -> Page:
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        page.goto(site.sign_in_link(role))
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def page(page_as: Callable[[str], Page]) -> Page:
    return page_as("operator")


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def shot(shots: Path) -> Callable[..., Path]:
    def save(page: Page, name: str, *, readme: bool = False) -> Path:
        path = shots / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if readme and os.environ.get("STOKER_README_SCREENSHOTS") == "1":
            README_IMAGES.mkdir(parents=True, exist_ok=True)
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(README_IMAGES / f"dashboard-{name}.png"), full_page=False)
        assert path.stat().st_size > 0
        return path

    return save


@pytest.fixture(scope="module")
def worker(site: DashSite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """A worker process serving ``tests.apps.dashboard`` for the module's tenant."""
    proc = WorkerProcess(
        "tests.apps.dashboard:app",
        site.tenant,
        site.engine.db_url,
        tmp_path_factory.mktemp("worker"),
        f"dash-{uuid.uuid4().hex[:6]}",
        slots=40,
    )
    off_loop(proc.start)
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def app(site: DashSite) -> Iterator[Stoker]:
    """A client of the module's tenant with the dashboard test app declared."""
    client = off_loop(lambda: dashboard_app.declare(site.tenant.client()))
    yield client
    off_loop(client.close)
