"""The dashboard's Workers, Queues, Tasks and workflows and Crons pages over httpx on a
real, migrated Postgres: what each shows, tenant scoping, bad filters and forms shown on
the page, and roles (a viewer sees no actions and is refused them)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from stoker.db import Executor, connect
from stoker.engine.api.app import create_app
from stoker.engine.auth import TokenAuth, create_tenant
from stoker.engine.dashboard import users
from stoker.engine.dashboard.pages import tasks as tasks_page
from tests.integration.test_dashboard import csrf_of
from tests.integration.test_dashboard_pages_store import Rows

SCHEMA = "stoker"
ORDER_SCHEMA = {
    "type": "object",
    "properties": {
        "customer": {"type": "string", "description": "Who ordered"},
        "quantity": {"type": "integer"},
        "lines": {"type": "array", "items": {"type": "object"}, "default": []},
    },
    "required": ["customer", "quantity"],
}


@dataclass
class Site:
    db: Executor
    client: httpx.AsyncClient
    rows: Rows
    tenant: int
    other: int
    user_ids: dict[str, int]


@pytest.fixture
async def site(db: Executor, db_url: str) -> AsyncIterator[Site]:
    tenant = await create_tenant(db, "acme")
    other = await create_tenant(db, "globex")
    # Users without a password sign in through one-time links: no argon2 hashing, which
    # costs most of a test's time on a busy machine.
    user_ids = {
        "op@acme.test": await users.create_user(db, tenant, "op@acme.test", "operator", None),
        "viewer@acme.test": await users.create_user(db, tenant, "viewer@acme.test", "viewer", None),
        "admin@acme.test": await users.create_user(db, tenant, "admin@acme.test", "admin", None),
    }
    app = create_app(db, TokenAuth(db), version="test")
    transport = httpx.ASGITransport(app=app)
    async with (
        await connect(db_url, SCHEMA) as conn,
        httpx.AsyncClient(transport=transport, base_url="http://dash.test") as client,
    ):
        await conn.set_autocommit(True)
        yield Site(db, client, Rows(conn), tenant, other, user_ids)


async def sign_in(site: Site, email: str) -> None:
    """Signs ``email`` in (a one-time link), replacing any session the client has."""
    site.client.cookies.clear()
    token = await users.create_login_link(site.db, site.user_ids[email])
    r = await site.client.get(f"/ui/login/link?token={token}")
    assert r.status_code == 303, r.text


def text_of(html: str) -> str:
    """The page's text without tags, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


async def test_workers_show_heartbeat_slots_labels_and_what_they_run(site: Site) -> None:
    wid, ext = await site.rows.worker(
        site.tenant, ["add"], slots=4, labels={"gpu": "a100"}, name="gpu-box"
    )
    await site.rows.worker(site.tenant, ["add"], status="DEAD", name="old-box")
    _, theirs = await site.rows.worker(site.other, ["add"], name="their-box")
    await site.rows.task_def(site.tenant, "add")
    await site.rows.running(site.tenant, "add", wid)
    await sign_in(site, "viewer@acme.test")

    page = await site.client.get("/ui/workers")
    assert page.status_code == 200
    text = text_of(page.text)
    assert "gpu-box" in text and "old-box" in text and "their-box" not in text
    assert "gpu=a100" in text and "1/4" in text
    live = await site.client.get("/ui/workers?status=active")
    assert "gpu-box" in live.text and "old-box" not in live.text
    bad = await site.client.get("/ui/workers?status=sleepy")
    assert bad.status_code == 200 and 'data-testid="filter-error"' in bad.text
    assert "old-box" in bad.text  # the default (every status) in its place

    detail = await site.client.get(f"/ui/workers/{ext}")
    assert detail.status_code == 200
    held = text_of(detail.text)
    assert "Running now (1)" in held and "add" in held
    assert (await site.client.get(f"/ui/workers/{theirs}")).status_code == 404
    assert (await site.client.get("/ui/workers/not-a-uuid")).status_code == 404


async def test_queues_show_depth_oldest_and_blocked_reasons(site: Site) -> None:
    await site.rows.worker(site.tenant, ["served"])
    await site.rows.queued(site.tenant, "served", priority=3, age_s=120)
    for _ in range(4):
        await site.rows.queued(site.tenant, "served", later_s=60, rate_limits=[{"key": "api"}])
    await site.rows.queued(site.tenant, "nobody-serves")
    await site.rows.queued(site.other, "served")
    await sign_in(site, "viewer@acme.test")
    page = await site.client.get("/ui/queues")
    assert page.status_code == 200
    html = page.text
    assert re.search(r'data-testid="depth">\s*6<', html)
    assert 'data-reason="rate limit">rate limit: 4<' in html
    assert 'data-reason="no eligible worker">no eligible worker: 1<' in html
    assert re.search(r">2 min( \d s)? ago<", html)  # the oldest waiting, of priority 3


async def _seed_definitions(site: Site) -> None:
    await site.rows.task_def(site.tenant, "place-order", retries=2, input_schema=ORDER_SCHEMA)
    await site.rows.task_def(site.tenant, "raw")
    await site.rows.task_def(site.other, "secret-task")
    for status in ("COMPLETED", "COMPLETED", "FAILED"):
        await site.rows.task(site.tenant, "place-order", status)


async def test_tasks_list_definitions_with_their_success_rate(site: Site) -> None:
    await _seed_definitions(site)
    await sign_in(site, "viewer@acme.test")
    page = await site.client.get("/ui/tasks")
    assert page.status_code == 200
    assert "place-order" in page.text and "secret-task" not in page.text
    assert re.search(r'data-name="place-order".*?data-testid="success">67%<', page.text, re.S)
    detail = await site.client.get("/ui/tasks/task/place-order")
    assert detail.status_code == 200 and "retries" in detail.text
    assert (await site.client.get("/ui/tasks/task/secret-task")).status_code == 404
    assert (await site.client.get("/ui/tasks/gadget/place-order")).status_code == 404


async def test_a_viewer_sees_no_actions_and_is_refused_them(site: Site) -> None:
    await _seed_definitions(site)
    await sign_in(site, "viewer@acme.test")
    detail = await site.client.get("/ui/tasks/task/place-order")
    assert 'data-testid="trigger"' not in detail.text
    assert 'data-testid="pause"' not in detail.text
    csrf = csrf_of(detail.text)
    for action in ("trigger", "pause", "resume"):
        r = await site.client.post(
            f"/ui/tasks/task/place-order/{action}",
            data={"csrf": csrf, "customer": "acme", "quantity": "1"},
        )
        assert r.status_code == 403, action
    assert await site.rows.one("SELECT count(*) FROM scheduled_run") == 0


async def test_the_trigger_form_is_built_from_the_input_schema(site: Site) -> None:
    await _seed_definitions(site)
    await sign_in(site, "op@acme.test")
    html = (await site.client.get("/ui/tasks/task/place-order")).text
    assert 'data-testid="trigger"' in html
    for name in ("customer", "quantity", "lines"):
        assert f'name="{name}"' in html
    assert 'type="number"' in html and "Who ordered" in html
    raw = (await site.client.get("/ui/tasks/task/raw")).text
    assert 'name="__input__"' in raw  # no schema: one JSON field for the whole input


async def test_invalid_input_is_shown_beside_its_field(site: Site) -> None:
    await _seed_definitions(site)
    await sign_in(site, "op@acme.test")
    page = await site.client.get("/ui/tasks/task/place-order")
    r = await site.client.post(
        "/ui/tasks/task/place-order/trigger",
        data={"csrf": csrf_of(page.text), "customer": "acme", "quantity": "2", "lines": "[{"},
    )
    assert r.status_code == 422
    assert re.search(
        r'data-testid="field-lines".*?data-testid="error-lines">not valid JSON: ', r.text, re.S
    )
    assert "[{" in r.text  # what the user typed is kept
    assert await site.rows.one("SELECT count(*) FROM scheduled_run") == 0


async def test_a_valid_trigger_schedules_a_run_with_the_input(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No engine serves this app, so the run is scheduled but never started here (the
    # browser tests follow it to its run); the page says where it is.
    monkeypatch.setattr(tasks_page, "FOLLOW_S", 0.05)
    await _seed_definitions(site)
    await sign_in(site, "op@acme.test")
    page = await site.client.get("/ui/tasks/task/place-order")
    r = await site.client.post(
        "/ui/tasks/task/place-order/trigger",
        data={
            "csrf": csrf_of(page.text),
            "customer": "acme",
            "quantity": "2",
            "lines": '[{"sku": "a"}]',
        },
    )
    assert r.status_code == 200 and 'data-testid="trigger-message"' in r.text
    stored = await site.rows.one("SELECT input FROM scheduled_run WHERE task_name = 'place-order'")
    assert stored == {"customer": "acme", "quantity": 2, "lines": [{"sku": "a"}]}
    unknown = await site.client.post(
        "/ui/tasks/task/nope/trigger", data={"csrf": csrf_of(page.text)}
    )
    assert unknown.status_code == 404


async def test_engine_managed_pages_say_so_without_an_engine(site: Site) -> None:
    await _seed_definitions(site)
    await sign_in(site, "op@acme.test")
    for path in ("/ui/crons", "/ui/events", "/ui/webhooks"):
        r = await site.client.get(path)
        assert r.status_code == 503 and "runs without one" in r.text, path
    page = await site.client.get("/ui/tasks/task/place-order")
    paused = await site.client.post(
        "/ui/tasks/task/place-order/pause", data={"csrf": csrf_of(page.text)}
    )
    assert paused.status_code == 503


async def test_navigation_links_every_page_of_this_area(site: Site) -> None:
    await sign_in(site, "viewer@acme.test")
    html = (await site.client.get("/ui/workers")).text
    for path in ("/ui/workers", "/ui/tasks", "/ui/queues", "/ui/crons"):
        assert f'href="{path}"' in html
    assert 'href="/ui/workers" aria-current="page"' in html


async def test_an_operator_pauses_and_resumes_a_worker_a_viewer_cannot(site: Site) -> None:
    _, ext = await site.rows.worker(site.tenant, ["add"], name="box")
    _, theirs = await site.rows.worker(site.other, ["add"], name="their-box")
    await sign_in(site, "viewer@acme.test")
    page = await site.client.get(f"/ui/workers/{ext}")
    assert 'data-testid="pause"' not in page.text
    refused = await site.client.post(f"/ui/workers/{ext}/pause", data={"csrf": csrf_of(page.text)})
    assert refused.status_code == 403

    await sign_in(site, "op@acme.test")
    page = await site.client.get(f"/ui/workers/{ext}")
    csrf = csrf_of(page.text)
    r = await site.client.post(f"/ui/workers/{ext}/pause", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == f"/ui/workers/{ext}"
    paused = await site.client.get(f"/ui/workers/{ext}")
    assert 'data-testid="paused"' in paused.text and 'data-testid="resume"' in paused.text
    listed = await site.client.get("/ui/workers")
    assert re.search(r'data-worker="box".*?>paused<', listed.text, re.S)
    await site.client.post(f"/ui/workers/{ext}/resume", data={"csrf": csrf})
    assert 'data-testid="paused"' not in (await site.client.get(f"/ui/workers/{ext}")).text
    other = await site.client.post(f"/ui/workers/{theirs}/pause", data={"csrf": csrf})
    assert other.status_code == 404
    assert await site.rows.one("SELECT count(*) FROM worker WHERE paused_at IS NOT NULL") == 0


async def test_rate_limits_show_use_and_are_edited_on_the_page(site: Site) -> None:
    await site.rows.conn.execute(
        "INSERT INTO rate_limit (tenant_id, key, limit_value, window_ms) VALUES"
        " (%s, 'api', 1, 60000), (%s, 'theirs', 5, 1000)",
        (site.tenant, site.other),
    )
    for _ in range(4):
        await site.rows.queued(site.tenant, "call", later_s=50, rate_limits=[{"key": "api"}])
    await sign_in(site, "viewer@acme.test")
    page = await site.client.get("/ui/rate-limits")
    assert re.search(r'data-key="api".*?data-testid="waiting">4<', page.text, re.S)
    assert "theirs" not in page.text and 'data-testid="save-limit"' not in page.text
    refused = await site.client.post(
        "/ui/rate-limits", data={"csrf": csrf_of(page.text), "key": "api", "limit": "9"}
    )
    assert refused.status_code == 403

    await sign_in(site, "op@acme.test")
    csrf = csrf_of((await site.client.get("/ui/rate-limits")).text)
    bad = await site.client.post(
        "/ui/rate-limits", data={"csrf": csrf, "key": "api", "limit": "ten", "duration": "1m"}
    )
    assert bad.status_code == 422 and "is not a whole number" in bad.text
    r = await site.client.post(
        "/ui/rate-limits", data={"csrf": csrf, "key": "api", "limit": "10", "duration": "1m"}
    )
    assert r.status_code == 303
    after = await site.client.get("/ui/rate-limits")
    assert re.search(r'data-key="api".*?data-testid="limit">10 per 1 min<', after.text, re.S)
    # Raising the limit made the deferred runs ready at once: none waits on it any more.
    assert re.search(r'data-key="api".*?data-testid="waiting">0<', after.text, re.S)


async def test_a_token_is_shown_once_works_and_stops_when_revoked(site: Site) -> None:
    await sign_in(site, "op@acme.test")
    assert (await site.client.get("/ui/settings")).status_code == 403  # admins only
    await sign_in(site, "admin@acme.test")
    page = await site.client.get("/ui/settings")
    assert page.status_code == 200
    r = await site.client.post(
        "/ui/settings/tokens",
        data={"csrf": csrf_of(page.text), "name": "ci", "role": "member", "expires_in": "1d"},
    )
    found = re.search(r'data-testid="token-secret">([^<]+)<', r.text)
    assert r.status_code == 200 and found
    secret = found.group(1)
    again = await site.client.get("/ui/settings")
    assert secret not in again.text and 'data-name="ci"' in again.text
    api = {"authorization": f"Bearer {secret}"}
    assert (await site.client.get("/api/v1/workers", headers=api)).status_code == 200
    token_id = re.search(r"/ui/settings/tokens/([0-9a-f-]+)/revoke", again.text)
    assert token_id
    revoked = await site.client.post(
        f"/ui/settings/tokens/{token_id.group(1)}/revoke", data={"csrf": csrf_of(again.text)}
    )
    assert revoked.status_code == 303
    assert (await site.client.get("/api/v1/workers", headers=api)).status_code == 401
    bad = await site.client.post(
        "/ui/settings/tokens", data={"csrf": csrf_of(again.text), "expires_in": "soon"}
    )
    assert bad.status_code == 422 and 'data-testid="form-error"' in bad.text


async def test_logs_are_searched_by_words_level_task_and_run(site: Site) -> None:
    run_a, run_b = uuid.uuid4(), uuid.uuid4()
    for run, task in ((run_a, "fetch"), (run_b, "charge")):
        await site.rows.conn.execute(
            "INSERT INTO task (tenant_id, external_id, task_name, status, input)"
            " VALUES (%s, %s, %s, 'COMPLETED', '{}')",
            (site.tenant, run, task),
        )
    lines = [
        (site.tenant, run_a, "fetch", 20, "fetching page 1"),
        (site.tenant, run_a, "fetch", 30, "timeout on page 2, retrying"),
        (site.tenant, run_b, "charge", 40, "card declined: timeout"),
        (site.other, uuid.uuid4(), "fetch", 40, "their timeout"),
    ]
    for tenant, run, task, level, message in lines:
        await site.rows.conn.execute(
            "INSERT INTO task_log (tenant_id, task_id, run_id, task_run_id, task_name, attempt,"
            " max_level, levels, loggers, messages, logged_at) VALUES (%s, 1, %s, %s, %s, 0,"
            " %s, ARRAY[%s]::smallint[], ARRAY['app'], ARRAY[%s],"
            " ARRAY[(extract(epoch FROM now()) * 1000)::bigint])",
            (tenant, run, run, task, level, level, message),
        )
    await sign_in(site, "viewer@acme.test")

    async def messages(q: str) -> list[str]:
        r = await site.client.get("/ui/logs", params={"q": q})
        assert r.status_code == 200
        return re.findall(r'data-testid="log-line">.*?<td><code>([^<]*)</code>', r.text, re.S)

    assert await messages("timeout") == ["card declined: timeout", "timeout on page 2, retrying"]
    assert await messages("timeout task:fetch") == ["timeout on page 2, retrying"]
    assert await messages("level:ERROR") == ["card declined: timeout"]
    assert await messages(f"run:{run_a}") == ["fetching page 1", "timeout on page 2, retrying"]
    bad = await site.client.get("/ui/logs", params={"q": "level:LOUD run:nope"})
    assert bad.status_code == 200
    assert bad.text.count('data-testid="filter-error"') == 2


async def test_a_viewer_is_refused_every_action_of_these_pages(site: Site) -> None:
    await sign_in(site, "viewer@acme.test")
    csrf = csrf_of((await site.client.get("/ui/workers")).text)
    some = uuid.uuid4()
    for path in (
        "/ui/crons",
        "/ui/crons/nightly/edit",
        "/ui/crons/nightly/enable",
        "/ui/crons/nightly/disable",
        "/ui/crons/nightly/trigger",
        "/ui/crons/nightly/delete",
        f"/ui/schedules/{some}/reschedule",
        f"/ui/schedules/{some}/delete",
        f"/ui/events/{some}/repush",
        f"/ui/filters/{some}/delete",
        "/ui/rate-limits/api/delete",
        "/ui/settings/tokens",
        f"/ui/settings/tokens/{some}/revoke",
        "/ui/settings/users",
        "/ui/settings/users/delete",
    ):
        r = await site.client.post(path, data={"csrf": csrf})
        assert r.status_code == 403, path
    # An operator is refused the admin-only settings actions too.
    await sign_in(site, "op@acme.test")
    csrf = csrf_of((await site.client.get("/ui/workers")).text)
    r = await site.client.post("/ui/settings/tokens", data={"csrf": csrf, "name": "x"})
    assert r.status_code == 403
    assert await site.rows.one("SELECT count(*) FROM api_token") == 0


def _unlabelled(html: str) -> list[str]:
    """Form controls of a page that no <label> names (by for=id or by wrapping them)."""
    labelled = set(re.findall(r'<label[^>]*\bfor="([^"]+)"', html))
    wrapped = re.findall(
        r"<label[^>]*>(?:(?!</label>).)*?<(?:input|select|textarea)[^>]*>", html, re.S
    )
    missing = []
    for tag in re.findall(r"<(?:input|select|textarea)\b[^>]*>", html):
        if 'type="hidden"' in tag or 'type="submit"' in tag:
            continue
        found = re.search(r'\bid="([^"]+)"', tag)
        if found and found.group(1) in labelled:
            continue
        if any(tag in w for w in wrapped):
            continue
        missing.append(tag)
    return missing


def test_the_label_check_finds_an_unlabelled_control() -> None:
    page = (
        '<label for="a">A</label><input id="a"><label><input name="b"> B</label>'
        '<input type="hidden" name="csrf"><select id="c"></select>'
    )
    assert _unlabelled(page) == ['<select id="c">']


async def test_every_control_has_a_label_and_every_table_header_a_scope(site: Site) -> None:
    await _seed_definitions(site)
    _, ext = await site.rows.worker(site.tenant, ["add"], name="box")
    await site.rows.queued(site.tenant, "add")
    await site.rows.conn.execute(
        "INSERT INTO rate_limit (tenant_id, key, limit_value, window_ms)"
        " VALUES (%s, 'api', 1, 1000)",
        (site.tenant,),
    )
    await sign_in(site, "admin@acme.test")
    for path in (
        "/ui/workers",
        f"/ui/workers/{ext}",
        "/ui/tasks",
        "/ui/tasks/task/place-order",
        "/ui/tasks/task/raw",
        "/ui/queues",
        "/ui/rate-limits",
        "/ui/logs",
        "/ui/settings",
    ):
        html = (await site.client.get(path)).text
        assert "<input" in html or "<table" in html, path
        assert _unlabelled(html) == [], path
        headers = re.findall(r"<th\b[^>]*>", html)
        assert all('scope="col"' in h or 'scope="row"' in h for h in headers), path


async def test_a_workflow_page_draws_its_shape_with_condition_edges(site: Site) -> None:
    for name in ("wf.fetch", "wf.parse", "wf.store"):
        await site.rows.task_def(site.tenant, name)
    parse_if = [{"kind": "parent", "parent": "fetch", "expression": "output.empty"}]
    spec = {
        "steps": [
            {"name": "fetch", "task_name": "wf.fetch"},
            {"name": "parse", "task_name": "wf.parse", "parents": ["fetch"], "skip_if": parse_if},
            {"name": "store", "task_name": "wf.store", "parents": ["fetch", "parse"]},
        ]
    }
    version = await site.rows.one(
        "INSERT INTO workflow_version (tenant_id, name, hash, config) VALUES (%s, 'etl', 'h', %s)"
        " RETURNING id",
        site.tenant,
        json.dumps(spec),
    )
    await site.rows.conn.execute(
        "INSERT INTO workflow_def (tenant_id, name, version_id) VALUES (%s, 'etl', %s)",
        (site.tenant, version),
    )
    await sign_in(site, "viewer@acme.test")
    listed = await site.client.get("/ui/tasks")
    assert 'data-name="etl"' in listed.text and 'data-name="wf.parse"' not in listed.text
    page = await site.client.get("/ui/tasks/workflow/etl")
    assert page.status_code == 200
    assert re.search(r'data-testid="dag" data-nodes="3" data-edges="3"', page.text)
    assert 'data-edge="fetch->parse" data-kind="skip_if"' in page.text
    assert 'aria-label="The workflow\'s steps: 3 nodes, 3 edges"' in page.text
    assert "skipped if fetch&#39;s output: output.empty" in page.text


async def test_a_workflow_is_triggered_with_its_input_without_an_engine(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks_page, "FOLLOW_S", 0.05)
    await site.rows.task_def(site.tenant, "wf.first", input_schema=ORDER_SCHEMA)
    spec = {"steps": [{"name": "first", "task_name": "wf.first"}]}
    version = await site.rows.one(
        "INSERT INTO workflow_version (tenant_id, name, hash, config) VALUES (%s, 'wf', 'h', %s)"
        " RETURNING id",
        site.tenant,
        json.dumps(spec),
    )
    await site.rows.conn.execute(
        "INSERT INTO workflow_def (tenant_id, name, version_id) VALUES (%s, 'wf', %s)",
        (site.tenant, version),
    )
    await sign_in(site, "op@acme.test")
    page = await site.client.get("/ui/tasks/workflow/wf")
    assert 'name="customer"' in page.text  # the root step's input schema
    r = await site.client.post(
        "/ui/tasks/workflow/wf/trigger",
        data={"csrf": csrf_of(page.text), "customer": "acme", "quantity": "3"},
    )
    assert r.status_code == 200 and 'data-testid="trigger-message"' in r.text
    stored = await site.rows.one("SELECT input FROM scheduled_run WHERE workflow_name = 'wf'")
    assert stored == {"customer": "acme", "quantity": 3}
