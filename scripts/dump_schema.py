#!/usr/bin/env python
"""Prints Stoker's schema as pg_dump sees it, built from the migrations.

    scripts/dump_schema.py             the schema the migrations build
    scripts/dump_schema.py --canonical the schema src/stoker/db/schema.sql builds
    scripts/dump_schema.py --diff      how the two differ (exit 1 when they do)

src/stoker/db/schema.sql is written by hand, to be read; after adding a migration, change
it to match and check with --diff (tests/integration/test_migrations.py runs the same comparison).
Uses DATABASE_URL when set, otherwise a throwaway embedded Postgres.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import embedded_postgres
from tests.schema_dump import dump_built


@contextmanager
def postgres() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
    else:
        with embedded_postgres() as url:
            yield url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--canonical", action="store_true", help="dump schema.sql's build")
    mode.add_argument("--diff", action="store_true", help="diff schema.sql against migrations")
    args = parser.parse_args()
    with postgres() as url:
        if args.canonical:
            sys.stdout.write(dump_built(url, "canonical"))
            return 0
        migrated = dump_built(url, "migrations")
        if not args.diff:
            sys.stdout.write(migrated)
            return 0
        canonical = dump_built(url, "canonical")
    diff = list(
        difflib.unified_diff(
            canonical.splitlines(keepends=True),
            migrated.splitlines(keepends=True),
            "schema.sql",
            "migrations",
        )
    )
    sys.stdout.writelines(diff)
    if not diff:
        print("schema.sql matches the migrations", file=sys.stderr)
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
