"""Executors: sync tasks in a worker's subprocesses (``executor="process"``) and in
per-task thread pools (``executor="thread"``), in a real worker process.

One worker (2 slots, so 2 subprocesses) serves the whole module."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stoker import Stoker, TaskRunError
from tests.harness import REPO, WorkerProcess, _env, wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def tenant(engine: Any) -> Any:
    from tests.conftest import make_tenant

    return make_tenant(engine)


@pytest.fixture(scope="module")
def worker(engine: Any, tenant: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    proc = WorkerProcess(
        "tests.apps.procs:app",
        tenant,
        engine.db_url,
        tmp_path_factory.mktemp("procs"),
        "procs",
        slots=2,
        extra_args=["--executor", "process"],
    ).start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def app(engine: Any, tenant: Any, worker: Any) -> Iterator[Stoker]:
    client = Stoker(address=engine.grpc_address, token=tenant.token, connect_timeout=30)
    yield client
    client.close()


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, killed but not reaped, is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def failures(db_url: str, run_id: str) -> list[dict[str, Any]]:
    with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(
            "SELECT e.attempt, e.kind, e.data->'error'->>'type' AS type,"
            " e.data->'error'->>'message' AS message FROM stoker.task_event e"
            " JOIN stoker.task t ON t.id = e.task_id WHERE t.external_id = %s"
            " AND e.kind = 'FAILED' ORDER BY e.id",
            (run_id,),
        ).fetchall()


def test_cpu_bound_tasks_run_in_parallel_subprocesses(app: Stoker, worker: Any) -> None:
    refs = [app.run_no_wait("burn", {"seconds": 1.0}) for _ in range(2)]
    a, b = (ref.result(timeout=60) for ref in refs)
    assert a["pid"] != b["pid"]
    assert worker.pid not in (a["pid"], b["pid"])
    # Each burned a second of CPU; on two cores they overlapped in time.
    assert a["start"] < b["end"] and b["start"] < a["end"]
    # The subprocesses are kept for the next attempts.
    again = app.run("burn", {"seconds": 0.01})
    assert again["pid"] in (a["pid"], b["pid"])


def test_a_cancelled_task_is_stopped_mid_computation(
    app: Stoker, worker: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "pid"
    ref = app.run_no_wait("burn", {"seconds": 60, "marker": str(marker)})
    pid = int(wait_until(lambda: marker.exists() and marker.read_text(), what="the task to start"))
    started = time.monotonic()
    app.runs.cancel(ref.run_id)
    wait_until(lambda: not alive(pid), timeout=10, what="the subprocess to be killed")
    assert time.monotonic() - started < 1.0
    # The worker keeps serving, on a new subprocess.
    assert app.run("burn", {"seconds": 0.01})["pid"] != pid


def test_a_cancelled_task_sees_is_cancelled_and_may_return(
    app: Stoker, worker: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "pid"
    ref = app.run_no_wait("polite", {"seconds": 60, "marker": str(marker)})
    wait_until(lambda: marker.exists() and marker.read_text(), what="the task to start")
    app.runs.cancel(ref.run_id)
    note = Path(str(marker) + ".cancelled")
    wait_until(note.exists, timeout=10, what="the body to see ctx.is_cancelled")
    assert note.read_text() != ""  # the reason
    # Returning within the grace period keeps the subprocess for the next attempt (on a
    # machine too busy to return in 0.25 s it is killed and replaced instead).
    assert app.run("polite", {"seconds": 0, "marker": str(marker)})["pid"] > 0


@pytest.mark.parametrize(("how", "says"), [("exit", "exited with code 3"), ("segv", "SIGSEGV")])
def test_a_crashing_subprocess_fails_the_attempt_and_is_retried(
    app: Stoker, engine: Any, worker: Any, how: str, says: str
) -> None:
    ref = app.run_no_wait("crash", {"how": how, "until_attempt": 1})
    out = ref.result(timeout=60)
    assert out["attempt"] == 1  # attempts count from 0
    [first] = failures(engine.db_url, ref.run_id)
    assert first["attempt"] == 0 and first["type"] == "SubprocessCrashedError"
    assert says in first["message"] and "'crash'" in first["message"]
    assert worker.proc.poll() is None  # the worker itself is fine


def test_errors_raised_in_a_subprocess_keep_their_type_and_retry_policy(app: Stoker) -> None:
    with pytest.raises(TaskRunError) as info:
        app.run("crash", {"how": "raise"})
    assert info.value.error_type == "NonRetryableError"
    assert info.value.error_message == "refused in a subprocess"
    assert "procs.py" in info.value.remote_traceback
    with pytest.raises(TaskRunError) as bad_input:
        app.run("crash", {"how": 5})
    assert bad_input.value.error_type == "InputValidationError"


def test_an_output_that_cannot_cross_the_boundary_is_a_clear_error(app: Stoker) -> None:
    with pytest.raises(TaskRunError) as info:
        app.run("unsendable", {})
    assert info.value.error_type == "OutputSerializationError"
    assert "could not be serialized to JSON" in info.value.error_message


def test_refresh_timeout_from_a_subprocess_keeps_the_attempt_alive(app: Stoker) -> None:
    assert app.run("refreshing", {"seconds": 2.0})["pid"] > 0


def test_an_execution_timeout_kills_the_subprocess(
    app: Stoker, worker: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "pid"
    ref = app.run_no_wait("overrun", {"seconds": 60, "marker": str(marker)})
    with pytest.raises(TaskRunError) as info:
        ref.result(timeout=30)
    assert info.value.error_type == "TaskTimeoutError"
    wait_until(lambda: not alive(int(marker.read_text())), timeout=5, what="the kill")


def test_logs_and_stream_chunks_cross_from_the_subprocess(app: Stoker, worker: Any) -> None:
    ref = app.run_no_wait("chatty", {"n": 3})
    pid = ref.result(timeout=60)["pid"]
    assert pid != worker.proc.pid
    lines: list[Any] = []

    def logged() -> bool:
        lines[:] = app.runs.logs(ref.run_id)
        return len(lines) >= 3

    wait_until(logged, 20, "the subprocess's three log lines")
    assert [(line.level, line.message) for line in lines] == [
        ("WARNING", f"line {i} from {pid}") for i in range(3)
    ]

    async def chunks() -> list[str | bytes]:
        return [c async for c in app.runs.stream(ref.run_id)]

    assert asyncio.run(chunks()) == ["c0", "c1", "c2"]


def test_logging_records_in_a_subprocess_are_captured_like_a_threads(
    app: Stoker, worker: Any
) -> None:
    tag = uuid.uuid4().hex[:8]
    ref = app.run_no_wait("logs_in_subprocess", {"tag": tag})
    assert ref.result(timeout=60)["pid"] != worker.proc.pid
    lines: list[Any] = []

    def logged() -> bool:
        lines[:] = app.runs.logs(ref.run_id)
        return len(lines) >= 4

    wait_until(logged, 20, "the subprocess's four log lines")
    got = [(line.level, line.logger, line.message.splitlines()[0]) for line in lines]
    assert got == [
        ("INFO", "app.proc", f"info {tag}"),
        ("INFO", "", f"ctx {tag}"),
        ("WARNING", "app.proc.thread", f"thread {tag}"),
        ("ERROR", "app.proc", f"failed {tag}"),
    ]
    assert "ValueError: boom" in lines[3].message and "Traceback" in lines[3].message
    assert lines[0].at <= lines[3].at


def test_thread_executor_and_worker_default(app: Stoker, worker: Any) -> None:
    out = app.run("threaded", {})
    assert out["pid"] == worker.pid
    assert out["thread"].startswith("stoker-procs-threaded_")
    # `stoker worker --executor process`: sync tasks without their own executor run in
    # the subprocesses.
    assert app.run("plain_sync", {})["pid"] != worker.pid


def stoker_cli(tenant: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stoker", *args],
        env=_env(tenant.env), cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_stoker_run_prints_the_output_or_the_error(tenant: Any, worker: Any) -> None:
    done = stoker_cli(tenant, "run", "burn", "--input", '{"seconds": 0.01}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["attempt"] == 0
    failed = stoker_cli(tenant, "run", "crash", "--input", '{"how": "raise"}')
    assert failed.returncode == 1
    assert "failed: NonRetryableError: refused in a subprocess" in failed.stderr
    bad = stoker_cli(tenant, "run", "burn", "--input", "{seconds: 1}")
    assert bad.returncode == 2 and "--input is not valid JSON" in bad.stdout + bad.stderr
    later = stoker_cli(tenant, "run", "burn", "--input", '{"seconds": 0}', "--no-wait")
    assert later.returncode == 0 and len(later.stdout.strip()) == 36  # the run id


def test_sigterm_finishes_short_process_tasks_and_hands_back_long_ones(
    app: Stoker, engine: Any, tenant: Any, worker: Any, tmp_path: Path
) -> None:
    """A second worker, stopped with a 1 s grace: the short task finishes there, the long
    one's subprocess is killed, and the run completes on the module's worker, once."""
    stopping = WorkerProcess(
        "tests.apps.procs:app", tenant, engine.db_url, tmp_path, "stopping", slots=2,
        extra_args=["--grace", "1"],
    ).start()  # fmt: skip
    there: dict[str, Any] = {"desired_worker_id": stopping.worker_id}
    try:
        marker = tmp_path / "pid"
        long = app.run_no_wait("burn", {"seconds": 5, "marker": str(marker)}, **there)
        pid = int(wait_until(lambda: marker.exists() and marker.read_text(), what="a start"))
        short = app.run_no_wait("burn", {"seconds": 0.5}, **there)
        wait_until(lambda: running_on(engine.db_url, short.run_id), what="the short start")
        assert worker_of(engine.db_url, long.run_id) == stopping.worker_id
        stopping.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert stopping.proc.wait(timeout=30) == 0  # type: ignore[union-attr]
        wait_until(lambda: not alive(pid), timeout=5, what="the handed-back subprocess to die")
    finally:
        stopping.kill()
    assert short.result(timeout=30)["attempt"] == 0  # finished within the grace period
    out = long.result(timeout=60)  # handed back, then run by the module's worker
    assert out["pid"] != pid and out["attempt"] == 1
    with psycopg.connect(engine.db_url) as conn:
        kinds = conn.execute(
            "SELECT e.kind FROM stoker.task_event e JOIN stoker.task t ON t.id = e.task_id"
            " WHERE t.external_id = %s",
            (long.run_id,),
        ).fetchall()
    assert kinds == [("WORKER_STOPPED",)]


def worker_of(db_url: str, run_id: str) -> str | None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT w.external_id::text FROM stoker.task t JOIN stoker.task_runtime r"
            " ON r.task_id = t.id JOIN stoker.worker w ON w.id = r.worker_id"
            " WHERE t.external_id = %s",
            (run_id,),
        ).fetchone()
    return None if row is None else str(row[0])


def running_on(db_url: str, run_id: str) -> bool:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT status FROM stoker.task WHERE external_id = %s", (run_id,)
        ).fetchone()
    return row is not None and row[0] == "RUNNING"
