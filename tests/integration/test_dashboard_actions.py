"""The dashboard's newer actions over httpx on a real, migrated Postgres: drain, rate-limit
reset, role changes, one's own password, and that every one of them needs its role and the
session's CSRF token."""

from __future__ import annotations

import json
import uuid

from stoker.db.store import workers as worker_store
from stoker.engine.auth import create_token
from stoker.engine.dashboard import users
from tests.integration.test_dashboard import csrf_of
from tests.integration.test_dashboard_pages import Site, sign_in, site  # noqa: F401


async def test_a_viewer_and_a_missing_token_are_refused_the_new_actions(site: Site) -> None:  # noqa: F811
    await sign_in(site, "viewer@acme.test")
    csrf = csrf_of((await site.client.get("/ui/account")).text)
    some = uuid.uuid4()
    for path in (
        f"/ui/runs/{some}/replay-from",
        f"/ui/runs/{some}/edit-input",
        f"/ui/workers/{some}/drain",
        "/ui/rate-limits/api/reset",
        "/ui/webhooks",
        "/ui/webhooks/orders/edit",
        "/ui/settings/users/role",
    ):
        r = await site.client.post(path, data={"csrf": csrf})
        assert r.status_code == 403, path
    for path in (f"/ui/runs/{some}/edit-input", "/ui/webhooks/new", "/ui/webhooks/x/edit"):
        assert (await site.client.get(path)).status_code == 403, path
    # The viewer's own password needs the token too (and nothing else of their role).
    r = await site.client.post(
        "/ui/account/password",
        data={"current_password": "", "new_password": "x" * 10, "confirm_password": "x" * 10},
    )
    assert r.status_code == 403
    r = await site.client.post(
        "/ui/account/password",
        data={
            "csrf": csrf,
            "current_password": "",
            "new_password": "a first password",
            "confirm_password": "a first password",
        },
    )
    assert r.status_code == 200 and "Your password was changed." in r.text
    assert await users.verify_password(site.db, "viewer@acme.test", "a first password")
    # Now that there is one, the current password is asked for.
    r = await site.client.post(
        "/ui/account/password",
        data={
            "csrf": csrf,
            "current_password": "wrong",
            "new_password": "another one!",
            "confirm_password": "another one!",
        },
    )
    assert r.status_code == 422 and "current password is not right" in r.text
    # An operator is refused role changes.
    await sign_in(site, "op@acme.test")
    csrf = csrf_of((await site.client.get("/ui/account")).text)
    r = await site.client.post(
        "/ui/settings/users/role",
        data={"csrf": csrf, "email": "viewer@acme.test", "role": "admin"},
    )
    assert r.status_code == 403
    assert (
        await site.rows.one("SELECT role FROM dashboard_user WHERE email = 'viewer@acme.test'")
        == "viewer"
    )


async def test_an_admin_changes_roles_but_not_their_own(site: Site) -> None:  # noqa: F811
    await sign_in(site, "admin@acme.test")
    csrf = csrf_of((await site.client.get("/ui/settings")).text)
    r = await site.client.post(
        "/ui/settings/users/role",
        data={"csrf": csrf, "email": "viewer@acme.test", "role": "operator"},
    )
    assert r.status_code == 200, r.text
    role = "SELECT role FROM dashboard_user WHERE email = %s"
    assert await site.rows.one(role, "viewer@acme.test") == "operator"
    r = await site.client.post(
        "/ui/settings/users/role",
        data={"csrf": csrf, "email": "admin@acme.test", "role": "viewer"},
    )
    assert r.status_code == 422 and "your own role" in r.text
    assert await site.rows.one(role, "admin@acme.test") == "admin"
    r = await site.client.post(
        "/ui/settings/users/role",
        data={"csrf": csrf, "email": "viewer@acme.test", "role": "owner"},
    )
    assert r.status_code == 422 and "role must be one of" in r.text
    r = await site.client.post(
        "/ui/settings/users/role",
        data={"csrf": csrf, "email": "nobody@acme.test", "role": "viewer"},
    )
    assert r.status_code == 404


async def test_a_drained_worker_is_paused_and_told_to_stop_in_its_heartbeat(
    site: Site,  # noqa: F811
) -> None:
    wid, ext = await site.rows.worker(site.tenant, ["add"], name="box")
    await sign_in(site, "op@acme.test")
    csrf = csrf_of((await site.client.get(f"/ui/workers/{ext}")).text)
    before = await worker_store.heartbeat_workers(
        site.db, worker_store.HeartbeatWorkers([ext], site.tenant)
    )
    assert [(r["paused"], r["drain"]) for r in before] == [(False, False)]
    r = await site.client.post(f"/ui/workers/{ext}/drain", data={"csrf": csrf})
    assert r.status_code == 303
    page = (await site.client.get(f"/ui/workers/{ext}")).text
    assert 'data-testid="draining"' in page and 'data-testid="drain"' not in page
    after = await worker_store.heartbeat_workers(
        site.db, worker_store.HeartbeatWorkers([ext], site.tenant)
    )
    assert [(r["paused"], r["drain"]) for r in after] == [(True, True)]
    # Another tenant's worker, or one that is not live, cannot be drained.
    await site.rows.conn.execute("UPDATE worker SET status = 'STOPPED' WHERE id = %s", (wid,))
    r = await site.client.post(f"/ui/workers/{ext}/drain", data={"csrf": csrf})
    assert r.status_code == 404


async def test_a_rate_limit_reset_empties_its_window_and_readies_what_it_deferred(
    site: Site,  # noqa: F811
) -> None:
    await site.rows.conn.execute(
        "INSERT INTO rate_limit (tenant_id, key, limit_value, window_ms, recent, clock)"
        " VALUES (%s, 'api', 1, 3600000, %s, now())",
        (site.tenant, json.dumps([[1, 1]])),
    )
    deferred = await site.rows.queued(
        site.tenant, "call", later_s=3600, rate_limits=[{"key": "api", "units": 1}]
    )
    await sign_in(site, "op@acme.test")
    csrf = csrf_of((await site.client.get("/ui/rate-limits")).text)
    r = await site.client.post("/ui/rate-limits/api/reset", data={"csrf": csrf})
    assert r.status_code == 303
    assert await site.rows.one("SELECT recent FROM rate_limit WHERE key = 'api'") == []
    assert await site.rows.one(
        "SELECT available_at <= now() FROM queue_item WHERE task_id = %s", deferred
    )
    r = await site.client.post("/ui/rate-limits/nope/reset", data={"csrf": csrf})
    assert r.status_code == 404


async def test_oidc_sign_in_is_absent_unless_configured(site: Site) -> None:  # noqa: F811
    page = (await site.client.get("/ui/login")).text
    assert "oidc-sign-in" not in page
    assert (await site.client.get("/ui/login/oidc")).status_code == 404
    assert (await site.client.get("/ui/login/oidc/callback?code=x&state=y")).status_code == 404


async def test_drain_and_reset_over_rest(site: Site) -> None:  # noqa: F811
    token = await create_token(site.db, site.tenant)
    foreign = await create_token(site.db, site.other)
    _, ext = await site.rows.worker(site.tenant, ["add"], name="box")
    await site.rows.conn.execute(
        "INSERT INTO rate_limit (tenant_id, key, limit_value, window_ms, recent, clock)"
        " VALUES (%s, 'api', 1, 3600000, %s, now())",
        (site.tenant, json.dumps([[1, 1]])),
    )
    auth = {"authorization": f"Bearer {token}"}
    other = {"authorization": f"Bearer {foreign}"}
    assert (
        await site.client.post(f"/api/v1/workers/{ext}/drain", headers=other)
    ).status_code == 404
    r = await site.client.post(f"/api/v1/workers/{ext}/drain", headers=auth)
    assert r.status_code == 200 and r.json()["paused"] is True, r.text
    assert await site.rows.one("SELECT drain_requested_at IS NOT NULL FROM worker")
    assert (
        await site.client.post("/api/v1/rate-limits/api/reset", headers=other)
    ).status_code == 404
    r = await site.client.post("/api/v1/rate-limits/api/reset", headers=auth)
    assert r.status_code == 200 and r.json()["used"] == 0, r.text
    assert await site.rows.one("SELECT recent FROM rate_limit WHERE key = 'api'") == []
