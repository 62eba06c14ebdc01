"""The migrations and the canonical schema (src/stoker/db/schema.sql) describe one schema.

Both are loaded into fresh databases and compared as ``pg_dump`` prints them, so any
difference (a column, its order or default, an index, a constraint, a sequence, a
function, a table's storage options) fails with a diff. ``scripts/dump_schema.py`` prints
the same dumps and diff outside the test suite.
"""

from __future__ import annotations

import difflib

import psycopg

from stoker.db.migrate import all_migrations
from tests.schema_dump import dump_built


def test_migrations_build_the_canonical_schema(pg_url: str) -> None:
    migrated = dump_built(pg_url, "migrations")
    canonical = dump_built(pg_url, "canonical")
    assert "CREATE TABLE stoker.task (" in migrated
    diff = "".join(
        difflib.unified_diff(
            canonical.splitlines(keepends=True),
            migrated.splitlines(keepends=True),
            "schema.sql",
            "migrations",
        )
    )
    assert not diff, (
        "src/stoker/db/schema.sql and the migrations differ; change both together "
        "(scripts/dump_schema.py --diff shows this diff):\n" + diff
    )


def test_migrations_are_numbered_once_each_and_recorded(db_url: str) -> None:
    versions = [m.version for m in all_migrations()]
    # Unique and increasing from 1; a gap is a number reserved by a feature not merged yet.
    assert versions[0] == 1 and versions == sorted(set(versions))
    with psycopg.connect(db_url) as conn:
        applied = [r[0] for r in conn.execute("SELECT version FROM stoker.migration ORDER BY 1")]
    assert applied == versions
