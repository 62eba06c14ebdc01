"""The dashboard's pages and fragments over httpx against a real, migrated Postgres:
sign-in and sessions, roles, CSRF, tenant scoping, and bad filters shown on the page."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from stoker.db import Executor
from stoker.engine.api.app import create_app
from stoker.engine.auth import TokenAuth, create_tenant
from stoker.engine.dashboard import users

PASSWORD = "correct horse battery"


@dataclass
class Site:
    db: Executor
    client: httpx.AsyncClient
    tenant_id: int
    other_tenant_id: int


@pytest.fixture
async def site(db: Executor) -> AsyncIterator[Site]:
    tenant_id = await create_tenant(db, "acme")
    other = await create_tenant(db, "globex")
    for email, role, tenant in (
        ("admin@acme.test", "admin", tenant_id),
        ("op@acme.test", "operator", tenant_id),
        ("viewer@acme.test", "viewer", tenant_id),
        ("admin@globex.test", "admin", other),
    ):
        await users.create_user(db, tenant, email, role, PASSWORD)
    app = create_app(db, TokenAuth(db), version="test")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash.test") as client:
        yield Site(db, client, tenant_id, other)


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
