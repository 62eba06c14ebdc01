"""Every example in the README runs, as written, against a real engine and worker.

A README code block whose first line is ``# file: NAME.py`` is written to a folder as that
file; :mod:`tests.snippets` serves the modules that declare an app with worker processes
(plus the arguments a ``# worker:`` line gives) and runs every ``run_*.py`` as a user would.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO, create_role, drop_role, role_url
from tests.snippets import examples, run_examples

README = REPO / "README.md"

pytestmark = pytest.mark.timeout(180)


def test_every_readme_example_runs(engine: Any, tenant: Any, tmp_path: Path) -> None:
    files = examples(README)
    assert {"hello.py", "run_hello.py"} <= set(files)
    # Transactional enqueue: the application's database role, mapped to the tenant.
    role = create_role(engine.db_url, tenant.tenant_id)
    try:
        app_db = {"APP_DATABASE_URL": role_url(engine.db_url, role)}
        outputs = run_examples(files, engine, tenant, tmp_path, timeout=120, env=app_db)
    finally:
        drop_role(engine.db_url, role)
    assert outputs["run_hello.py"].strip() == "{'message': 'hello world'}"
    # A 2 s sleep past a 1 s eviction TTL: evicted at once, restored by its timer.
    assert outputs["run_reminders.py"].strip() == "{'reminded': 'ada', 'restored': True}"
    assert outputs["run_signup.py"].splitlines() == [
        "welcome mail to ada@example.com",
        "['welcome mail to cy@example.com', 'welcome mail to di@example.com']",
    ]
    # A process task past its timeout is killed; a thread task runs in its own pool.
    assert outputs["run_executors_cpu.py"].splitlines() == [
        "TaskTimeoutError",
        "stoker-executors_cpu-lookup",
    ]
    # The lifespan's pool reaches the task through two dependencies; the lease is torn down.
    assert outputs["run_deps_shop.py"].splitlines() == [
        "{'sku': 'A1', 'via': 'connection 1', 'pool_open': True}",
        "connection 1",
    ]
    # mock_run: a replaced dependency; a durable sleep that returns at once, recorded.
    assert outputs["run_testing_orders.py"].splitlines() == [
        "120.0",
        "reminded ada@example.com",
        "[86400.0] [('look up', 'ada@example.com')]",
    ]
    # An HTTP push worker behind uvicorn: answered at once, and answered 202 then reported.
    assert outputs["run_push_orders.py"].splitlines() == [
        "{'sku': 'A1', 'total': 19.0}",
        "{'file': 'invoice-7.pdf', 'pages': 3}",
    ]
    # Sticky children ran on their parent's worker.
    assert outputs["run_sticky_media.py"].strip() == "True"
    # A wait_for event condition with a scope and a lookback takes its parcel's earlier scan.
    assert outputs["run_parcels.py"].strip() == "{'at': {'hub': 'York'}, 'scanned': True}"
    # A signed shop callback resumes the durable task; a replayed Stripe signature is refused.
    assert outputs["run_webhooks.py"].splitlines() == [
        "['github', 'shop', 'stripe']",
        "202 payment:settled",
        "{'paid': 30.0, 'picked': False}",
        "202 stripe:invoice.paid cus_9",
        "403 WebhookForbidden",
    ]
    # Logs, a stream read live and again from the start, run events across a retry.
    assert outputs["run_obs_chat.py"].splitlines() == [
        "you said: hello there ",
        "4 chunks",
        "[('queued', 0), ('assigned', 0), ('started', 0), ('retrying', 0), ('queued', 1), "
        "('assigned', 1), ('started', 1), ('finished', 1)]",
        "INFO ctx prompt of 11 characters",
        "INFO chat answered with 4 words",
        "answered with 4 words",
    ]
    # The FastAPI proxy streams the task's chunks to the client.
    assert outputs["run_obs_proxy.py"].splitlines() == ["you", "said:", "hi", "web"]
    # Acting on runs and workers: read, pause, bulk cancel and replay, rate limits.
    lines = outputs["run_thumbnails.py"].splitlines()
    assert lines == [
        "{'size': 64}",
        "COMPLETED {'size': 64} True",
        "1 None",
        "True",
        "COMPLETED 3 3 0",
        "[128, 256, 512]",
        "RateLimitInfo(key='image-api', limit=100, duration_s=60.0, dynamic=False, used=0, "
        f"updated_at={lines[6].split('updated_at=')[1]}",
        "0",
    ]
    assert outputs["run_thumbnails_rest.py"].splitlines() == [
        "True",
        "cancelled",
        "replay 1",
        "True",
    ]


def test_the_readme_curl_example_works_with_the_exported_token(engine: Any, tenant: Any) -> None:
    """The REST API example, run by a shell holding the token as `stoker lite` exports it."""
    text = README.read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("curl ")]
    assert "$STOKER_TOKEN" in line
    assert "export STOKER_TOKEN=" in text  # the README says where the variable comes from
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    env["STOKER_TOKEN"] = tenant.token
    done = subprocess.run(
        ["bash", "-c", f"{line.replace('http://127.0.0.1:7078', engine.http_url)} --fail -sS"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["items"] == []
