"""Delivery guarantees under failure: processes are killed, paused and restarted."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from stoker import AuthenticationError, EngineUnavailableError, Stoker
from stoker._proto import engine_pb2 as pb
from tests.apps import basic
from tests.apps.basic import Greet, Sleep
from tests.harness import WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def app(engine: Any, tenant: Any) -> Stoker:
    return basic.declare(
        Stoker(address=engine.grpc_address, token=tenant.token, connect_timeout=30)
    )


def query(db_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(sql, args).fetchall()


def status_of(db_url: str, run_id: str) -> str:
    return str(
        query(db_url, "SELECT status FROM stoker.task WHERE external_id = %s", run_id)[0]["status"]
    )


def test_killed_worker_tasks_are_requeued_to_another_worker(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    doomed = worker_factory("tests.apps.basic:app", slots=4, name="doomed")
    ref = app.tasks["slow"].run_no_wait(Sleep(seconds=1.5, tag="x"))
    wait_until(lambda: status_of(engine.db_url, ref.run_id) == "RUNNING", what="the run to start")
    doomed.kill()
    worker_factory("tests.apps.basic:app", slots=4, name="survivor")
    out = ref.result(timeout=60)
    assert out["pid"] != doomed.pid
    assert out["attempt"] == 1
    row = query(
        engine.db_url,
        "SELECT attempt, retry_count FROM stoker.task WHERE external_id = %s",
        ref.run_id,
    )[0]
    assert row == {"attempt": 1, "retry_count": 0}  # a lost worker does not use up a retry
    kinds = [
        e["kind"]
        for e in query(
            engine.db_url,
            "SELECT e.kind FROM stoker.task_event e JOIN stoker.task t ON t.id = e.task_id"
            " WHERE t.external_id = %s",
            ref.run_id,
        )
    ]
    assert kinds == ["WORKER_LOST"]


def test_late_result_of_a_requeued_attempt_is_ignored(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    paused = worker_factory("tests.apps.basic:app", slots=1, name="paused")
    ref = app.tasks["slow"].run_no_wait(Sleep(seconds=1.0, tag="late"))
    wait_until(lambda: status_of(engine.db_url, ref.run_id) == "RUNNING", what="the run to start")
    os.kill(paused.pid, signal.SIGSTOP)  # alive but silent: no heartbeats, no results
    try:
        other = worker_factory("tests.apps.basic:app", slots=1, name="other")
        out = ref.result(timeout=60)
        assert out["attempt"] == 1 and out["pid"] == other.pid
        before = ignored(engine)
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    # The paused worker wakes up and comes back with attempt 0: still running (a claim at
    # registration) or finished (a late completion). Either is ignored and counted; the
    # engine must keep attempt 1's output.
    wait_until(lambda: ignored(engine) > before, what="the late report to be ignored")
    row = query(
        engine.db_url,
        "SELECT status, attempt, output FROM stoker.task WHERE external_id = %s",
        ref.run_id,
    )[0]
    assert (
        row["status"] == "COMPLETED" and row["attempt"] == 1 and row["output"]["pid"] == other.pid
    )


def ignored(engine: Any) -> float:
    """How many worker messages the engine ignored (GET /metrics), whatever the reason."""
    with urllib.request.urlopen(engine.http_url + "/metrics", timeout=5) as resp:
        body = resp.read().decode()
    return sum(
        float(m)
        for m in re.findall(r"^stoker_worker_messages_rejected_total\S* (\S+)$", body, re.M)
    )


def test_stopped_worker_reports_what_finished_and_hands_back_the_rest(
    app: Stoker, engine: Any, tenant: Any, worker_factory: Any, tmp_path: Path
) -> None:
    stopping = WorkerProcess(
        "tests.apps.basic:app", tenant, engine.db_url, tmp_path, "stopping", slots=4,
        extra_args=["--grace", "2"],
    ).start()  # fmt: skip
    try:
        long = app.tasks["slow"].run_no_wait(Sleep(seconds=6, tag="long"))
        short = app.tasks["sync_sleep"].run_no_wait(Sleep(seconds=1, tag="short"))
        for ref in (long, short):
            wait_until(lambda r=ref: status_of(engine.db_url, r.run_id) == "RUNNING", what="starts")
        stopping.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        # The sync task finishes within the grace period and is reported.
        assert short.result(timeout=30) == {"pid": stopping.pid, "attempt": 0, "tag": "short"}
        # The long one is handed back at once: queued again, no retry used up.
        assert stopping.proc.wait(timeout=20) == 0  # type: ignore[union-attr]
        wait_until(
            lambda: (
                query(
                    engine.db_url,
                    "SELECT status, attempt, retry_count FROM stoker.task WHERE external_id = %s",
                    long.run_id,
                )
                == [{"status": "QUEUED", "attempt": 1, "retry_count": 0}]
            ),
            timeout=10,  # far sooner than its 60 s execution timeout or a dead-worker check
            what="the long task to be handed back",
        )
        log = stopping.log_path.read_text()
        assert "waiting up to 2s for 2 running task(s) to finish" in log
        assert "handing back 1 unfinished task(s) to the engine: slow" in log
    finally:
        stopping.kill()
    other = worker_factory("tests.apps.basic:app", slots=1, name="takes-over")
    assert long.result(timeout=60) == {"pid": other.pid, "attempt": 1, "tag": "long"}
    kinds = query(
        engine.db_url,
        "SELECT e.kind FROM stoker.task_event e JOIN stoker.task t ON t.id = e.task_id"
        " WHERE t.external_id = %s",
        long.run_id,
    )
    assert [k["kind"] for k in kinds] == ["WORKER_STOPPED"]


def test_a_worker_stopped_while_work_arrives_loses_and_repeats_nothing(
    app: Stoker, engine: Any, tenant: Any, worker_factory: Any, tmp_path: Path
) -> None:
    """SIGTERM a busy worker while new runs keep arriving: what it holds is handed back at
    once (nothing stays ASSIGNED to it), and every run ends COMPLETED, run again only if it
    was handed back."""
    stopping = WorkerProcess(
        "tests.apps.basic:app", tenant, engine.db_url, tmp_path, "stopping", slots=6,
        extra_args=["--grace", "0.5"],
    ).start()  # fmt: skip
    refs: list[Any] = []
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set() and len(refs) < 120:
            refs.extend(app.tasks["slow"].run_many([Sleep(seconds=0.1, tag="a")] * 3))
            stop.wait(0.05)

    def completed() -> int:
        sql = "SELECT count(*) AS n FROM stoker.task WHERE status = 'COMPLETED' AND tenant_id = %s"
        return int(query(engine.db_url, sql, tenant.tenant_id)[0]["n"])

    producer = threading.Thread(target=produce)
    try:
        long = app.tasks["slow"].run_no_wait(Sleep(seconds=6, tag="long"))
        wait_until(lambda: status_of(engine.db_url, long.run_id) == "RUNNING", what="the start")
        steady = worker_factory("tests.apps.basic:app", slots=8, name="steady")
        producer.start()
        wait_until(lambda: completed() >= 10, what="both workers to be busy")
        stopping.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert stopping.proc.wait(timeout=30) == 0  # type: ignore[union-attr]
        # Handed back at once, well before a dead-worker timeout (3 s).
        held = (
            "SELECT count(*) AS n FROM stoker.task_runtime r"
            " JOIN stoker.worker w ON w.id = r.worker_id WHERE w.external_id = %s"
        )
        wait_until(
            lambda: query(engine.db_url, held, stopping.worker_id)[0]["n"] == 0,
            timeout=2,
            what="the stopped worker's attempts to be handed back",
        )
    finally:
        stop.set()
        producer.join()
        stopping.kill()
    assert long.result(timeout=60)["pid"] == steady.pid
    assert all(r.result(timeout=60)["tag"] == "a" for r in refs)
    ids = [r.run_id for r in [long, *refs]]
    rows = query(
        engine.db_url,
        "SELECT status, count(*) AS n FROM stoker.task WHERE external_id = ANY(%s::uuid[])"
        " GROUP BY status",
        ids,
    )
    assert rows == [{"status": "COMPLETED", "n": len(ids)}]
    # A hand-back is the only reason to run again: no attempt lost, failed or timed out.
    kinds = query(
        engine.db_url,
        "SELECT DISTINCT e.kind FROM stoker.task_event e JOIN stoker.task t ON t.id = e.task_id"
        " WHERE t.external_id = ANY(%s::uuid[])",
        ids,
    )
    assert {k["kind"] for k in kinds} <= {"WORKER_STOPPED", "ASSIGNMENT_LOST"}


def test_an_attempt_left_on_a_stopped_worker_is_requeued(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    """A worker that left cleanly while still named on an attempt (its hand-back was never
    written) sends no heartbeats to miss: the leader's sweep requeues the attempt."""
    gone = worker_factory("tests.apps.basic:app", slots=1, name="gone")
    ref = app.tasks["slow"].run_no_wait(Sleep(seconds=2, tag="orphan"))
    wait_until(lambda: status_of(engine.db_url, ref.run_id) == "RUNNING", what="the run to start")
    gone.kill()
    # What a clean close leaves when its hand-back cannot be written: the worker STOPPED
    # (no longer watched for heartbeats), its attempt still held by it.
    with psycopg.connect(engine.db_url) as conn:
        conn.execute(
            "UPDATE stoker.worker SET status = 'STOPPED' WHERE external_id = %s", [gone.worker_id]
        )
    other = worker_factory("tests.apps.basic:app", slots=1, name="other")
    assert ref.result(timeout=30) == {"pid": other.pid, "attempt": 1, "tag": "orphan"}
    events = query(
        engine.db_url,
        "SELECT e.kind, e.data->'error'->>'message' AS message FROM stoker.task_event e"
        " JOIN stoker.task t ON t.id = e.task_id WHERE t.external_id = %s",
        ref.run_id,
    )
    assert events == [
        {"kind": "WORKER_LOST", "message": "the worker left without handing the attempt back"}
    ]


def test_a_second_stop_signal_hands_back_at_once(
    app: Stoker, engine: Any, tenant: Any, tmp_path: Path
) -> None:
    stopping = WorkerProcess(
        "tests.apps.basic:app", tenant, engine.db_url, tmp_path, "impatient", slots=2,
        extra_args=["--grace", "60"],
    ).start()  # fmt: skip
    try:
        ref = app.tasks["sync_sleep"].run_no_wait(Sleep(seconds=120, tag="stuck"))
        wait_until(lambda: status_of(engine.db_url, ref.run_id) == "RUNNING", what="the start")
        stopping.proc.send_signal(signal.SIGINT)  # type: ignore[union-attr]
        wait_until(
            lambda: "waiting up to 60s" in stopping.log_path.read_text(), what="the first stop"
        )
        stopping.proc.send_signal(signal.SIGINT)  # type: ignore[union-attr]
        # It exits at once, without waiting for the sync task's thread, and hands it back.
        assert stopping.proc.wait(timeout=15) == 0  # type: ignore[union-attr]
        wait_until(lambda: status_of(engine.db_url, ref.run_id) == "QUEUED", 10, "the hand-back")
        assert "handing back 1 unfinished task(s)" in stopping.log_path.read_text()
    finally:
        stopping.kill()


def test_a_task_that_finishes_while_the_engine_is_away_runs_once(
    engine_factory: Any, tenant_factory: Any, worker_factory: Any, tmp_path: Path
) -> None:
    eng = engine_factory()
    ten = tenant_factory(eng)
    worker = worker_factory("tests.apps.basic:app", slots=2, engine=eng, tenant=ten)
    client = basic.declare(Stoker(address=eng.grpc_address, token=ten.token, connect_timeout=60))
    done = tmp_path / "done"
    ref = client.tasks["marks_done"].run_no_wait(Sleep(seconds=1, tag=str(done)))
    wait_until(lambda: status_of(eng.db_url, ref.run_id) == "RUNNING", what="the run to start")
    eng.kill()
    wait_until(done.exists, what="the task to finish while no engine runs")
    eng.start()
    # The worker comes back with the result it could not deliver; the attempt is not taken
    # for lost (which would run the task a second time).
    assert ref.result(timeout=60) == {"pid": worker.pid, "attempt": 0}
    kinds = query(
        eng.db_url,
        "SELECT e.kind FROM stoker.task_event e JOIN stoker.task t ON t.id = e.task_id"
        " WHERE t.external_id = %s",
        ref.run_id,
    )
    assert kinds == []


def test_engine_killed_mid_drain_loses_nothing(
    app: Stoker, engine_factory: Any, tenant_factory: Any, worker_factory: Any
) -> None:
    eng = engine_factory()
    ten = tenant_factory(eng)
    client = basic.declare(Stoker(address=eng.grpc_address, token=ten.token, connect_timeout=60))
    refs = client.tasks["slow"].run_many([Sleep(seconds=0.05, tag=str(i)) for i in range(300)])
    worker_factory("tests.apps.basic:app", slots=20, engine=eng, tenant=ten)
    wait_until(
        lambda: (
            query(eng.db_url, "SELECT count(*) AS n FROM stoker.task WHERE status = 'COMPLETED'")[
                0
            ]["n"]
            > 30
        ),
        what="some runs to complete",
    )
    eng.kill()
    eng.restart()
    outs = [r.result(timeout=90) for r in refs]
    assert sorted(o["tag"] for o in outs) == sorted(str(i) for i in range(300))
    rows = query(eng.db_url, "SELECT status, count(*) AS n FROM stoker.task GROUP BY status")
    assert rows == [{"status": "COMPLETED", "n": 300}]
    assert query(eng.db_url, "SELECT count(*) AS n FROM stoker.task_runtime")[0]["n"] == 0


def test_invalid_or_missing_token_is_rejected(engine: Any) -> None:
    bad = basic.declare(Stoker(address=engine.grpc_address, token="stk_not-a-token"))
    with pytest.raises(AuthenticationError, match="invalid API token"):
        bad.tasks["greet"].run_no_wait(Greet(name="x"))
    channel = grpc.insecure_channel(engine.grpc_address)
    from stoker._proto import engine_pb2_grpc as pb_grpc

    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.EngineStub(channel).Trigger(pb.TriggerRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "missing API token" in (info.value.details() or "")
    channel.close()


def test_unreachable_engine_raises_a_clear_error_after_retrying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = basic.declare(Stoker(address=f"127.0.0.1:{port}", token="stk_x", connect_timeout=1.5))
    t0 = time.monotonic()
    with caplog.at_level("WARNING", logger="stoker.client"):
        with pytest.raises(EngineUnavailableError, match=f"127.0.0.1:{port}.*is it running"):
            app.tasks["greet"].run_no_wait(Greet(name="x"))
    assert time.monotonic() - t0 >= 1.0  # it retried before giving up
    # ...and said so while it waited, once (not on every attempt).
    retrying = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retrying) == 1, retrying
    assert f"engine at 127.0.0.1:{port} is unreachable" in retrying[0]
    assert re.search(r"retrying for up to [12]s more", retrying[0]), retrying[0]


def test_garbage_on_the_wire_does_not_take_the_engine_down(
    app: Stoker, engine: Any, tenant: Any, worker_factory: Any
) -> None:
    host, port = engine.grpc_address.split(":")
    for junk in (b"\x00" * 64, b"GET / HTTP/1.1\r\n\r\n", os.urandom(4096)):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(junk)
    channel = grpc.insecure_channel(engine.grpc_address)
    raw = channel.unary_unary("/stoker.v1.Engine/Trigger")
    with pytest.raises(grpc.RpcError) as info:
        raw(
            b"\xff\xfe not a protobuf",
            metadata=(("authorization", f"Bearer {tenant.token}"),),
            timeout=5,
        )
    # gRPC itself rejects a message that does not parse, before any handler runs.
    assert "Wire format was corrupt" in (info.value.details() or "")
    too_big = pb.TriggerRequest(
        # Over the 4 MiB payload limit, within the message limit (payload + 1 MiB).
        items=[pb.TriggerItem(task_name="greet", input=b'"' + b"x" * (4 * 1024 * 1024) + b'"')]
    )
    stub = channel.unary_unary(
        "/stoker.v1.Engine/Trigger", request_serializer=lambda m: m.SerializeToString()
    )
    app.register()
    with pytest.raises(grpc.RpcError) as info:
        stub(too_big, metadata=(("authorization", f"Bearer {tenant.token}"),), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over the limit" in (info.value.details() or "")
    channel.close()
    worker_factory("tests.apps.basic:app", slots=2)
    assert app.tasks["greet"].run(Greet(name="still here"))["message"] == "hello still here"
