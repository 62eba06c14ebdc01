"""Incoming webhooks through a real engine process: each authenticated POST becomes a user
event through the engine's event ingest, with the body kept as received; a missing or
forged signature (HMAC, Stripe-style timestamped, GitHub), wrong Basic or API-key
credentials, a replayed old Stripe timestamp, an unknown webhook and a body that is not
JSON are refused and store nothing; secrets are stored encrypted; a webhook's event
resumes a durable task waiting for it; management through the SDK, REST and CLI."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from stoker import (
    HMAC,
    ApiKey,
    Basic,
    GitHubSignature,
    InvalidRequestError,
    NotFoundError,
    RunRef,
    SlackSignature,
    Stoker,
    StripeSignature,
    Webhook,
)
from tests.apps import events, waits, workflows
from tests.harness import REPO, wait_until

pytestmark = pytest.mark.timeout(120)

SECRET = "whsec_" + "s3cr3t-never-in-clear"


def _events(db_url: str, tenant_id: int) -> list[dict[str, Any]]:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT key, payload, additional_metadata, scope, webhook_id, body"
            " FROM stoker.user_event WHERE tenant_id = %s ORDER BY id",
            (tenant_id,),
        ).fetchall()


def _post(engine: Any, hook: Webhook, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        hook.url(engine.http_url),
        content=body,
        headers={"content-type": "application/json", **headers},
        timeout=10,
    )


def _sign(secret: str, message: bytes, digest: Any = hashlib.sha256) -> str:
    return hmac.new(secret.encode(), message, digest).hexdigest()


def _stripe_header(secret: str, body: bytes, at: float) -> str:
    t = str(int(at))
    return f"t={t},v1={_sign(secret, t.encode() + b'.' + body)}"


def test_hmac_signed_posts_become_events_and_forged_ones_store_nothing(
    engine: Any, tenant: Any
) -> None:
    app = tenant.client()
    hook = app.webhooks.create(
        "orders",
        auth=HMAC(SECRET, header="X-Shop-Signature", algorithm="sha512", encoding="base64"),
        event_key_expression="'shop:' + input.event",
        scope_expression="headers['x-shop-id']",
    )
    assert hook.path.startswith("/webhooks/") and hook.path.endswith("/orders")
    # Kept exactly as received: spacing and key order are not what json.dumps would make.
    body = b'{ "event": "order.paid",\n  "order": {"id": 7, "total": 12.5} }'
    good = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha512).digest()).decode()

    answer = _post(engine, hook, body, **{"X-Shop-Signature": good, "X-Shop-Id": "shop-3"})
    assert answer.status_code == 202, answer.text
    got = answer.json()
    assert (got["key"], got["scope"], got["satisfied"]) == ("shop:order.paid", "shop-3", 0)
    [event] = _events(engine.db_url, tenant.tenant_id)
    assert event["key"] == "shop:order.paid" and event["scope"] == "shop-3"
    assert event["payload"] == {"event": "order.paid", "order": {"id": 7, "total": 12.5}}
    assert bytes(event["body"]) == body and event["webhook_id"] is not None
    assert event["additional_metadata"] == {"stoker_webhook": "orders"}

    forged = base64.b64encode(hmac.new(b"guess", body, hashlib.sha512).digest()).decode()
    refused = _post(engine, hook, body, **{"X-Shop-Signature": forged, "X-Shop-Id": "s"})
    assert refused.status_code == 403 and "does not match" in refused.json()["error"]["message"]
    tampered = _post(engine, hook, body + b" ", **{"X-Shop-Signature": good, "X-Shop-Id": "s"})
    assert tampered.status_code == 403
    missing = _post(engine, hook, body, **{"X-Shop-Id": "s"})
    assert missing.status_code == 401 and "X-Shop-Signature" in missing.json()["error"]["message"]
    # No Stoker token is needed, and one is no substitute for the signature.
    bearer = _post(engine, hook, body, authorization=f"Bearer {tenant.token}")
    assert bearer.status_code == 401

    # A body that is not JSON, correctly signed: 400 naming the problem.
    text = b"order paid"
    signed = base64.b64encode(hmac.new(SECRET.encode(), text, hashlib.sha512).digest()).decode()
    not_json = _post(engine, hook, text, **{"X-Shop-Signature": signed, "X-Shop-Id": "s"})
    assert not_json.status_code == 400 and "JSON" in not_json.json()["error"]["message"]
    # An unknown webhook name, or tenant: 404.
    other = hook.path.rsplit("/", 1)[0] + "/nope"
    assert httpx.post(engine.http_url + other, content=body).status_code == 404
    assert httpx.post(f"{engine.http_url}/webhooks/{uuid.uuid4()}/orders").status_code == 404
    # A body over the payload limit is refused before it is read.
    big = b'{"event": "' + b"x" * (6 * 1024 * 1024) + b'"}'
    assert _post(engine, hook, big, **{"X-Shop-Signature": good}).status_code == 413
    assert len(_events(engine.db_url, tenant.tenant_id)) == 1  # nothing more stored
    app.close()


def test_secrets_are_stored_encrypted(engine: Any, tenant: Any) -> None:
    app = tenant.client()
    hook = app.webhooks.create("sealed", auth=Basic("stripe", SECRET), event_key_expression="'x'")
    with psycopg.connect(engine.db_url, row_factory=dict_row) as conn:
        row = conn.execute(
            "SELECT w.*, w::text AS whole FROM stoker.webhook w WHERE external_id = %s",
            (hook.id,),
        ).fetchone()
    assert row is not None
    assert SECRET.encode() not in bytes(row["secret"]) and SECRET not in row["whole"]
    assert SECRET.encode().hex() not in row["whole"]
    assert row["auth_options"] == {"header": "Authorization", "username": "stripe"}
    # Neither the API nor the SDK ever shows it.
    assert SECRET not in repr(app.webhooks.get("sealed")) and SECRET not in repr(
        Basic("stripe", SECRET)
    )
    api = httpx.get(
        f"{engine.http_url}/api/v1/webhooks/sealed",
        headers={"authorization": f"Bearer {tenant.token}"},
    )
    assert api.status_code == 200 and SECRET not in api.text
    app.close()


def test_stripe_signatures_with_a_replayed_old_timestamp_refused(engine: Any, tenant: Any) -> None:
    app = tenant.client()
    hook = app.webhooks.create(
        "stripe",
        auth=StripeSignature(SECRET, tolerance=300),
        event_key_expression="'stripe:' + input.type",
    )
    body = b'{"id": "evt_1", "type": "invoice.paid", "data": {"object": {"amount": 900}}}'
    now = time.time()
    ok = _post(engine, hook, body, **{"Stripe-Signature": _stripe_header(SECRET, body, now)})
    assert ok.status_code == 202 and ok.json()["key"] == "stripe:invoice.paid"
    # During a secret roll Stripe signs with both secrets: any v1 that matches will do.
    # (The same event id again: the first delivery's event, nothing stored.)
    both = _stripe_header(SECRET, body, now) + ",v1=" + _sign("old", b"x")
    again = _post(engine, hook, body, **{"Stripe-Signature": both})
    assert again.status_code == 202 and again.json()["duplicate"] is True
    assert again.json()["event_id"] == ok.json()["event_id"]

    forged = _post(engine, hook, body, **{"Stripe-Signature": _stripe_header("no", body, now)})
    assert forged.status_code == 403
    # The signature is right, but for a timestamp ten minutes old: a replay.
    replay = _post(
        engine, hook, body, **{"Stripe-Signature": _stripe_header(SECRET, body, now - 600)}
    )
    assert replay.status_code == 403 and "replay" in replay.json()["error"]["message"]
    # The timestamp is signed: moving it forward breaks the signature.
    old = _stripe_header(SECRET, body, now - 600)
    moved = old.replace(f"t={int(now - 600)}", f"t={int(now)}")
    assert _post(engine, hook, body, **{"Stripe-Signature": moved}).status_code == 403
    garbled = _post(engine, hook, body, **{"Stripe-Signature": "v1=abc"})
    assert garbled.status_code == 403
    assert [e["key"] for e in _events(engine.db_url, tenant.tenant_id)] == ["stripe:invoice.paid"]
    app.close()


def test_github_and_slack_presets_basic_and_api_key(engine: Any, tenant: Any) -> None:
    app = tenant.client()
    gh = app.webhooks.create(
        "github",
        auth=GitHubSignature(SECRET),
        event_key_expression="'github:' + headers['x-github-event']",
        scope_expression="input.repository.full_name",
    )
    body = b'{"action": "opened", "repository": {"full_name": "acme/shop"}}'
    sig = "sha256=" + _sign(SECRET, body)
    ok = _post(engine, gh, body, **{"X-Hub-Signature-256": sig, "X-GitHub-Event": "issues"})
    assert ok.status_code == 202 and (ok.json()["key"], ok.json()["scope"]) == (
        "github:issues",
        "acme/shop",
    )
    bad = "sha256=" + _sign("wrong", body)
    assert _post(engine, gh, body, **{"X-Hub-Signature-256": bad}).status_code == 403
    unprefixed = _sign(SECRET, body)
    assert _post(engine, gh, body, **{"X-Hub-Signature-256": unprefixed}).status_code == 403

    basic = app.webhooks.create(
        "basic", auth=Basic("partner", "pa55"), event_key_expression="input.kind"
    )
    body = b'{"kind": "partner:ping"}'
    assert _post(engine, basic, body).status_code == 401
    right = httpx.post(basic.url(engine.http_url), content=body, auth=("partner", "pa55"))
    assert right.status_code == 202 and right.json()["key"] == "partner:ping"
    for user, password in (("partner", "nope"), ("other", "pa55")):
        wrong = httpx.post(basic.url(engine.http_url), content=body, auth=(user, password))
        assert wrong.status_code == 403

    slack = app.webhooks.create(
        "slack", auth=SlackSignature(SECRET), event_key_expression="'slack:' + input.event.type"
    )
    body = b'{"type": "event_callback", "event": {"type": "app_mention"}}'

    def slack_headers(body: bytes, at: float) -> dict[str, str]:
        t = str(int(at))
        signed = "v0=" + _sign(SECRET, f"v0:{t}:".encode() + body)
        return {"X-Slack-Request-Timestamp": t, "X-Slack-Signature": signed}

    ok = _post(engine, slack, body, **slack_headers(body, time.time()))
    assert ok.status_code == 202 and ok.json()["key"] == "slack:app_mention"
    stale = _post(engine, slack, body, **slack_headers(body, time.time() - 600))
    assert stale.status_code == 403 and "replay" in stale.json()["error"]["message"]
    forged = {**slack_headers(body, time.time()), "X-Slack-Signature": "v0=" + _sign("x", body)}
    assert _post(engine, slack, body, **forged).status_code == 403
    # Slack's check of a new URL: the challenge comes back, no event is made.
    check = b'{"type": "url_verification", "challenge": "3eZbrw1aBm2rZgRNFdxV"}'
    answer = _post(engine, slack, check, **slack_headers(check, time.time()))
    assert answer.status_code == 200 and answer.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV"}

    body = b'{"kind": "partner:ping"}'
    keyed = app.webhooks.create(
        "keyed", auth=ApiKey("X-Api-Key", "k-123"), event_key_expression="'keyed:' + input.kind"
    )
    assert _post(engine, keyed, body, **{"X-Api-Key": "k-123"}).status_code == 202
    assert _post(engine, keyed, body, **{"X-Api-Key": "k-124"}).status_code == 403
    assert _post(engine, keyed, body).status_code == 401
    # An expression that gives no string for this body: 400, nothing stored.
    odd = _post(engine, basic, b'{"kind": 7}', authorization="Basic " + _b64("partner:pa55"))
    assert odd.status_code == 400 and "event_key_expression" in odd.json()["error"]["message"]
    keys = [e["key"] for e in _events(engine.db_url, tenant.tenant_id)]
    assert keys == ["github:issues", "partner:ping", "slack:app_mention", "keyed:partner:ping"]
    app.close()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_a_webhook_event_resumes_a_durable_task_waiting_for_it(
    engine: Any, tenant: Any, worker_factory: Any
) -> None:
    app = waits.declare(tenant.client())
    worker_factory("tests.apps.waits:app", durable_slots=2)
    hook = app.webhooks.create(
        "payments",
        auth=HMAC(SECRET, header="X-Signature"),
        event_key_expression="'payment:' + string(input.order_id)",
    )
    ref = app.tasks["await_event"].run_no_wait(
        waits.Await(key="payment:42", expression="input.amount > 10")
    )
    with psycopg.connect(engine.db_url) as conn:
        wait_until(
            lambda: conn.execute(
                "SELECT 1 FROM stoker.task_wait w JOIN stoker.task t ON t.id = w.task_id"
                " WHERE t.external_id = %s",
                (ref.run_id,),
            ).fetchone(),
            what="the durable wait to be registered",
        )
    body = b'{"order_id": 42, "amount": 99}'
    answer = _post(engine, hook, body, **{"X-Signature": _sign(SECRET, body)})
    assert answer.status_code == 202 and answer.json()["satisfied"] == 1
    assert ref.result(timeout=60)["payload"] == {"order_id": 42, "amount": 99}
    app.close()


def test_webhook_events_satisfy_the_waiting_steps_of_a_workflow(
    engine: Any, tenant: Any, worker_factory: Any
) -> None:
    app = workflows.declare(tenant.client())
    worker_factory("tests.apps.workflows:app", slots=20)
    hook = app.webhooks.create(
        "shop",
        auth=ApiKey("X-Key", "k"),
        event_key_expression="input.event",
        # The run the event is for, when the sender says so (scoped events reach only it).
        scope_expression="'x-run' in headers ? headers['x-run'] : ''",
    )
    ref = app.workflows["waits"].run_no_wait(workflows.Job(order_id=7))
    with psycopg.connect(engine.db_url) as conn:
        wait_until(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM stoker.task_wait w JOIN stoker.task t ON t.id = w.task_id"
                    " JOIN stoker.dag d ON d.id = t.dag_id WHERE d.external_id = %s"
                    " AND w.kind = 'event'",
                    (ref.run_id,),
                ).fetchone()[0]
                >= 2
            ),
            what="the steps to wait for their events",
        )
    paid = _post(engine, hook, b'{"event": "order:paid", "order_id": 7}', **{"X-Key": "k"})
    assert paid.status_code == 202 and paid.json()["satisfied"] == 1
    go = _post(engine, hook, b'{"event": "order:go"}', **{"X-Key": "k", "X-Run": ref.run_id})
    assert go.status_code == 202 and go.json()["scope"] == ref.run_id
    assert go.json()["satisfied"] == 1
    out = ref.result(timeout=30)
    assert out["paid"] == "paid" and out["mixed"] == "mixed"
    app.close()


def test_a_webhook_post_starts_the_tasks_subscribed_to_its_event(
    engine: Any, tenant: Any, worker_factory: Any
) -> None:
    app = events.declare(tenant.client())
    worker_factory("tests.apps.events:app", slots=20).wait_ready()
    hook = app.webhooks.create(
        "carrier",
        auth=GitHubSignature(SECRET),
        event_key_expression="'shipment:' + input.status",
    )
    body = b'{"status": "delivered", "parcel": 9}'
    answer = _post(engine, hook, body, **{"X-Hub-Signature-256": "sha256=" + _sign(SECRET, body)})
    assert answer.status_code == 202, answer.text
    got = answer.json()
    (run_id,) = got["run_ids"]  # shipments, on_events=["shipment:**"]
    out = RunRef(app.connection, run_id, app.tasks["shipments"]).result(timeout=30)
    assert out["input"] == {"status": "delivered", "parcel": 9}
    assert (out["event_key"], out["event_id"]) == ("shipment:delivered", got["event_id"])
    assert [r.task_name for r in app.events.get(got["event_id"]).runs] == ["shipments"]
    app.close()


def test_management_through_the_sdk_sync_and_aio(engine: Any, tenant: Any) -> None:
    app = tenant.client()
    hook = app.webhooks.create(
        "rotating", auth=HMAC("first"), event_key_expression="'r:' + input.t"
    )
    body = b'{"t": "a"}'
    assert _post(engine, hook, body, **{"X-Signature": _sign("first", body)}).status_code == 202
    # Rotating the secret: the old one is refused from then on.
    changed = app.webhooks.update("rotating", auth=HMAC("second"), scope_expression="input.t")
    assert changed.scope_expression == "input.t" and changed.updated_at >= hook.updated_at
    assert _post(engine, hook, body, **{"X-Signature": _sign("first", body)}).status_code == 403
    assert _post(engine, hook, body, **{"X-Signature": _sign("second", body)}).status_code == 202
    assert app.webhooks.update("rotating", scope_expression=None).scope_expression is None
    assert [w.name for w in app.webhooks.list()] == ["rotating"]
    assert app.webhooks.get("rotating").auth_options == {
        "header": "X-Signature",
        "algorithm": "sha256",
        "encoding": "hex",
    }

    # Bad input: a clear error, nothing stored.
    with pytest.raises(InvalidRequestError, match="invalid CEL expression"):
        app.webhooks.create("broken", auth=HMAC("s"), event_key_expression="input.(")
    with pytest.raises(InvalidRequestError, match="exists already"):
        app.webhooks.create("rotating", auth=HMAC("s"), event_key_expression="'k'")
    with pytest.raises(InvalidRequestError, match="webhook name"):
        app.webhooks.create("a/b", auth=HMAC("s"), event_key_expression="'k'")
    with pytest.raises(InvalidRequestError, match="algorithm"):
        app.webhooks.create("md5", auth=HMAC("s", algorithm="md5"), event_key_expression="'k'")
    with pytest.raises(InvalidRequestError, match="secret is empty"):
        app.webhooks.create("empty", auth=GitHubSignature(""), event_key_expression="'k'")
    with pytest.raises(TypeError, match="auth must be"):
        app.webhooks.create("typed", auth="secret", event_key_expression="'k'")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        app.webhooks.get("broken")

    async def aio() -> None:
        made = await app.webhooks.aio_create(
            "async", auth=ApiKey("X-Key", "k"), event_key_expression="'a'"
        )
        assert (await app.webhooks.aio_get("async")).id == made.id
        updated = await app.webhooks.aio_update("async", event_key_expression="'b'")
        assert updated.event_key_expression == "'b'"
        assert [w.name for w in await app.webhooks.aio_list()] == ["async", "rotating"]
        await app.webhooks.aio_delete("async")

    asyncio.run(aio())
    app.webhooks.delete("rotating")
    assert app.webhooks.list() == []
    gone = _post(engine, hook, body, **{"X-Signature": _sign("second", body)})
    assert gone.status_code == 404
    with pytest.raises(NotFoundError):
        app.webhooks.delete("rotating")
    app.close()


def test_management_over_rest_and_cli(engine: Any, tenant: Any) -> None:
    api = f"{engine.http_url}/api/v1/webhooks"
    with httpx.Client(headers={"authorization": f"Bearer {tenant.token}"}, timeout=10) as http:
        made = http.post(
            api,
            json={
                "name": "rest",
                "auth": {"kind": "GITHUB", "secret": SECRET},
                "event_key_expression": "'gh:' + input.action",
            },
        )
        assert made.status_code == 201, made.text
        shown = made.json()
        assert shown["auth"] == {
            "kind": "GITHUB",
            "header": "X-Hub-Signature-256",
            "algorithm": "sha256",
            "encoding": "hex",
            "prefix": "sha256=",
            "username": "",
            "tolerance_s": 0,
        }
        assert SECRET not in made.text and shown["path"].endswith("/rest")
        bad = http.post(
            api,
            json={
                "name": "x",
                "auth": {"kind": "HMAC", "secret": "s"},
                "event_key_expression": "'k'",
            },
        )
        assert bad.status_code == 422 and "header" in bad.json()["error"]["message"]
        assert http.post(api, json={"name": "y", "auth": {"kind": "MD5", "secret": "s"},
                                    "event_key_expression": "'k'"}).status_code == 422  # fmt: skip
        patched = http.patch(f"{api}/rest", json={"scope_expression": "input.repo"})
        assert patched.status_code == 200 and patched.json()["scope_expression"] == "input.repo"
        assert [w["name"] for w in http.get(api).json()["items"]] == ["rest"]
        assert http.get(f"{api}/nope").status_code == 404
        assert http.delete(f"{api}/rest").status_code == 204
        assert http.get(f"{api}/rest").status_code == 404
        # Management needs the token.
        assert httpx.get(api).status_code == 401

    def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stoker", "webhook", *args],
            env={**os.environ, **tenant.env, **env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    made_cli = cli(
        "create", "cli", "--auth", "stripe", "--event-key", "'stripe:' + input.type",
        WEBHOOK_SECRET=SECRET,
    )  # fmt: skip
    assert made_cli.returncode == 0, made_cli.stderr
    printed = json.loads(made_cli.stdout)
    assert printed["auth"]["kind"] == "STRIPE" and printed["auth"]["tolerance_s"] == 300
    assert SECRET not in made_cli.stdout
    assert "cli" in cli("list").stdout
    updated = cli("update", "cli", "--scope", "input.account")
    assert json.loads(updated.stdout)["scope_expression"] == "input.account"
    assert json.loads(updated.stdout)["id"] == printed["id"]
    refused = cli("create", "bad", "--auth", "hmac", "--secret", "s", "--event-key", "input.(")
    assert refused.returncode == 2 and "invalid CEL expression" in refused.stderr
    assert cli("delete", "cli").returncode == 0
    gone = cli("get", "cli")
    assert gone.returncode == 2 and "no webhook named 'cli'" in gone.stderr


@pytest.mark.slow
def test_the_secret_key_rotates(engine_factory: Any, tenant_factory: Any, db_url: str) -> None:
    old_key = base64.b64encode(b"o" * 32).decode()
    new_key = base64.b64encode(b"n" * 32).decode()
    first = engine_factory(db_url, env={"STOKER_WEBHOOK_SECRET_KEY": old_key})
    tenant = tenant_factory(first)
    app = Stoker(address=first.grpc_address, token=tenant.token, connect_timeout=30)
    hook = app.webhooks.create("kept", auth=HMAC(SECRET), event_key_expression="'k'")
    app.close()

    def sealed() -> bytes:
        with psycopg.connect(db_url) as conn:
            row = conn.execute("SELECT secret FROM stoker.webhook").fetchone()
        assert row is not None
        return bytes(row[0])

    before = sealed()
    first.stop()
    # The new key, with the old one kept for reading: the engine re-encrypts at start.
    second = engine_factory(
        db_url,
        env={"STOKER_WEBHOOK_SECRET_KEY": new_key, "STOKER_WEBHOOK_OLD_SECRET_KEYS": old_key},
    )
    after = sealed()
    assert after[1:5] != before[1:5]  # sealed under another key now
    body = b'{"a": 1}'
    answer = _post(second, hook, body, **{"X-Signature": _sign(SECRET, body)})
    assert answer.status_code == 202, answer.text
    second.stop()
    # Only the new key from then on: the secret still opens.
    third = engine_factory(db_url, env={"STOKER_WEBHOOK_SECRET_KEY": new_key})
    assert _post(third, hook, body, **{"X-Signature": _sign(SECRET, body)}).status_code == 202


def test_a_redelivered_webhook_request_makes_one_event(engine: Any, tenant: Any) -> None:
    """Stripe's event id and GitHub's delivery id name a delivery by default; a webhook's
    own dedup_expression can name it otherwise, or be turned off. A delivery received
    again answers with the first one's event (``duplicate``) and stores nothing."""
    app = tenant.client()
    stripe = app.webhooks.create(
        "stripe-dedup", auth=StripeSignature(SECRET), event_key_expression="'stripe:' + input.type"
    )
    assert stripe.dedup_expression == "has(input.id) ? input.id : null"
    first = b'{"id": "evt_7", "type": "charge.succeeded"}'
    retried = b'{"id": "evt_7", "type": "charge.succeeded", "attempt": 2}'
    other = b'{"id": "evt_8", "type": "charge.succeeded"}'
    answers = [
        _post(engine, stripe, b, **{"Stripe-Signature": _stripe_header(SECRET, b, time.time())})
        for b in (first, retried, other)
    ]
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert [a.json()["duplicate"] for a in answers] == [False, True, False]
    assert answers[1].json()["event_id"] == answers[0].json()["event_id"]
    assert answers[2].json()["event_id"] != answers[0].json()["event_id"]
    # Six copies of one delivery at once: one event, the others its duplicates.
    burst = b'{"id": "evt_9", "type": "charge.refunded"}'
    header = {"Stripe-Signature": _stripe_header(SECRET, burst, time.time())}
    with ThreadPoolExecutor(6) as pool:
        copies = list(pool.map(lambda _: _post(engine, stripe, burst, **header), range(6)))
    assert [c.status_code for c in copies] == [202] * 6
    assert len({c.json()["event_id"] for c in copies}) == 1
    assert sorted(c.json()["duplicate"] for c in copies) == [False] + [True] * 5

    github = app.webhooks.create(
        "github-dedup", auth=GitHubSignature(SECRET), event_key_expression="'github:push'"
    )
    body = b'{"ref": "refs/heads/main"}'
    sig = "sha256=" + _sign(SECRET, body)
    ids = [
        _post(engine, github, body, **{"X-Hub-Signature-256": sig, "X-GitHub-Delivery": d})
        .json()["event_id"]
        for d in ("d-1", "d-1", "d-2")
    ]  # fmt: skip
    assert ids[0] == ids[1] != ids[2]

    custom = app.webhooks.create(
        "shop-dedup",
        auth=ApiKey("X-Api-Key", "k-1"),
        event_key_expression="'shop:' + input.kind",
        dedup_expression="input.delivery",
    )
    assert app.webhooks.get("shop-dedup").dedup_expression == "input.delivery"
    posts = [
        b'{"kind": "paid", "delivery": 41}',
        b'{"kind": "paid", "delivery": 41}',
        b'{"kind": "paid", "delivery": null}',  # no delivery id: not deduplicated
        b'{"kind": "paid", "delivery": null}',
    ]
    got = [_post(engine, custom, b, **{"X-Api-Key": "k-1"}).json() for b in posts]
    assert [g["duplicate"] for g in got] == [False, True, False, False]
    off = app.webhooks.update("shop-dedup", dedup_expression=None)
    assert off.dedup_expression is None
    again = _post(engine, custom, posts[0], **{"X-Api-Key": "k-1"}).json()
    assert again["duplicate"] is False and again["event_id"] != got[0]["event_id"]
    odd = app.webhooks.update("shop-dedup", dedup_expression="input")
    bad = _post(engine, odd, posts[0], **{"X-Api-Key": "k-1"})
    assert bad.status_code == 400 and "dedup_expression" in bad.json()["error"]["message"]
    with pytest.raises(InvalidRequestError, match="dedup_expression"):
        app.webhooks.update("shop-dedup", dedup_expression="input.(")
    plain = app.webhooks.create(
        "stripe-plain",
        auth=StripeSignature(SECRET),
        event_key_expression="'stripe:' + input.type",
        dedup_expression=None,
    )
    assert plain.dedup_expression is None

    keys = [e["key"] for e in _events(engine.db_url, tenant.tenant_id)]
    assert keys == (
        ["stripe:charge.succeeded"] * 2 + ["stripe:charge.refunded"] + ["github:push"] * 2
        + ["shop:paid"] * 4
    )  # fmt: skip
    with psycopg.connect(engine.db_url) as conn:
        (kept,) = conn.execute(
            "SELECT min(keep_until - created_at) FROM stoker.trigger_request"
            " WHERE tenant_id = %s AND kind = 'webhook'",
            (tenant.tenant_id,),
        ).fetchone() or (None,)
    assert kept is not None and kept.days == 4
    app.close()
