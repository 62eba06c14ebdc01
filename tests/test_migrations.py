"""The migrations and the canonical schema (src/stoker/db/schema.sql) describe one schema."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from typing import Any

import psycopg
import pytest

from stoker.db.migrate import all_migrations
from tests.conftest import create_database, drop_database, with_database

CATALOG = {
    "columns": """
        SELECT table_name, column_name, data_type, is_nullable, column_default,
               is_identity, identity_generation
        FROM information_schema.columns
        WHERE table_schema = 'stoker' AND table_name <> 'migration'""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'stoker' AND tablename <> 'migration'""",
    "constraints": """
        SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
        FROM pg_constraint
        WHERE connamespace = 'stoker'::regnamespace AND conrelid::regclass::text <> 'migration'""",
    "storage": """
        SELECT relname, reloptions FROM pg_class
        WHERE relnamespace = 'stoker'::regnamespace AND relkind = 'r' AND relname <> 'migration'""",
    "triggers": """
        SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger
        WHERE NOT tgisinternal AND tgrelid::regclass::text NOT LIKE 'pg_%'""",
    "functions": """
        SELECT proname, prosrc FROM pg_proc WHERE pronamespace = 'stoker'::regnamespace""",
}


def snapshot(url: str) -> dict[str, set[tuple[Any, ...]]]:
    with psycopg.connect(url, options="-c search_path=stoker") as conn:
        return {
            name: {tuple(str(v) for v in row) for row in conn.execute(sql).fetchall()}  # type: ignore[arg-type]
            for name, sql in CATALOG.items()
        }


@pytest.fixture
def canonical_db(pg_url: str) -> Iterator[str]:
    name = create_database(pg_url)
    url = with_database(pg_url, name)
    schema = (resources.files("stoker.db") / "schema.sql").read_text()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA stoker")
        conn.execute("SET search_path TO stoker")
        conn.execute(schema.encode())
    try:
        yield url
    finally:
        drop_database(pg_url, name)


def test_migrations_build_the_canonical_schema(db_url: str, canonical_db: str) -> None:
    migrated, canonical = snapshot(db_url), snapshot(canonical_db)
    for part in CATALOG:
        assert migrated[part] - canonical[part] == set(), f"{part}: only in the migrations"
        assert canonical[part] - migrated[part] == set(), f"{part}: only in schema.sql"
    assert len(migrated["columns"]) > 50


def test_migrations_are_numbered_without_gaps_and_recorded(db_url: str) -> None:
    versions = [m.version for m in all_migrations()]
    assert versions == list(range(1, len(versions) + 1))
    with psycopg.connect(db_url) as conn:
        applied = [r[0] for r in conn.execute("SELECT version FROM stoker.migration ORDER BY 1")]
    assert applied == versions
