"""The Hatchet front door: Hatchet's own Python SDK, unchanged, against a Stoker engine.

A real engine process with ``STOKER_HATCHET_ENABLED=true``, a token from
``stoker token create --hatchet``, a worker process running ``tests/apps/hatchet_app.py``
(plain hatchet-sdk code, configured only by ``HATCHET_CLIENT_*``), and client processes
triggering its tasks. Stoker's REST API sees the same runs.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.harness import (
    REPO,
    EngineProcess,
    create_database,
    drop_database,
    free_port,
    terminate,
    wait_until,
    with_database,
)

if importlib.util.find_spec("hatchet_sdk") is None:
    pytest.skip("hatchet-sdk is not installed (docs/hatchet.md)", allow_module_level=True)

from stoker.engine.hatchet import contracts as hc
from stoker.engine.hatchet import tokens

APP = REPO / "tests" / "apps" / "hatchet_app.py"


@dataclass
class Door:
    """An engine with the front door, and a Hatchet token of one tenant."""

    engine: EngineProcess
    port: int
    token: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def claims(self) -> tokens.HatchetClaims:
        return tokens.decode(self.token)

    def env(self) -> dict[str, str]:
        return {
            "HATCHET_CLIENT_TOKEN": self.token,
            "HATCHET_CLIENT_HOST_PORT": self.address,
            "HATCHET_CLIENT_TLS_STRATEGY": "none",
            "PATH": "/usr/bin:/bin",
        }

    def app(self, *args: str, timeout: float = 90) -> Any:
        """Runs ``hatchet_app.py`` as a client and returns what it printed (JSON)."""
        done = subprocess.run(
            [sys.executable, str(APP), *args],
            env=self.env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def rest(self, path: str) -> Any:
        """A GET of Stoker's own REST API with the API token the Hatchet token carries."""
        request = urllib.request.Request(
            self.engine.http_url + path,
            headers={"authorization": f"Bearer {self.claims.stoker_token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())


@pytest.fixture(scope="module")
def door(
    pg_url: str, engine_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Door]:
    name = create_database(pg_url, engine_template)
    db_url = with_database(pg_url, name)
    port = free_port()
    env = {
        "STOKER_HATCHET_ENABLED": "true",
        "STOKER_HATCHET_PORT": str(port),
        "STOKER_WORKER_DEAD_AFTER_S": "12",
    }
    engine = EngineProcess(db_url, tmp_path_factory.mktemp("hatchet"), env=env).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
        made = subprocess.run(
            [sys.executable, "-m", "stoker", "token", "create", "--tenant", "h1", "--hatchet"],
            env={
                "DATABASE_URL": db_url,
                "PATH": "/usr/bin:/bin",
                "STOKER_HTTP_PORT": str(engine.http_port),
                **env,
            },
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        yield Door(engine, port, made.stdout.strip())
    finally:
        engine.stop()
        drop_database(pg_url, name)


@pytest.fixture(scope="module")
def worker(door: Door, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The Hatchet app's worker process; yields its log file."""
    log = tmp_path_factory.mktemp("hatchet-worker") / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(APP), "worker"],
            env=door.env(),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # Registered: its tasks are declared and its listener is a Stoker worker stream.
        wait_until(
            lambda: any(w["name"] == "hatchet-e2e" for w in door.rest("/api/v1/workers")["items"]),
            90,
            "the Hatchet worker to register",
            log,
        )
        yield log
    finally:
        terminate(proc, grace=10)


def _call(door: Door, token: str) -> grpc.RpcError:
    """GetVersion with ``token``, expected to fail: the error."""
    with grpc.insecure_channel(door.address) as channel:
        stub = hc.dispatcher_grpc.DispatcherStub(channel)
        with pytest.raises(grpc.RpcError) as failed:
            stub.GetVersion(
                hc.dispatcher.GetVersionRequest(),
                metadata=[("authorization", f"Bearer {token}")],
                timeout=10,
            )
    return failed.value


def test_hatchet_token_carries_the_claims_the_sdk_reads(door: Door) -> None:
    claims = door.claims
    uuid.UUID(claims.sub)  # the tenant's id, as Hatchet's REST paths use it
    assert claims.grpc_broadcast_address.endswith(f":{door.port}")
    assert claims.server_url == door.engine.http_url
    assert claims.stoker_token.startswith("stk_")
    with grpc.insecure_channel(door.address) as channel:
        stub = hc.dispatcher_grpc.DispatcherStub(channel)
        answer = stub.GetVersion(
            hc.dispatcher.GetVersionRequest(),
            metadata=[("authorization", f"Bearer {door.token}")],
            timeout=10,
        )
    assert answer.version.startswith("v0.")


def test_a_malformed_hatchet_token_is_rejected_with_the_reason(door: Door) -> None:
    head, body, signature = door.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged = base64.urlsafe_b64encode(
        json.dumps({**claims, "sub": str(uuid.uuid4())}).encode()
    ).rstrip(b"=")
    missing = base64.urlsafe_b64encode(json.dumps({"sub": claims["sub"]}).encode()).rstrip(b"=")
    cases = {
        "not-a-jwt": "3 dot-separated parts",
        f"{head}.{forged.decode()}.{signature}": "signature does not match",
        f"{head}.{missing.decode()}.{signature}": "stoker_token missing",
        f"{head}.!!!.{signature}": "not base64url",
    }
    for token, reason in cases.items():
        error = _call(door, token)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, token
        assert reason in (error.details() or ""), (token, error.details())
    # A well-formed token whose API token is unknown is refused too.
    other = tokens.encode(tokens.HatchetClaims(claims["sub"], "http://x", "x:1", "stk_unknown"))
    assert "unknown" in (_call(door, other).details() or "")


def test_unsupported_calls_answer_unimplemented_naming_the_feature(door: Door) -> None:
    auth = [("authorization", f"Bearer {door.token}")]
    with grpc.insecure_channel(door.address) as channel:
        events = hc.events_grpc.EventsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as logged:
            events.PutLog(hc.events.PutLogRequest(message="hello"), metadata=auth)
        assert logged.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "task logs (ctx.log)" in (logged.value.details() or "")
        admin = hc.v1_workflows_grpc.AdminServiceStub(channel)
        cron = hc.v1_workflows.CreateWorkflowVersionRequest(
            name="hatchet-cron",
            cron_triggers=["* * * * *"],
            tasks=[hc.v1_workflows.CreateTaskOpts(readable_id="a", action="hatchet-cron:a")],
        )
        with pytest.raises(grpc.RpcError) as declared:
            admin.PutWorkflow(cron, metadata=auth)
        assert declared.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "cron triggers (on_crons)" in (declared.value.details() or "")


def test_a_hatchet_task_runs_on_a_hatchet_worker_and_stoker_sees_the_run(
    door: Door, worker: Path
) -> None:
    answer = door.app("run", "hatchet_upper", '{"message": "hi"}')
    assert answer["output"] == {"upper": "HI", "attempt": 0}, answer
    run = door.rest(f"/api/v1/runs/{answer['run_id']}")
    assert run["task_name"] == "hatchet_upper:hatchet_upper"
    assert run["status"] == "COMPLETED"
    assert run["output"] == {"upper": "HI", "attempt": 0}
    assert run["input"] == {"message": "hi"}
    workers = door.rest("/api/v1/workers")
    names = [w["name"] for w in workers["items"]]
    assert "hatchet-e2e" in names, workers


def test_retries_and_failures_travel_as_hatchet_reports_them(door: Door, worker: Path) -> None:
    flaky = door.app("run", "hatchet_flaky", '{"message": "again"}')
    assert flaky["output"] == {"upper": "AGAIN", "attempt": 2}, flaky
    broken = door.app("run", "hatchet_broken", '{"message": "loud"}')
    assert broken["error"] == "FailedTaskRunExceptionGroup", broken
    assert "ValueError: cannot shout loud" in broken["message"]
    run = door.rest(f"/api/v1/runs/{broken['run_id']}")
    assert run["status"] == "FAILED"
    assert run["error"]["type"] == "ValueError"
    assert run["error"]["message"] == "cannot shout loud"


def test_bulk_trigger_runs_every_item(door: Door, worker: Path) -> None:
    outputs = door.app("bulk", "hatchet_upper", '{"message": "a"}', '{"message": "b"}')
    assert outputs == [{"upper": "A", "attempt": 0}, {"upper": "B", "attempt": 0}]


def test_aio_run_awaits_results_by_subscription(door: Door, worker: Path) -> None:
    outputs = door.app("aio", "hatchet_upper", '{"message": "x"}', '{"message": "y"}')
    assert outputs == [{"upper": "X", "attempt": 0}, {"upper": "Y", "attempt": 0}]
    failed = door.app("aio", "hatchet_broken", '{"message": "z"}')
    assert failed["error"] == "FailedTaskRunExceptionGroup", failed
    assert "ValueError: cannot shout z" in failed["message"]


def test_refresh_timeout_adds_to_the_deadline_as_in_hatchet(door: Door, worker: Path) -> None:
    # A 4 s timeout refreshed by 4 s at the start, then 6 s of work: it fits only if the
    # deadline moved to 8 s. Without the refresh, or with Stoker's own meaning (4 s from
    # the refresh), the attempt would time out and the run fail (no retries).
    answer = door.app("run", "hatchet_slow", '{"message": "late"}')
    assert answer.get("output") == {"upper": "LATE", "attempt": 0}, answer
    run = door.rest(f"/api/v1/runs/{answer['run_id']}")
    assert run["status"] == "COMPLETED"


def test_an_event_push_starts_the_tasks_subscribed_to_its_key(door: Door, worker: Path) -> None:
    pushed = door.app("push", "hatchet:shout", '{"message": "event"}')
    assert pushed["key"] == "hatchet:shout"

    def started() -> list[Any]:
        page = door.rest("/api/v1/runs?task_name=hatchet_on_shout:hatchet_on_shout")
        return [r for r in page["items"] if r["status"] == "COMPLETED"]

    runs = wait_until(started, 60, "the event's run to complete", worker)
    run = door.rest(f"/api/v1/runs/{runs[0]['run_id']}")
    assert run["input"] == {"message": "event"}
    assert run["output"] == {"upper": "EVENT", "attempt": 0}
    event = door.rest(f"/api/v1/events/{pushed['event_id']}")
    assert [r["run_id"] for r in event["runs"]] == [run["run_id"]], event


def test_a_dag_workflow_runs_its_tasks_after_their_parents(door: Door, worker: Path) -> None:
    answer = door.app("dag", '{"message": "dag"}')
    assert answer["output"] == {
        "shout": {"upper": "DAG", "attempt": 0},
        "exclaim": {"upper": "DAG!", "attempt": 0},
    }, answer
    run = door.rest(f"/api/v1/workflow-runs/{answer['run_id']}")
    assert run["workflow_name"] == "hatchet_dag"
    assert run["status"] == "COMPLETED"
    steps = {s["step"]: s for s in run["steps"]}
    assert steps["exclaim"]["parents"] == ["shout"]
    assert steps["exclaim"]["task_name"] == "hatchet_dag:exclaim"
    assert steps["exclaim"]["output"] == {"upper": "DAG!", "attempt": 0}


def test_a_concurrency_key_runs_one_at_a_time(door: Door, worker: Path) -> None:
    # Two runs with the same key (max_runs 1) on a worker with free slots: one after the
    # other. A third with another key is not held back by them.
    spans = door.app(
        "bulk",
        "hatchet_one_at_a_time",
        '{"message": "k"}',
        '{"message": "k"}',
        '{"message": "other"}',
    )
    first, second = sorted(spans[:2], key=lambda s: s["started"])
    assert second["started"] >= first["finished"], spans
    assert spans[2]["started"] < max(first["finished"], second["finished"]), spans


def test_a_static_rate_limit_spaces_the_runs_out(door: Door, worker: Path) -> None:
    # One unit per second, made with hatchet.rate_limits.put; three runs that take one unit
    # each cannot all start within the first second.
    assert door.app("rate-limit", "hatchet-rl", "1") == {"key": "hatchet-rl"}
    spans = door.app("bulk", "hatchet_rate_limited", *['{"message": "r"}'] * 3)
    starts = sorted(s["started"] for s in spans)
    assert starts[2] - starts[0] >= 1.0, starts


def test_a_task_spawns_child_runs_keyed_as_in_hatchet(door: Door, worker: Path) -> None:
    answer = door.app("run", "hatchet_parent", '{"message": "kid"}')
    assert answer["output"] == {"upper": "KID|KID|KID2", "attempt": 0}, answer
    page = door.rest("/api/v1/runs?task_name=hatchet_upper:hatchet_upper&limit=500")
    mine = [r for r in page["items"] if r["status"] == "COMPLETED"]
    children = [door.rest(f"/api/v1/runs/{r['run_id']}") for r in mine]
    kids = [c for c in children if c["input"]["message"] in ("kid", "kid2")]
    # The key "first" made one child, however often it was spawned.
    assert sorted(c["input"]["message"] for c in kids) == ["kid", "kid2"], kids


def test_additional_metadata_reaches_the_task(door: Door, worker: Path) -> None:
    seen = door.app("meta", "hatchet_metadata", '{"message": "m"}', '{"team": "blue"}')
    assert seen["metadata"].get("team") == "blue", seen


def test_a_non_retryable_exception_uses_no_retry(door: Door, worker: Path) -> None:
    answer = door.app("run", "hatchet_gives_up", '{"message": "once"}')
    assert answer["error"] == "FailedTaskRunExceptionGroup", answer
    assert "no point retrying once" in answer["message"]
    run = door.rest(f"/api/v1/runs/{answer['run_id']}")
    assert run["status"] == "FAILED"
    assert run["retry_count"] == 0, run


def test_a_scheduled_run_fires_when_due(door: Door, worker: Path) -> None:
    scheduled = door.app("schedule", "hatchet_upper", '{"message": "later"}', "2")
    (schedule_id,) = scheduled["ids"]
    shown = door.rest(f"/api/v1/schedules/{schedule_id}")
    assert shown["task_name"] == "hatchet_upper:hatchet_upper"

    def fired() -> Any:
        row = door.rest(f"/api/v1/schedules/{schedule_id}")
        return row if row["run_id"] else None

    row = wait_until(fired, 60, "the scheduled run to fire", worker)
    run = wait_until(
        lambda: (r := door.rest(f"/api/v1/runs/{row['run_id']}"))["status"] == "COMPLETED" and r,
        60,
        "the scheduled run to complete",
        worker,
    )
    assert run["output"] == {"upper": "LATER", "attempt": 0}


def test_an_on_failure_task_runs_when_the_workflow_fails(door: Door, worker: Path) -> None:
    answer = door.app("fragile", '{"message": "vase"}')
    assert answer["error"] == "FailedTaskRunExceptionGroup", answer
    assert "ValueError: vase broke" in answer["message"]

    def finished() -> Any:
        run = door.rest(f"/api/v1/workflow-runs/{answer['run_id']}")
        return run if all(s["status"] in ("COMPLETED", "FAILED") for s in run["steps"]) else None

    run = wait_until(finished, 30, "the on_failure step to finish", worker)
    assert run["status"] == "FAILED"
    steps = {s["step"]: s for s in run["steps"]}
    assert steps["breaks"]["status"] == "FAILED"
    # Hatchet names an on-failure task after its function, with "-on-failure".
    assert steps["tidy_up-on-failure"]["status"] == "COMPLETED"
    seen = steps["tidy_up-on-failure"]["output"]["metadata"]
    assert "ValueError: vase broke" in seen["breaks"], seen
