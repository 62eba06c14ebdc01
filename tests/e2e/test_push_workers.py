"""HTTP push workers: the engine POSTs attempts to an ASGI app served by uvicorn in its own
process (tests/apps/push.py), signed with the endpoint's secret; the answers end them."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stoker import RunCancelledError, Stoker, TaskRunError
from stoker._core.push import signed_headers
from tests.apps.push import declare
from tests.harness import REPO, _env, free_port, terminate, wait_until

pytestmark = pytest.mark.timeout(120)

SECRET = "push-tests-secret-0123456789"


class PushServer:
    """``uvicorn tests.apps.push:worker`` on a free port, for one tenant."""

    def __init__(self, tenant: Any, db_url: str, log_dir: Path, marks: Path) -> None:
        self.tenant = tenant
        self.db_url = db_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / "uvicorn.log"
        self.marks = marks
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PushServer:
        env = _env(
            {
                **self.tenant.env,
                "PUSH_URL": self.url,
                "PUSH_SECRET": SECRET,
                "PUSH_MARKS": str(self.marks),
            }
        )
        cmd = [
            sys.executable, "-m", "uvicorn", "tests.apps.push:worker",
            "--host", "127.0.0.1", "--port", str(self.port), "--lifespan", "on",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
            )
        wait_until(self._attached, 30, "the push endpoint to be attached", self.log_path)
        return self

    def _attached(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"uvicorn exited with {self.proc.returncode}:\n"
                + self.log_path.read_text(errors="replace")[-4000:]
            )
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT 1 FROM stoker.worker"
                " WHERE name = 'push:push-tests' AND tenant_id = %s AND status = 'ACTIVE'",
                (self.tenant.tenant_id,),
            ).fetchone()
        return row is not None

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        req = urllib.request.Request(self.url + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def stop(self) -> None:
        terminate(self.proc, grace=10)


@pytest.fixture(scope="module")
def tenant(engine: Any) -> Any:
    from tests.conftest import make_tenant

    return make_tenant(engine)


@pytest.fixture(scope="module")
def server(engine: Any, tenant: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    marks = tmp_path_factory.mktemp("push-marks")
    proc = PushServer(tenant, engine.db_url, tmp_path_factory.mktemp("push"), marks).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def app(tenant: Any, server: Any) -> Iterator[Stoker]:
    client = declare(tenant.client())
    yield client
    client.close()


def test_push_worker_runs_tasks(app: Stoker, server: PushServer) -> None:
    out = app.tasks["push_t_echo"].run({"hello": "push"})
    assert out["echo"] == {"hello": "push"}
    assert out["attempt"] == 0
    assert server.proc is not None and out["pid"] == server.proc.pid  # ran behind uvicorn
    assert app.tasks["push_t_sync"].run({"numbers": [1, 2, 3]}) == {"sum": 6}
    # Several at once, over the endpoint's 4 slots.
    refs = [app.tasks["push_t_echo"].run_no_wait({"n": i}) for i in range(20)]
    assert sorted(r.result(timeout=60)["echo"]["n"] for r in refs) == list(range(20))


def test_forged_or_stale_signature_is_refused(app: Stoker, server: PushServer) -> None:
    def delivery(mark: str) -> bytes:
        doc = {
            "task_id": 987654321,
            "attempt": 1,
            "run_id": "00000000-0000-0000-0000-000000000001",
            "task_name": "push_t_mark",
            "input": {"mark": mark},
        }
        return json.dumps(doc).encode()

    forged = delivery("forged")
    headers = signed_headers("not-the-secret-but-long-enough", forged)
    assert server.post("/run", forged, headers) == 401
    assert server.post("/run", forged, {}) == 401  # unsigned
    stale = delivery("stale")
    old = signed_headers(SECRET, stale, now=time.time() - 3600)
    assert server.post("/run", stale, old) == 401  # a captured request replayed later
    tampered = delivery("tampered")
    good = signed_headers(SECRET, delivery("other"))
    assert server.post("/run", tampered, good) == 401  # signed for another body
    assert server.post("/cancel", b'{"task_id": 1, "attempt": 1}', {}) == 401
    # Nothing of those ran; a correctly signed one does.
    genuine = delivery("genuine")
    assert server.post("/run", genuine, signed_headers(SECRET, genuine)) == 200
    assert (server.marks / "genuine").exists()
    assert not any((server.marks / m).exists() for m in ("forged", "stale", "tampered"))


def test_failure_retries(app: Stoker, server: PushServer) -> None:
    out = app.tasks["push_t_flaky"].run({"key": "flaky1", "fail_times": 1})
    assert out == {"retry_count": 1}
    assert (server.marks / "flaky1-0").exists() and (server.marks / "flaky1-1").exists()
    with pytest.raises(TaskRunError) as err:
        app.tasks["push_t_flaky"].run({"key": "flaky2", "fail_times": 5})
    assert err.value.error_type == "RuntimeError"
    assert "failure 2 of flaky2" in err.value.error_message
    assert (server.marks / "flaky2-2").exists() and not (server.marks / "flaky2-3").exists()


def test_timeout_ends_the_attempt(app: Stoker, server: PushServer) -> None:
    started = time.monotonic()
    with pytest.raises(TaskRunError) as err:
        app.tasks["push_t_slow"].run({"key": "slow1"})
    assert err.value.error_type == "TaskTimeoutError"
    assert time.monotonic() - started < 15
    wait_until(lambda: (server.marks / "slow1-stopped").exists(), 10, "the task to stop")


def test_background_task_answers_202_and_reports_later(app: Stoker, server: PushServer) -> None:
    refs = [app.tasks["push_t_background"].run_no_wait({"n": n}) for n in range(6)]
    assert [r.result(timeout=60) for r in refs] == [{"late": 2 * n} for n in range(6)]


def test_cancel_reaches_the_endpoint(app: Stoker, server: PushServer) -> None:
    ref = app.tasks["push_t_hang"].run_no_wait({"key": "hang1"})
    wait_until(lambda: (server.marks / "hang1-started").exists(), 30, "the task to start")
    app.runs.cancel(ref.run_id, "stop it")
    with pytest.raises(RunCancelledError):
        ref.result(timeout=30)
    wait_until(lambda: (server.marks / "hang1-stopped").exists(), 10, "the task to be stopped")
    # The slot came back: the endpoint still runs work.
    assert app.tasks["push_t_sync"].run({"numbers": [4]}) == {"sum": 4}


class SilentServer:
    """A TCP server that takes requests and never answers (a hung endpoint); it counts
    the requests whose first line it read."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.lines: list[str] = []
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            conn.settimeout(5)
            try:
                self.lines.append(conn.recv(4096).split(b"\r\n", 1)[0].decode())
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_engine_ends_an_attempt_an_endpoint_never_answers(tenant: Any, server: PushServer) -> None:
    silent = SilentServer()
    client = tenant.client()
    try:

        @client.task(name="push_t_unanswered", execution_timeout="1s", retries=0)
        async def unanswered(input: dict[str, Any], ctx: Any) -> None:
            raise AssertionError("never runs here")

        hung = client.http_worker("push-hung", url=silent.url, secret=SECRET, slots=1)
        asyncio.run(hung.aio_register())
        started = time.monotonic()
        with pytest.raises(TaskRunError) as err:
            unanswered.run({})
        assert err.value.error_type == "TaskTimeoutError"
        assert time.monotonic() - started < 20
        # The engine told the endpoint, best effort, after giving up on it.
        wait_until(lambda: "POST /cancel HTTP/1.1" in silent.lines, 10, "the cancel POST")
        assert silent.lines[0] == "POST /run HTTP/1.1"
        # Unregistered: the endpoint's worker stops, and nothing more is sent to it.
        assert asyncio.run(hung.aio_unregister()) is True
        wait_until(lambda: _status(server.db_url, "push:push-hung") == "STOPPED", 10, "a stop")
        assert asyncio.run(hung.aio_unregister()) is False
    finally:
        client.close()
        silent.close()


def _status(db_url: str, name: str) -> str | None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT status FROM stoker.worker WHERE name = %s", (name,)).fetchone()
    return str(row[0]) if row else None


def test_endpoints_outlive_an_engine_restart(engine_factory: Any, tmp_path: Path) -> None:
    from tests.conftest import make_tenant

    own = engine_factory()
    tenant = make_tenant(own)
    server = PushServer(tenant, own.db_url, tmp_path, tmp_path).start()
    client = declare(tenant.client())
    try:
        assert client.tasks["push_t_sync"].run({"numbers": [1, 2]}) == {"sum": 3}
        own.restart()  # SIGKILL: the endpoint is read back from Postgres, not re-registered
        ref = client.tasks["push_t_sync"].run_no_wait({"numbers": [5, 5]})
        assert ref.result(timeout=60) == {"sum": 10}
    finally:
        client.close()
        server.stop()


def test_results_reported_through_a_replica_that_does_not_deliver(
    engine: Any, engine_factory: Any, tmp_path: Path
) -> None:
    """The endpoint's SDK talks to a replica that is not the leader: its 202 reports are
    stored there (checked by Postgres) and the leader frees the slots when its reconciler
    sees the attempts ended."""
    from dataclasses import replace

    from tests.conftest import make_tenant

    replica = engine_factory(engine.db_url)
    tenant = replace(make_tenant(engine), address=replica.grpc_address)
    server = PushServer(tenant, engine.db_url, tmp_path, tmp_path).start()
    client = declare(tenant.client())
    try:
        # More runs than the endpoint's 4 slots: the later ones need the freed slots.
        refs = [client.tasks["push_t_background"].run_no_wait({"n": n}) for n in range(10)]
        assert [r.result(timeout=90) for r in refs] == [{"late": 2 * n} for n in range(10)]
        assert "took leadership" not in replica.log_path.read_text()  # it only stored them
    finally:
        client.close()
        server.stop()


@pytest.mark.slow
def test_endpoint_secrets_follow_a_key_rotation(engine_factory: Any, tmp_path: Path) -> None:
    from dataclasses import replace

    from tests.conftest import make_tenant

    old_key = base64.b64encode(b"p" * 32).decode()
    new_key = base64.b64encode(b"q" * 32).decode()
    first = engine_factory(env={"STOKER_WEBHOOK_SECRET_KEY": old_key})
    tenant = make_tenant(first)
    server = PushServer(tenant, first.db_url, tmp_path, tmp_path).start()
    try:
        client = declare(tenant.client())
        assert client.tasks["push_t_sync"].run({"numbers": [1]}) == {"sum": 1}
        client.close()
        first.kill()
        rotated = {"STOKER_WEBHOOK_SECRET_KEY": new_key, "STOKER_WEBHOOK_OLD_SECRET_KEYS": old_key}
        second = engine_factory(first.db_url, env=rotated)  # re-encrypts at start
        second.kill()
        third = engine_factory(first.db_url, env={"STOKER_WEBHOOK_SECRET_KEY": new_key})
        client = declare(replace(tenant, address=third.grpc_address).client())
        assert client.tasks["push_t_sync"].run({"numbers": [2]}) == {"sum": 2}
        client.close()
    finally:
        server.stop()


def test_a_delivery_waits_for_an_endpoint_that_is_not_listening_yet(tenant: Any) -> None:
    """An endpoint registers from its server's start-up, a moment before the server takes
    connections: a refused connection sent nothing, so the engine tries the POST again
    (for up to its connect timeout) instead of failing the attempt."""
    import uvicorn

    client = tenant.client()
    port = free_port()

    @client.task(name="push_t_early", retries=0)
    async def early(input: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {"attempt": ctx.attempt}

    worker = client.http_worker("push-early", url=f"http://127.0.0.1:{port}", secret=SECRET)
    server = uvicorn.Server(
        uvicorn.Config(worker, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    try:
        asyncio.run(worker.aio_register())
        ref = early.run_no_wait({})
        # Assigned to the endpoint, whose port refuses connections: the engine has posted.
        wait_until(lambda: client.runs.get(ref).status == "RUNNING", 20, "the assignment")
        thread.start()
        assert ref.result(timeout=30) == {"attempt": 0}  # the first attempt, not a retry
    finally:
        server.should_exit = True
        if thread.is_alive():
            thread.join(10)
        asyncio.run(worker.aio_unregister())
        client.close()
