"""Transport security against real engine processes: calls without a valid token are
refused before their body is read, message sizes are capped, tokens expire and are revoked
on every replica within a second, and gRPC and REST are served over (mutual) TLS."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import psutil
import psycopg
import pytest

from stoker import AuthenticationError, EngineUnavailableError
from stoker._core.wire import message_limit, split_batches
from stoker._proto import engine_pb2 as pb
from stoker.config import ClientSettings, EngineSettings
from stoker.db import Executor, connect
from stoker.engine.auth import (
    ADMIN,
    TOKEN_CHANNEL,
    TokenAuth,
    create_tenant,
    create_token,
    list_tokens,
    revoke_token,
)
from stoker.engine.notify import Listener
from stoker.errors import ConfigError
from tests.apps import basic, big
from tests.apps.basic import Greet
from tests.e2e.test_cli import stoker
from tests.harness import SCHEMA, EngineProcess, Tenant, WorkerProcess, wait_until

MB = 1024 * 1024


def _rss(engine: EngineProcess) -> int:
    assert engine.proc is not None
    return int(psutil.Process(engine.proc.pid).memory_info().rss)


def _new_tenant(db_url: str, address: str, role: str = "member") -> Tenant:
    async def make() -> Tenant:
        conn = await connect(db_url, SCHEMA)
        try:
            db = Executor(conn)
            tenant_id = await create_tenant(db, f"t-{uuid.uuid4().hex[:10]}")
            return Tenant(tenant_id, await create_token(db, tenant_id, role=role), address)
        finally:
            await conn.close()

    return asyncio.run(make())


def _tenant_name(db_url: str, tenant_id: int) -> str:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT name FROM stoker.tenant WHERE id = %s", (tenant_id,)).fetchone()
    assert row is not None
    return str(row[0])


def _heartbeat(address: str, token: str | None) -> tuple[grpc.StatusCode, str]:
    """A cheap authenticated call: (OK, "") when the engine accepts ``token``."""
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(
            "/stoker.v1.Engine/Heartbeat",
            request_serializer=pb.HeartbeatRequest.SerializeToString,
            response_deserializer=pb.HeartbeatResponse.FromString,
        )
        try:
            call(pb.HeartbeatRequest(worker_id=str(uuid.uuid4())), metadata=metadata, timeout=10)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _refused(address: str, token: str, word: str) -> Callable[[], bool]:
    def check() -> bool:
        code, details = _heartbeat(address, token)
        if code == grpc.StatusCode.OK:
            return False
        assert code == grpc.StatusCode.UNAUTHENTICATED and word in details, (code, details)
        return True

    return check


def _http(
    method: str,
    url: str,
    token: str | None = None,
    body: dict[str, Any] | None = None,
    context: Any = None,
) -> tuple[int, Any]:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


# -- message limits and unauthenticated bodies -----------------------------------------------


def test_calls_without_a_valid_token_are_refused_before_their_body_is_read(
    engine_factory: Callable[..., EngineProcess],
) -> None:
    engine = engine_factory()
    body = pb.TriggerRequest(
        items=[pb.TriggerItem(task_name="greet", input=b"7" * (60 * MB))]
    ).SerializeToString()
    channel = grpc.insecure_channel(
        engine.grpc_address, options=[("grpc.max_send_message_length", -1)]
    )
    trigger = channel.unary_unary("/stoker.v1.Engine/Trigger")
    unknown = (("authorization", "Bearer stk_" + "x" * 43),)
    before = _rss(engine)

    def send(metadata: tuple[tuple[str, str], ...]) -> tuple[grpc.StatusCode, str]:
        try:
            trigger(body, metadata=metadata, timeout=60)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, ""

    try:
        answers = []
        with ThreadPoolExecutor(4) as pool:
            for _ in range(3):  # twelve 60 MB calls, four at a time
                answers += list(pool.map(send, [(), unknown, (), unknown]))
    finally:
        channel.close()
    assert {code for code, _ in answers} == {grpc.StatusCode.UNAUTHENTICATED}
    assert {details for _, details in answers} == {
        "missing API token: send 'authorization: Bearer <token>'",
        "invalid API token: it is unknown",
    }
    # Had the bodies been read, 720 MB would have passed through the engine's memory.
    assert _rss(engine) - before < 48 * MB, (before // MB, _rss(engine) // MB)

    # A stream (a worker's connection) without a token is refused the same way.
    with grpc.insecure_channel(engine.grpc_address) as channel:
        connect_call = channel.stream_stream("/stoker.v1.Engine/Connect")
        with pytest.raises(grpc.RpcError) as refused:
            list(connect_call(iter([b""]), timeout=10))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_messages_are_capped_at_the_payload_limit_and_batches_fit_the_cap(
    engine: EngineProcess, tenant: Tenant, worker_factory: Callable[..., WorkerProcess]
) -> None:
    body = pb.TriggerRequest(
        items=[pb.TriggerItem(task_name="greet", input=b"7" * (60 * MB))]
    ).SerializeToString()
    metadata = (("authorization", f"Bearer {tenant.token}"),)
    with grpc.insecure_channel(
        engine.grpc_address, options=[("grpc.max_send_message_length", -1)]
    ) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary("/stoker.v1.Engine/Trigger")(body, metadata=metadata, timeout=60)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (refused.value.details() or "")

    # Eight inputs of 1.5 MB (12 MB in all, each under the 4 MB payload limit) are split
    # into calls under the 5 MB message limit; so are the worker's eight 1.5 MB results.
    worker_factory("tests.apps.basic:app", slots=8)
    app = basic.declare(tenant.client(connect_timeout=5))
    try:
        refs = app.tasks["greet"].run_many([Greet(name="n" * 1_500_000)] * 8)
        assert len({ref.run_id for ref in refs}) == 8
        for ref in refs:
            assert len(ref.result(timeout=60)["message"]) == 1_500_006
        wf = app.workflow("big-inputs")

        @wf.task()
        async def first(input: Greet, ctx: Any) -> None:
            return None

        assert len(wf.run_many([Greet(name="w" * 1_500_000)] * 6)) == 6
    finally:
        app.close()


def test_children_whose_inputs_exceed_one_message_are_spawned_in_several(
    tenant: Tenant, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker_factory("tests.apps.big:app", slots=8)
    app = big.declare(tenant.client(connect_timeout=5))
    try:
        # Six children of 1.5 MB: 9 MB of inputs, spawned from inside a running task.
        result = app.tasks["fan_out"].run(big.FanOut(children=6, size=1_500_000))
        assert result == [1_500_000] * 6
    finally:
        app.close()


def test_batches_are_split_to_fit_the_message_limit() -> None:
    events = [pb.TaskEvent(task_id=i, output=b"o" * 1_500_000) for i in range(8)]
    events.insert(3, pb.TaskEvent(task_id=99))
    limit = message_limit(4 * MB)
    batches = split_batches(events, limit, 500)
    assert [e.task_id for b in batches for e in b] == [e.task_id for e in events]
    assert all(pb.TaskEvents(events=b).ByteSize() <= limit for b in batches)
    assert [len(b) for b in batches] == [4, 3, 2]
    # An item too large alone still gets a batch (gRPC refuses it with a clear error).
    big = [pb.TaskEvent(task_id=1, output=b"o" * limit)]
    assert split_batches(big, limit, 500) == [big]
    assert [len(b) for b in split_batches([pb.TaskEvent(task_id=1)] * 5, limit, 2)] == [2, 2, 1]


def test_tls_and_token_settings_that_cannot_work_are_refused_by_name(tmp_path: Path) -> None:
    url = "postgresql://localhost/x"
    with pytest.raises(ConfigError, match="needs both STOKER_TLS_CERT_FILE and STOKER_TLS_KEY"):
        EngineSettings.load(database_url=url, tls_cert_file=str(tmp_path / "a.pem"))
    with pytest.raises(ConfigError, match=r"STOKER_TLS_CERT_FILE: cannot read .*nope\.pem"):
        EngineSettings.load(
            database_url=url, tls_cert_file=str(tmp_path / "nope.pem"), tls_key_file="k"
        )
    with pytest.raises(ConfigError, match="STOKER_AUTH_CACHE_TTL_S must be in"):
        EngineSettings.load(database_url=url, auth_cache_ttl_s=30)
    (tmp_path / "ca.txt").write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"STOKER_TLS_CA_FILE: .*ca\.txt is not a PEM file"):
        ClientSettings.load(address="h:1", token="t", tls_ca_file=str(tmp_path / "ca.txt"))
    with pytest.raises(ConfigError, match="needs both STOKER_TLS_CERT_FILE and STOKER_TLS_KEY"):
        ClientSettings.load(address="h:1", token="t", tls_cert_file="c.pem")


def _post_head(url: str, path: str, length: int, token: str | None) -> tuple[int, str]:
    """POSTs the headers of a ``length``-byte body and 64 KiB of it; the answer."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=10)
    try:
        conn.putrequest("POST", path)
        conn.putheader("content-type", "application/json")
        conn.putheader("content-length", str(length))
        if token:
            conn.putheader("authorization", f"Bearer {token}")
        conn.endheaders()
        conn.send(b" " * 65536)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())["error"]["message"]
    finally:
        conn.close()


def test_rest_bodies_are_refused_before_they_are_read(engine: EngineProcess) -> None:
    admin = _new_tenant(engine.db_url, engine.grpc_address, role=ADMIN)
    before = _rss(engine)
    for _ in range(12):
        status, message = _post_head(engine.http_url, "/api/v1/tokens", 4 * MB, None)
        assert (status, message) == (401, "missing API token: send 'authorization: Bearer <token>'")
        status, message = _post_head(engine.http_url, "/api/v1/tokens", 60 * MB, admin.token)
        assert status == 413 and f"{60 * MB} bytes, over the limit of {5 * MB} bytes" in message
    assert _rss(engine) - before < 48 * MB


# -- tokens ---------------------------------------------------------------------------------


def test_expired_tokens_are_refused_saying_they_expired(
    engine: EngineProcess, tenant: Tenant
) -> None:
    name = _tenant_name(engine.db_url, tenant.tenant_id)
    env = {"DATABASE_URL": engine.db_url}
    # A token works until it expires: one expiring in an hour is accepted. The 2 s one is
    # not asked to work first: on a loaded machine the CLI alone may outlast its 2 s.

    async def lasting() -> str:
        conn = await connect(engine.db_url, SCHEMA)
        try:
            later = datetime.now(UTC) + timedelta(hours=1)
            return await create_token(Executor(conn), tenant.tenant_id, expires_at=later)
        finally:
            await conn.close()

    assert _heartbeat(engine.grpc_address, asyncio.run(lasting())) == (grpc.StatusCode.OK, "")
    made = stoker("token", "create", "--tenant", name, "--expires-in", "2s", env=env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    wait_until(_refused(engine.grpc_address, token, "expired at"), 30, "the token to expire")
    status, body = _http("GET", engine.http_url + "/api/v1/workers", token)
    assert status == 401 and "API token expired at" in body["error"]["message"], body

    wrong = stoker("token", "create", "--tenant", name, "--expires-in", "soon", env=env)
    assert wrong.returncode == 2
    assert "'soon' is not a duration" in wrong.stdout + wrong.stderr


def test_cli_lists_and_revokes_tokens_and_last_use_is_recorded(
    engine_factory: Callable[..., EngineProcess],
) -> None:
    engine = engine_factory(env={"STOKER_TOKEN_LAST_USED_INTERVAL_S": "0.2"})
    env = {"DATABASE_URL": engine.db_url}
    made = stoker("token", "create", "--tenant", "ops", "--name", "deploy", "--admin", env=env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert _heartbeat(engine.grpc_address, token) == (grpc.StatusCode.OK, "")

    def used() -> bool:
        with psycopg.connect(engine.db_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT last_used_at FROM stoker.api_token WHERE name = 'deploy'"
            ).fetchone()
        return row is not None and row[0] is not None

    wait_until(used, 10, "the token's last use to be recorded")
    listed = stoker("token", "list", "--tenant", "ops", env=env)
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if "deploy" in x)
    token_id = next(p for p in line.replace("│", " ").split() if len(p) == 36)
    assert "admin" in line and str(datetime.now(UTC).year) in line.split("admin", 1)[1]

    revoked = stoker("token", "revoke", token_id, env=env)
    assert revoked.returncode == 0, revoked.stderr
    wait_until(_refused(engine.grpc_address, token, "revoked"), 1.0, "the revocation")
    again = stoker("token", "revoke", token_id, env=env)
    assert again.returncode == 2 and "no unrevoked token" in again.stdout + again.stderr
    assert "deploy" not in stoker("token", "list", env=env).stdout
    assert "deploy" in stoker("token", "list", "--all", env=env).stdout


def test_revocation_over_rest_reaches_every_replica_within_a_second(
    engine_factory: Callable[..., EngineProcess],
) -> None:
    a = engine_factory()
    b = engine_factory(db_url=a.db_url)
    admin = _new_tenant(a.db_url, a.grpc_address, role=ADMIN)
    status, made = _http("POST", a.http_url + "/api/v1/tokens", admin.token, {"name": "ci"})
    assert status == 201, made
    member = made["token"]
    for replica in (a, b):
        assert _heartbeat(replica.grpc_address, member) == (grpc.StatusCode.OK, "")

    status, body = _http("DELETE", f"{a.http_url}/api/v1/tokens/{made['id']}", admin.token)
    assert status == 200 and body["revoked_at"], body
    wait_until(_refused(b.grpc_address, member, "revoked"), 1.0, "replica b to refuse it")
    assert _refused(a.grpc_address, member, "revoked")()


def test_a_revoked_tokens_worker_is_cut_off(
    engine: EngineProcess, tenant: Tenant, worker_factory: Callable[..., WorkerProcess]
) -> None:
    worker = worker_factory("tests.apps.basic:app", slots=2)
    with psycopg.connect(engine.db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT external_id::text FROM stoker.api_token WHERE tenant_id = %s",
            (tenant.tenant_id,),
        ).fetchone()
    assert row is not None
    revoked = stoker("token", "revoke", row[0], env={"DATABASE_URL": engine.db_url})
    assert revoked.returncode == 0, revoked.stderr
    assert worker.proc is not None
    # Its stream is closed by the revocation (within a second), not when the worker is
    # declared dead 3 s after its heartbeats started being refused: the log tells which.
    wait_until(lambda: worker.proc.poll() is not None, 4, "the worker to be cut off")
    log = worker.log_path.read_text()
    assert "error: API token has been revoked" in log and "closed the stream" not in log, log


async def test_a_lost_revocation_notice_is_covered_by_the_cache_life(
    db: Executor, db_url: str
) -> None:
    tenant_id = await create_tenant(db, "backstop")
    token = await create_token(db, tenant_id)
    auth = TokenAuth(db)  # the engine's default cache life
    await auth.authenticate(token)
    # Revoked without a notification (as if it were lost).
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE stoker.api_token SET revoked_at = now() WHERE tenant_id = %s", (tenant_id,)
        )
    deadline = time.monotonic() + 1.0
    while True:
        try:
            await auth.authenticate(token)
        except AuthenticationError as exc:
            assert exc.message == "API token has been revoked"
            break
        assert time.monotonic() < deadline, "a revoked token still worked after 1 s"
        await asyncio.sleep(0.02)


async def test_a_revocation_notice_drops_the_token_from_a_replicas_cache(
    db: Executor, db_url: str
) -> None:
    tenant_id = await create_tenant(db, "notified")
    token = await create_token(db, tenant_id)
    auth = TokenAuth(db, cache_ttl_s=60)  # only the notification can make it check again
    listener = Listener(db_url, SCHEMA, "replica-b", {}, {TOKEN_CHANNEL: auth.on_revoked})
    await listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        await auth.authenticate(token)
        (row,) = await list_tokens(db, tenant_id)
        assert await revoke_token(db, row["external_id"], tenant_id, sender="replica-a")
        deadline = time.monotonic() + 1.0
        while True:
            try:
                await auth.authenticate(token)
            except AuthenticationError as exc:
                assert "revoked" in exc.message
                break
            assert time.monotonic() < deadline, "the notification did not reach the cache"
            await asyncio.sleep(0.02)
    finally:
        await listener.stop()


def test_rest_token_management_needs_an_admin_token(engine: EngineProcess, tenant: Tenant) -> None:
    admin = _new_tenant(engine.db_url, engine.grpc_address, role=ADMIN)
    other = _new_tenant(engine.db_url, engine.grpc_address, role=ADMIN)
    url = engine.http_url + "/api/v1/tokens"

    status, body = _http("GET", url, tenant.token)
    assert status == 403 and "admin" in body["error"]["message"], body
    assert _http("POST", url, tenant.token, {"name": "x"})[0] == 403

    status, made = _http("POST", url, admin.token, {"name": "ci", "expires_in": "1h"})
    assert status == 201, made
    assert made["role"] == "member" and made["token"].startswith("stk_")
    expires = datetime.fromisoformat(made["expires_at"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    assert _heartbeat(engine.grpc_address, made["token"]) == (grpc.StatusCode.OK, "")

    status, listed = _http("GET", url, admin.token)
    assert status == 200
    assert [t["name"] for t in listed["items"]] == ["default", "ci"]
    assert all("token" not in t for t in listed["items"])

    # Another tenant's admin cannot see or revoke this tenant's tokens.
    assert _http("DELETE", f"{url}/{made['id']}", other.token)[0] == 404
    status, body = _http("DELETE", f"{url}/{made['id']}", admin.token)
    assert status == 200 and body["revoked_at"] is not None
    status, body = _http("GET", engine.http_url + "/api/v1/workers", made["token"])
    assert status == 401 and body["error"]["message"] == "API token has been revoked"
    assert _http("DELETE", f"{url}/{made['id']}", admin.token)[0] == 404
    assert [t["name"] for t in _http("GET", url, admin.token)[1]["items"]] == ["default"]
    everything = _http("GET", url + "?include_revoked=true", admin.token)[1]["items"]
    assert [t["name"] for t in everything] == ["default", "ci"]

    status, body = _http("POST", url, admin.token, {"name": "x", "expires_in": "soon"})
    assert status == 422 and "'soon' is not a duration" in body["error"]["message"], body
    status, body = _http("POST", url, admin.token, {"name": "x", "role": "root"})
    assert status == 422, body


# -- TLS -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def https(self, client_cert: bool = False) -> Any:
        import ssl

        context = ssl.create_default_context(cafile=str(self.ca))
        if client_cert:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certs(tmp_path: Path) -> Iterator[Certs]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    d = tmp_path / "certs"
    d.mkdir()
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=Stoker test CA", cwd=d)  # fmt: skip
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        _openssl("req", *key, "-keyout", f"{who}.key", "-out", f"{who}.csr",
                 "-subj", f"/CN={'localhost' if who == 'server' else 'worker'}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{who}.pem", "-days", "2",
                 "-extfile", f"{who}.ext", cwd=d)  # fmt: skip
    yield Certs(
        d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem", d / "client.key"
    )


def _tls_engine(db_url: str, tmp_path: Path, certs: Certs, mutual: bool) -> EngineProcess:
    env = {
        "STOKER_TLS_CERT_FILE": str(certs.server_cert),
        "STOKER_TLS_KEY_FILE": str(certs.server_key),
    }
    if mutual:
        env["STOKER_TLS_CLIENT_CA_FILE"] = str(certs.ca)
    return EngineProcess(db_url, tmp_path, env=env, https=certs.https(client_cert=mutual)).start()


def test_engine_serves_grpc_and_rest_over_tls(
    db_url: str, tmp_path: Path, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _tls_engine(db_url, tmp_path, certs, mutual=False)
    worker: WorkerProcess | None = None
    try:
        tenant = _new_tenant(db_url, engine.grpc_address)
        worker = WorkerProcess(
            "tests.apps.basic:app", tenant, db_url, tmp_path, "tls-worker",
            env={"STOKER_TLS_CA_FILE": str(certs.ca)},
        ).start()  # fmt: skip
        monkeypatch.setenv("STOKER_TLS_CA_FILE", str(certs.ca))
        app = basic.declare(tenant.client(connect_timeout=5))
        try:
            assert app.tasks["greet"].run(Greet(name="tls"))["message"] == "hello tls"
        finally:
            app.close()

        status, body = _http(
            "GET", engine.http_url + "/api/v1/workers", tenant.token, context=certs.https()
        )
        assert status == 200 and [w["name"] for w in body["items"]] == ["tls-worker"]

        # Plaintext gets nowhere: not over gRPC, not over HTTP.
        monkeypatch.delenv("STOKER_TLS_CA_FILE")
        plain = basic.declare(tenant.client(connect_timeout=1))
        try:
            with pytest.raises(EngineUnavailableError):
                plain.tasks["greet"].run_no_wait(Greet(name="plain"))
        finally:
            plain.close()
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{engine.http_port}/healthz", timeout=5)
    finally:
        if worker is not None:
            worker.kill()
        engine.stop()


def test_mutual_tls_refuses_a_client_without_a_certificate(
    db_url: str, tmp_path: Path, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _tls_engine(db_url, tmp_path, certs, mutual=True)
    worker: WorkerProcess | None = None
    try:
        tenant = _new_tenant(db_url, engine.grpc_address)
        monkeypatch.setenv("STOKER_TLS_CA_FILE", str(certs.ca))
        anonymous = basic.declare(tenant.client(connect_timeout=1))
        try:
            with pytest.raises(EngineUnavailableError):
                anonymous.tasks["greet"].run_no_wait(Greet(name="anonymous"))
        finally:
            anonymous.close()
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            _http("GET", engine.http_url + "/healthz", context=certs.https())

        client_env = {
            "STOKER_TLS_CA_FILE": str(certs.ca),
            "STOKER_TLS_CERT_FILE": str(certs.client_cert),
            "STOKER_TLS_KEY_FILE": str(certs.client_key),
        }
        worker = WorkerProcess(
            "tests.apps.basic:app", tenant, db_url, tmp_path, "mtls-worker", env=client_env
        ).start()
        # The same settings as arguments of Stoker(...), with none in the environment.
        monkeypatch.delenv("STOKER_TLS_CA_FILE")
        app = basic.declare(
            tenant.client(
                connect_timeout=5,
                tls_ca_file=str(certs.ca),
                tls_cert_file=str(certs.client_cert),
                tls_key_file=str(certs.client_key),
            )
        )
        try:
            assert app.tasks["greet"].run(Greet(name="mtls"))["message"] == "hello mtls"
        finally:
            app.close()
        status, _ = _http(
            "GET", engine.http_url + "/api/v1/workers", tenant.token, context=certs.https(True)
        )
        assert status == 200
    finally:
        if worker is not None:
            worker.kill()
        engine.stop()
