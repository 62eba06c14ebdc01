"""Ordered, numbered migrations (``stoker/db/migrations/NNNN_name.sql``).

Each file runs once, in its own transaction, with the configured schema as search_path;
the ``migration`` table records what ran. An advisory lock keeps two engines starting at
once from migrating twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from psycopg import AsyncConnection, sql

from stoker.db.connect import check_schema

_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x5_70CE  # advisory lock id for migrations


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def all_migrations() -> list[Migration]:
    """Every migration shipped with the package, in order."""
    found: list[Migration] = []
    for entry in (resources.files("stoker.db") / "migrations").iterdir():
        m = _FILE.match(entry.name)
        if m:
            found.append(Migration(int(m["version"]), m["name"], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    # Numbers are reserved per feature branch, so a gap (a number not merged yet) is
    # allowed; a number used twice is not.
    if len(set(versions)) != len(versions) or (versions and versions[0] != 1):
        raise RuntimeError(f"migration versions must be unique from 1 up, found {versions}")
    return found


async def _applied(conn: AsyncConnection[object], schema: str) -> set[int]:
    await conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.migration ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        ).format(sql.Identifier(schema))
    )
    cur = await conn.execute(
        sql.SQL("SELECT version FROM {}.migration").format(sql.Identifier(schema))
    )
    return {row[0] for row in await cur.fetchall()}  # type: ignore[index]


async def pending_migrations(conn: AsyncConnection[object], schema: str) -> list[Migration]:
    """Migrations not yet applied to ``schema`` (creates the schema if missing)."""
    check_schema(schema)
    await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    done = await _applied(conn, schema)
    return [m for m in all_migrations() if m.version not in done]


async def apply_migrations(conn: AsyncConnection[object], schema: str) -> list[Migration]:
    """Applies pending migrations to ``schema``; returns those it applied.

    ``conn`` must be in autocommit mode; each migration gets its own transaction.
    """
    check_schema(schema)
    await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        applied: list[Migration] = []
        for m in await pending_migrations(conn, schema):
            async with conn.transaction():
                await conn.execute(
                    sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema))
                )
                await conn.execute(m.sql.encode())
                await conn.execute(
                    sql.SQL("INSERT INTO {}.migration (version, name) VALUES (%s, %s)").format(
                        sql.Identifier(schema)
                    ),
                    (m.version, m.name),
                )
            applied.append(m)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
