"""Prometheus metrics, tenant metrics and task stats of a real engine with real workers.

Counters are per process and cumulative, so each test works in a tenant of its own and
reads only the series labelled with it.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stoker import Stoker, TaskRunError
from tests.apps import basic
from tests.apps.basic import Flaky, Greet, Sleep
from tests.harness import EngineProcess, Tenant, WorkerProcess, free_port, wait_until

pytestmark = pytest.mark.timeout(90)


def samples(text: str, tenant: int | None = None) -> dict[tuple[str, str], float]:
    """``{(sample name, task label): value}`` of the series of ``tenant`` (all if None)."""
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if tenant is None or s.labels.get("tenant") == str(tenant):
                out[(s.name, s.labels.get("task", ""))] = s.value
    return out


def scrape(engine: EngineProcess, tenant: int) -> dict[tuple[str, str], float]:
    resp = httpx.get(engine.http_url + "/metrics", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return samples(resp.text, tenant)


def client(tenant: Tenant) -> Stoker:
    return basic.declare(tenant.client())


def test_counters_follow_the_runs_made(
    engine: EngineProcess, tenant: Tenant, worker_factory: Any
) -> None:
    app = client(tenant)
    try:
        worker_factory("tests.apps.basic:app", slots=8)
        for ref in [app.tasks["greet"].run_no_wait(Greet(name=str(i))) for i in range(3)]:
            ref.result(timeout=30)
        app.tasks["flaky"].run_no_wait(Flaky(fail_times=1, key="m")).result(timeout=30)
        with pytest.raises(TaskRunError):
            app.tasks["fails_hard"].run_no_wait(Greet(name="x")).result(timeout=30)
        with pytest.raises(TaskRunError):
            app.tasks["async_too_slow"].run_no_wait(Sleep(seconds=10)).result(timeout=30)
        slow = app.tasks["slow"].run_no_wait(Sleep(seconds=30))
        wait_until(
            lambda: scrape(engine, tenant.tenant_id).get(("stoker_attempts_started_total", "slow")),
            what="the slow run to start",
        )
        app.runs.cancel(slow)
        expected = {
            ("stoker_runs_created_total", "greet"): 3,
            ("stoker_attempts_assigned_total", "greet"): 3,
            ("stoker_attempts_started_total", "greet"): 3,
            ("stoker_runs_succeeded_total", "greet"): 3,
            ("stoker_run_duration_seconds_count", "greet"): 3,
            ("stoker_queue_wait_seconds_count", "greet"): 3,
            ("stoker_runs_created_total", "flaky"): 1,
            ("stoker_attempts_started_total", "flaky"): 2,
            ("stoker_attempts_retried_total", "flaky"): 1,
            ("stoker_runs_succeeded_total", "flaky"): 1,
            ("stoker_runs_failed_total", "fails_hard"): 1,
            ("stoker_attempts_timed_out_total", "async_too_slow"): 2,
            ("stoker_attempts_retried_total", "async_too_slow"): 1,
            ("stoker_runs_failed_total", "async_too_slow"): 1,
            ("stoker_runs_cancelled_total", "slow"): 1,
        }

        def counted() -> bool:
            got = scrape(engine, tenant.tenant_id)
            return all(got.get(k) == v for k, v in expected.items())

        wait_until(counted, 20, "the counters to match the runs made")
        got = scrape(engine, tenant.tenant_id)
        assert got.get(("stoker_runs_failed_total", "greet"), 0) == 0
        assert got.get(("stoker_runs_succeeded_total", "fails_hard"), 0) == 0
        # No label ever names a run.
        text = httpx.get(engine.http_url + "/metrics", timeout=10).text
        assert slow.run_id not in text
        # The engine's own histograms are there too.
        assert samples(text)[("stoker_scheduler_round_seconds_count", "")] > 0
        assert samples(text)[("stoker_flush_seconds_count", "")] > 0
    finally:
        app.close()


def test_queue_depth_and_task_stats_under_a_backlog(
    engine: EngineProcess, tenant_factory: Any
) -> None:
    """No worker serves the tenant: its runs stay queued, and every view of the queue says
    so, read from Postgres."""
    tenant = tenant_factory(engine)
    app = client(tenant)
    try:
        app.tasks["greet"].run_many([Greet(name=str(i)) for i in range(40)])
        app.tasks["echo"].run_many([{"n": i} for i in range(5)])
        auth = {"authorization": f"Bearer {tenant.token}"}

        def depth() -> dict[tuple[str, str], float]:
            return scrape(engine, tenant.tenant_id)

        wait_until(
            lambda: depth().get(("stoker_queue_depth", "greet")) == 40, 15, "the backlog gauge"
        )
        got = depth()
        assert got[("stoker_queue_depth", "echo")] == 5
        assert ("stoker_attempts_running", "greet") not in got  # written only when not 0
        assert got[("stoker_queue_oldest_age_seconds", "greet")] >= 0

        stats = httpx.get(engine.http_url + "/api/v1/task-stats", headers=auth, timeout=10)
        assert stats.status_code == 200, stats.text
        body = stats.json()
        assert body["queued"] == 45 and body["running"] == 0 and body["workers"] == 0
        by_name = {t["task_name"]: t for t in body["tasks"]}
        assert by_name["greet"]["queued"] == 40 and by_name["echo"]["queued"] == 5
        one = httpx.get(engine.http_url + "/api/v1/task-stats/greet", headers=auth, timeout=10)
        assert one.json()["queued"] == 40
        idle = httpx.get(engine.http_url + "/api/v1/task-stats/nothing", headers=auth, timeout=10)
        assert idle.json() == {
            "task_name": "nothing",
            "queued": 0,
            "delayed": 0,
            "running": 0,
            "waiting_for_concurrency": 0,
            "oldest_queued_age_s": 0.0,
        }
    finally:
        app.close()


def test_tenant_metrics_need_the_tenants_token(engine: EngineProcess, tenant_factory: Any) -> None:
    a, b = tenant_factory(engine), tenant_factory(engine)
    app = client(b)
    try:
        app.tasks["greet"].run_many([Greet(name="b")] * 3)
    finally:
        app.close()
    url = engine.http_url + "/api/v1/metrics"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"authorization": "Bearer nope"}, timeout=10).status_code == 401

    def tenant_view(t: Tenant) -> str:
        resp = httpx.get(url, headers={"authorization": f"Bearer {t.token}"}, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.text

    wait_until(
        lambda: samples(tenant_view(b)).get(("stoker_queue_depth", "greet")) == 3,
        15,
        "tenant B's backlog in its own metrics",
    )
    view_b = samples(tenant_view(b))
    assert view_b[("stoker_runs_created_total", "greet")] == 3
    # Every series of a tenant's view is its own; A sees nothing of B.
    for family in text_string_to_metric_families(tenant_view(b)):
        for s in family.samples:
            assert s.labels["tenant"] == str(b.tenant_id)
    assert samples(tenant_view(a), b.tenant_id) == {}


def test_worker_health_port_reports_a_blocked_loop(
    engine: EngineProcess, tenant: Tenant, tmp_path: Any
) -> None:
    port = free_port()
    worker = WorkerProcess(
        "tests.apps.basic:app",
        tenant,
        engine.db_url,
        tmp_path,
        "health",
        slots=2,
        extra_args=["--health-port", str(port), "--max-loop-block", "0.5"],
    )
    app = client(tenant)
    base = f"http://127.0.0.1:{port}"
    try:
        worker.start()
        wait_until(
            lambda: httpx.get(base + "/readyz", timeout=2).status_code == 200,
            what="the worker to report ready",
        )
        healthy = httpx.get(base + "/healthz", timeout=2)
        assert healthy.status_code == 200 and healthy.json()["status"] == "ok"
        app.tasks["greet"].run_no_wait(Greet(name="h")).result(timeout=30)
        # A task that blocks the worker's loop for 3 s: the endpoint, on its own thread,
        # answers meanwhile and says so.
        ref = app.tasks["blocks_loop"].run_no_wait(Sleep(seconds=3))

        def blocked() -> dict[str, Any] | None:
            resp = httpx.get(base + "/healthz", timeout=2)
            return dict(resp.json()) if resp.status_code == 503 else None

        body = wait_until(blocked, 20, "/healthz to report the blocked loop")
        assert body["status"] == "blocked" and body["loop_lag_s"] > 0.5
        ref.result(timeout=30)
        wait_until(
            lambda: httpx.get(base + "/healthz", timeout=2).status_code == 200,
            what="/healthz to recover once the loop turns again",
        )
        got = samples(httpx.get(base + "/metrics", timeout=2).text)
        assert got[("stoker_worker_attempts_started_total", "greet")] == 1
        assert got[("stoker_worker_attempts_finished_total", "greet")] == 1
        assert got[("stoker_worker_attempts_finished_total", "blocks_loop")] == 1
        assert got[("stoker_worker_slots", "")] == 2
        assert got[("stoker_worker_connected", "")] == 1
        assert httpx.get(base + "/nope", timeout=2).status_code == 404
    finally:
        app.close()
        worker.kill()


def test_runs_counted_by_the_metadata_keys_named(
    engine: EngineProcess, engine_factory: Any, worker_factory: Any
) -> None:
    """STOKER_METRICS_METADATA_LABELS=customer: runs created and finished are counted by
    the customer in their metadata, at most two values (then _other); other keys are no
    labels; without the setting there are no such series."""
    from tests.conftest import make_tenant

    labelled = engine_factory(
        env={
            "STOKER_METRICS_METADATA_LABELS": "customer",
            "STOKER_METRICS_METADATA_MAX_VALUES": "2",
        }
    )
    tenant = make_tenant(labelled)
    app = client(tenant)
    try:
        worker_factory("tests.apps.basic:app", slots=8, engine=labelled, tenant=tenant)
        greet = app.tasks["greet"]
        refs = [
            greet.run_no_wait(Greet(name="1"), additional_metadata={"customer": "acme", "x": 1}),
            greet.run_no_wait(Greet(name="2"), additional_metadata={"customer": "acme"}),
            greet.run_no_wait(Greet(name="3"), additional_metadata={"customer": "globex"}),
            greet.run_no_wait(Greet(name="4"), additional_metadata={"customer": "initech"}),
            greet.run_no_wait(Greet(name="5")),
        ]
        for ref in refs:
            ref.result(timeout=30)
        with pytest.raises(TaskRunError):
            app.tasks["fails_hard"].run_no_wait(
                Greet(name="x"), additional_metadata={"customer": "acme"}
            ).result(timeout=30)

        def by_customer() -> dict[tuple[str, str, str, str], float] | None:
            text = httpx.get(labelled.http_url + "/metrics", timeout=10).text
            out: dict[tuple[str, str, str, str], float] = {}
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    if s.name.endswith("_by_metadata_total"):
                        assert set(s.labels) <= {"tenant", "task", "status", "customer"}
                        key = (s.name, s.labels["task"], s.labels.get("status", ""))
                        out[(*key, s.labels["customer"])] = s.value
            finished = [k for k in out if k[0] == "stoker_runs_finished_by_metadata_total"]
            return out if sum(out[k] for k in finished) >= 6 else None

        got = wait_until(by_customer, 20, "the runs counted by customer")
        created, finished = (
            "stoker_runs_created_by_metadata_total",
            ("stoker_runs_finished_by_metadata_total"),
        )
        assert got == {
            (created, "greet", "", "acme"): 2,
            (created, "greet", "", "globex"): 1,
            (created, "greet", "", "_other"): 1,
            (created, "greet", "", ""): 1,
            (created, "fails_hard", "", "acme"): 1,
            (finished, "greet", "COMPLETED", "acme"): 2,
            (finished, "greet", "COMPLETED", "globex"): 1,
            (finished, "greet", "COMPLETED", "_other"): 1,
            (finished, "greet", "COMPLETED", ""): 1,
            (finished, "fails_hard", "FAILED", "acme"): 1,
        }
        # An engine without the setting has no such series.
        assert "_by_metadata" not in httpx.get(engine.http_url + "/metrics", timeout=10).text
    finally:
        app.close()
