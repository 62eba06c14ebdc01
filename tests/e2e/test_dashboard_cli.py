"""``stoker user ...``: dashboard users from the command line, against a migrated database."""

from __future__ import annotations

import subprocess
import sys

from tests.harness import REPO


def user(db_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stoker", "user", *args],
        env={"DATABASE_URL": db_url, "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_users_are_created_listed_changed_and_deleted(db_url: str) -> None:
    made = user(db_url, "create", "Ops@Example.com", "--role", "operator",
                "--tenant", "acme", "--password-stdin", stdin="a long password\n")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "created ops@example.com (operator) in tenant acme" in made.stdout
    listed = user(db_url, "list", "--tenant", "acme")
    assert "ops@example.com" in listed.stdout and "operator" in listed.stdout
    again = user(db_url, "create", "ops@example.com", "--password-stdin", stdin="another one\n")
    assert again.returncode == 2 and "exists already" in again.stderr
    bad = user(db_url, "create", "x@example.com", "--role", "root", "--password-stdin")
    assert bad.returncode == 2 and "role must be one of" in bad.stderr
    short = user(db_url, "create", "y@example.com", "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "at least 8 characters" in short.stderr
    changed = user(db_url, "set-password", "ops@example.com", "--password-stdin",
                   stdin="a new long password\n")  # fmt: skip
    assert changed.returncode == 0, changed.stderr
    gone = user(db_url, "delete", "ops@example.com")
    assert gone.returncode == 0 and "deleted" in gone.stdout
    missing = user(db_url, "delete", "ops@example.com")
    assert missing.returncode == 2 and "no user with email" in missing.stderr
