"""The dashboard's pages and fragments over httpx against a real, migrated Postgres:
sign-in and sessions, roles, CSRF, tenant scoping, and bad filters shown on the page."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from argon2 import PasswordHasher

from stoker.db import Executor, connect
from stoker.db.store import dashboard as dash_store
from stoker.engine.api.app import create_app
from stoker.engine.auth import TokenAuth, create_tenant
from stoker.engine.dashboard import users

PASSWORD = "correct horse battery"
# Users are created with a cheap argon2 hash (verification reads the cost from the hash):
# the default cost takes about a second per hash on a loaded test machine.
CHEAP_HASH = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)


@dataclass
class Site:
    db: Executor
    db_url: str
    client: httpx.AsyncClient
    tenant_id: int
    other_tenant_id: int

    async def sql(self, statement: str, *args: object) -> None:
        """Writes rows straight into the schema, the way the engine would have left them."""
        conn = await connect(self.db_url, "stoker")
        try:
            await conn.execute(statement, args)  # type: ignore[arg-type]
            await conn.commit()
        finally:
            await conn.close()

    async def runs(
        self,
        n: int,
        *,
        name: str = "add",
        status: str = "COMPLETED",
        metadata: str = "{}",
        tenant_id: int | None = None,
        ago_s: float = 60.0,
    ) -> None:
        """n single-task runs created ``ago_s`` seconds ago, a millisecond apart."""
        await self.sql(
            "INSERT INTO task (tenant_id, external_id, task_name, status, input,"
            " additional_metadata, created_at, started_at, finished_at)"
            " SELECT %s, gen_random_uuid(), %s, %s, '{}', %s::jsonb,"
            "  now() - make_interval(secs => %s) + i * interval '1 ms',"
            "  now() - make_interval(secs => %s) + i * interval '1 ms',"
            "  CASE WHEN %s IN ('COMPLETED', 'FAILED', 'CANCELLED')"
            "   THEN now() - make_interval(secs => %s) + i * interval '1 ms' + interval '2 s' END"
            " FROM generate_series(1, %s) AS i",
            tenant_id or self.tenant_id,
            name,
            status,
            metadata,
            ago_s,
            ago_s,
            status,
            ago_s,
            n,
        )


@pytest.fixture
async def site(db: Executor, db_url: str) -> AsyncIterator[Site]:
    tenant_id = await create_tenant(db, "acme")
    other = await create_tenant(db, "globex")
    for email, role, tenant in (
        ("admin@acme.test", "admin", tenant_id),
        ("op@acme.test", "operator", tenant_id),
        ("viewer@acme.test", "viewer", tenant_id),
        ("admin@globex.test", "admin", other),
    ):
        await dash_store.dash_create_user(
            db, dash_store.DashCreateUser(tenant, email, role, CHEAP_HASH)
        )
    app = create_app(db, TokenAuth(db), version="test")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash.test") as client:
        yield Site(db, db_url, client, tenant_id, other)


async def sign_in(client: httpx.AsyncClient, email: str, next_url: str = "/ui/") -> httpx.Response:
    return await client.post(
        "/ui/login",
        data={"email": email, "password": PASSWORD, "next": next_url},
    )


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


async def test_pages_need_a_session_and_sign_in_sends_back(site: Site) -> None:
    r = await site.client.get("/ui/?window=6h")
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login?next=%2Fui%2F%3Fwindow%3D6h"
    assert (await site.client.get("/")).headers["location"] == "/ui/"
    r = await sign_in(site.client, "admin@acme.test", "/ui/?window=6h")
    assert r.status_code == 303 and r.headers["location"] == "/ui/?window=6h"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    page = await site.client.get("/ui/")
    assert page.status_code == 200 and "admin@acme.test" in page.text and "acme" in page.text


async def test_htmx_requests_without_a_session_get_a_full_page_redirect(site: Site) -> None:
    r = await site.client.get(
        "/ui/",
        headers={"hx-request": "true", "hx-current-url": "http://dash.test/ui/runs?task=x"},
    )
    assert r.status_code == 200
    assert r.headers["hx-redirect"] == "/ui/login?next=%2Fui%2Fruns%3Ftask%3Dx"


async def test_a_wrong_password_or_email_is_refused_alike(site: Site) -> None:
    for email in ("admin@acme.test", "nobody@acme.test"):
        r = await site.client.post(
            "/ui/login", data={"email": email, "password": "wrong password", "next": "/ui/"}
        )
        assert r.status_code == 401
        assert "Wrong email or password." in r.text
        assert "set-cookie" not in r.headers


async def test_sign_in_never_redirects_off_site(site: Site) -> None:
    for evil in ("https://evil.test/", "//evil.test/x", "/\\evil.test"):
        r = await sign_in(site.client, "admin@acme.test", evil)
        assert r.headers["location"] == "/ui/"


async def test_one_time_links_work_once(site: Site) -> None:
    token = await users.local_sign_in_token(site.db, site.tenant_id)
    r = await site.client.get(f"/ui/login/link?token={token}")
    assert r.status_code == 303 and "stoker_session=" in r.headers["set-cookie"]
    assert users.LOCAL_USER in (await site.client.get("/ui/")).text
    site.client.cookies.clear()
    again = await site.client.get(f"/ui/login/link?token={token}")
    assert again.status_code == 401 and "used already or has expired" in again.text


async def test_sign_out_ends_the_session_and_needs_the_csrf_token(site: Site) -> None:
    await sign_in(site.client, "op@acme.test")
    page = await site.client.get("/ui/")
    forged = await site.client.post("/ui/logout", data={"csrf": "forged"})
    assert forged.status_code == 303
    assert (await site.client.get("/ui/")).status_code == 200  # still signed in
    r = await site.client.post("/ui/logout", data={"csrf": csrf_of(page.text)})
    assert r.headers["location"] == "/ui/login"
    assert (await site.client.get("/ui/")).status_code == 303


async def test_a_malformed_window_is_a_message_not_an_error(site: Site) -> None:
    await sign_in(site.client, "admin@acme.test")
    r = await site.client.get("/ui/?window=banana")
    assert r.status_code == 200
    assert "window &#39;banana&#39; is not one of" in r.text


async def test_navigation_lists_the_registered_pages(site: Site) -> None:
    await sign_in(site.client, "viewer@acme.test")
    page = (await site.client.get("/ui/")).text
    assert 'href="/ui/" aria-current="page"' in page


async def test_user_management_refuses_bad_input(db: Executor) -> None:
    tenant_id = await create_tenant(db, "t")
    with pytest.raises(Exception, match="not an email address"):
        await users.create_user(db, tenant_id, "nope", "viewer", PASSWORD)
    with pytest.raises(Exception, match="role must be one of"):
        await users.create_user(db, tenant_id, "a@b.c", "root", PASSWORD)
    with pytest.raises(Exception, match="at least 8 characters"):
        await users.create_user(db, tenant_id, "a@b.c", "viewer", "short")
    await users.create_user(db, tenant_id, "A@B.c", "viewer", PASSWORD)
    with pytest.raises(Exception, match="exists already"):
        await users.create_user(db, tenant_id, "a@b.C", "admin", PASSWORD)
    assert [u["email"] for u in await users.list_users(db, tenant_id)] == ["a@b.c"]
    await users.set_password(db, "a@b.c", "another password")
    assert await users.verify_password(db, "a@b.c", PASSWORD) is None
    assert await users.verify_password(db, "a@b.c", "another password") is not None
    await users.delete_user(db, "a@b.c")
    with pytest.raises(Exception, match="no user with email"):
        await users.delete_user(db, "a@b.c")


def run_rows(html: str) -> list[str]:
    return re.findall(r'<tr data-run="([0-9a-f-]+)">', html)


async def test_runs_filters_by_status_name_and_metadata(site: Site) -> None:
    await site.runs(3, name="charge", status="FAILED", metadata='{"customer": "acme"}')
    await site.runs(2, name="charge", status="COMPLETED", metadata='{"customer": "globex"}')
    await site.runs(
        4, name="mail", status="COMPLETED", metadata='{"customer": "acme", "region": "eu"}'
    )
    await site.runs(7, name="charge", status="FAILED", tenant_id=site.other_tenant_id)
    await sign_in(site.client, "viewer@acme.test")

    async def shown(query: str) -> int:
        r = await site.client.get(f"/ui/runs?{query}")
        assert r.status_code == 200, r.text
        assert "filter-error" not in r.text, query
        return len(run_rows(r.text))

    assert await shown("") == 9  # the other tenant's 7 runs are never shown
    assert await shown("status=FAILED") == 3
    assert await shown("status=FAILED&status=COMPLETED&name=charge") == 5
    assert await shown("meta=customer%3Dacme") == 7
    assert await shown("meta=customer%3Dacme&meta=region%3Deu") == 4
    assert await shown("meta=customer%3Dacme%7Cglobex") == 9
    assert await shown("meta=customer%3Dglobex&meta=region%3Deu&meta_mode=any") == 6
    assert await shown("kind=workflow") == 0
    both = (await site.client.get("/ui/runs/count?meta=customer%3Dacme&meta=region%3Deu")).text
    assert '<strong data-testid="run-count">4</strong>' in both  # counted through the GIN path
    either = (await site.client.get("/ui/runs/count?meta=customer%3Dacme%7Cglobex")).text
    assert '<strong data-testid="run-count">9</strong>' in either
    count = (await site.client.get("/ui/runs/count?status=FAILED")).text
    assert '<strong data-testid="run-count">3</strong>' in count
    page = (await site.client.get("/ui/runs?status=FAILED")).text
    assert 'hx-get="/ui/runs/count?status=FAILED' in page
    # A viewer gets no action buttons.
    assert "Cancel selected" not in page and 'name="run"' not in page


async def test_runs_are_paged_by_keyset_without_gaps_or_repeats(site: Site) -> None:
    await site.runs(120)
    await sign_in(site.client, "viewer@acme.test")
    seen: list[str] = []
    url = "/ui/runs"
    while url:
        page = (await site.client.get(url)).text
        seen += run_rows(page)
        found = re.search(r'<a href="([^"]+)" data-testid="older">', page)
        url = found.group(1).replace("&amp;", "&") if found else ""
    assert len(seen) == 120 and len(set(seen)) == 120


async def test_counts_above_ten_thousand_are_shown_as_such(site: Site) -> None:
    await site.runs(10_050, ago_s=30)
    await sign_in(site.client, "viewer@acme.test")
    count = (await site.client.get("/ui/runs/count")).text
    assert '<strong data-testid="run-count">10,000+</strong>' in count
    assert len(run_rows((await site.client.get("/ui/runs")).text)) == 50


async def test_malformed_filters_are_named_on_the_page(site: Site) -> None:
    await sign_in(site.client, "viewer@acme.test")
    r = await site.client.get(
        "/ui/runs?status=DONE&window=forever&meta=nokey&since=yesterday&kind=job&cursor=xyz"
    )
    assert r.status_code == 200
    for words in (
        "status &#39;DONE&#39; is not one of",
        "since &#39;yesterday&#39; is not a time",
        "metadata filter &#39;nokey&#39; is not key=value",
        "kind &#39;job&#39; is not task, workflow or all",
        "the page cursor is not one this page made",
    ):
        assert words in r.text


async def test_the_histogram_counts_by_status_and_zooms(site: Site) -> None:
    await site.runs(5, status="FAILED", ago_s=600)
    await site.runs(3, status="COMPLETED", ago_s=120)
    await sign_in(site.client, "viewer@acme.test")
    r = await site.client.get("/ui/runs/histogram?window=1h")
    assert r.status_code == 200 and "<svg" in r.text
    assert "5 runs: 5 failed" in r.text and "3 runs: 3 completed" in r.text
    zoom = re.search(r'<a class="bar" href="([^"]+)" aria-label="[^"]*: 5 runs"', r.text)
    assert zoom, r.text
    page = (await site.client.get(zoom.group(1).replace("&amp;", "&"))).text
    assert len(run_rows(page)) == 5


async def test_viewers_cannot_act_and_actions_need_the_csrf_token(site: Site) -> None:
    await sign_in(site.client, "viewer@acme.test")
    page = (await site.client.get("/ui/runs")).text
    token = csrf_of(page)
    r = await site.client.post(
        "/ui/runs/bulk/confirm",
        data={"action": "cancel", "scope": "all", "query": "", "csrf": token},
    )
    assert r.status_code == 403 and "needs the operator role" in r.text
    site.client.cookies.clear()
    await sign_in(site.client, "op@acme.test")
    r = await site.client.post(
        "/ui/runs/bulk/confirm", data={"action": "cancel", "scope": "all", "query": ""}
    )
    assert r.status_code == 403 and "security token" in r.text


async def test_bulk_confirmation_counts_what_the_action_applies_to(site: Site) -> None:
    await site.runs(4, status="FAILED", metadata='{"batch": "7"}')
    await site.runs(2, status="COMPLETED", metadata='{"batch": "7"}')
    await site.runs(3, status="FAILED", metadata='{"batch": "8"}')
    await sign_in(site.client, "op@acme.test")
    token = csrf_of((await site.client.get("/ui/runs")).text)
    r = await site.client.post(
        "/ui/runs/bulk/confirm",
        data={"action": "replay", "scope": "all", "query": "meta=batch%3D7"},
        headers={"x-csrf-token": token},
    )
    assert r.status_code == 200
    assert "Replay 4 runs?" in r.text and "metadata batch = 7" in r.text
    r = await site.client.post(
        "/ui/runs/bulk/confirm",
        data={"action": "cancel", "scope": "all", "query": "meta=batch%3D7"},
        headers={"x-csrf-token": token},
    )
    assert "Cancel 0 runs?" in r.text and "No run matches" in r.text


async def test_a_run_page_its_json_and_unknown_runs(site: Site) -> None:
    await site.runs(1, name="charge", status="FAILED", metadata='{"customer": "acme"}')
    await site.runs(1, name="charge", tenant_id=site.other_tenant_id)
    await sign_in(site.client, "viewer@acme.test")
    run_id = run_rows((await site.client.get("/ui/runs")).text)[0]
    page = await site.client.get(f"/ui/runs/{run_id}")
    assert page.status_code == 200
    assert 'data-testid="run-status">FAILED' in page.text
    assert 'data-nodes="1"' in page.text and "customer=acme" in page.text
    assert "replay-run" not in page.text  # a viewer
    doc = await site.client.get(f"/ui/runs/{run_id}/json")
    assert doc.headers["content-disposition"] == f'attachment; filename="run-{run_id}.json"'
    assert doc.json()["task_name"] == "charge"
    missing = await site.client.get("/ui/runs/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404 and "no run with id" in missing.text
    # Another tenant's run is no run at all.
    site.client.cookies.clear()
    await sign_in(site.client, "admin@globex.test")
    assert (await site.client.get(f"/ui/runs/{run_id}")).status_code == 404
    assert (await site.client.get(f"/ui/runs/{run_id}/json")).status_code == 404


async def test_the_live_stream_sends_changes_of_the_tenant(site: Site) -> None:
    from stoker.engine.dashboard.live import LiveHub
    from stoker.engine.signals import Signals

    signals = Signals("test")
    hub = LiveHub(signals)
    events = hub.events(site.tenant_id, max_s=5.0)
    assert await anext(events) == "retry: 2000\n\n"
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    signals.remote_queued(site.other_tenant_id)  # another tenant's change: only the tick
    assert await asyncio.wait_for(pending, 5.0) == "event: tick\ndata: tick\n\n"
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    signals.remote_queued(site.tenant_id)
    assert await asyncio.wait_for(pending, 1.5) == "event: runs\ndata: runs\n\n"
    assert hub.open_streams == 1
    await events.aclose()
    assert hub.open_streams == 0


async def test_an_expired_session_signs_in_again_and_comes_back(site: Site) -> None:
    await sign_in(site.client, "viewer@acme.test")
    assert (await site.client.get("/ui/runs?status=FAILED")).status_code == 200
    await site.sql("UPDATE dashboard_session SET expires_at = now() - interval '1 second'")
    r = await site.client.get("/ui/runs?status=FAILED")
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/login?next=%2Fui%2Fruns%3Fstatus%3DFAILED"
    r = await sign_in(site.client, "viewer@acme.test", "/ui/runs?status=FAILED")
    assert r.headers["location"] == "/ui/runs?status=FAILED"
    assert (await site.client.get("/ui/runs?status=FAILED")).status_code == 200
