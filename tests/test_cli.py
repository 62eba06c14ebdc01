"""The command line, run as a user runs it (a subprocess), against a real Postgres."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psycopg

from tests.harness import REPO, free_port, wait_until


def stoker(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("STOKER_")
    }
    return subprocess.run(
        [sys.executable, "-m", "stoker", *args],
        env={**base, **(env or {})}, cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_migrate_then_token_create(pg_url: str, db_url: str) -> None:
    first = stoker("migrate", env={"DATABASE_URL": db_url})
    assert first.returncode == 0, first.stderr
    assert "up to date" in first.stderr  # the template was migrated already
    made = stoker("token", "create", "--tenant", "payments", env={"DATABASE_URL": db_url})
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("stk_")
    with psycopg.connect(db_url) as conn:
        names = conn.execute("SELECT name FROM stoker.tenant").fetchall()
    assert ("payments",) in names


def test_engine_without_a_database_says_so() -> None:
    done = stoker("engine")
    assert done.returncode == 2
    assert "DATABASE_URL is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_misspelt_setting_is_named_with_a_likely_fix() -> None:
    done = stoker("engine", env={"STOKER_HEARTBEAT_INTERVAL": "1"})
    assert done.returncode == 2  # still no DATABASE_URL
    assert (
        "STOKER_HEARTBEAT_INTERVAL is not a Stoker setting and is ignored "
        "(did you mean STOKER_HEARTBEAT_INTERVAL_S?)"
    ) in " ".join(done.stderr.split())


def test_bad_settings_are_refused_with_their_name(db_url: str) -> None:
    done = stoker("engine", env={"DATABASE_URL": db_url, "STOKER_WORKER_DEAD_AFTER_S": "1"})
    assert done.returncode == 2
    assert "STOKER_WORKER_DEAD_AFTER_S must exceed STOKER_HEARTBEAT_INTERVAL_S" in done.stderr


def test_worker_with_a_bad_target_says_what_is_wrong() -> None:
    for target, message in [
        ("nomodule:app", "cannot import 'nomodule'"),
        ("tests.apps.basic:nothing", "has no attribute 'nothing'"),
        ("tests.apps.basic:declare", "not a stoker.Stoker app"),
        ("no-colon", "expected MODULE:ATTRIBUTE"),
    ]:
        done = stoker("worker", target, env={"STOKER_ADDRESS": "127.0.0.1:1", "STOKER_TOKEN": "x"})
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert "Traceback" not in done.stderr


def test_lite_runs_on_an_embedded_postgres_and_keeps_its_token(tmp_path: Path) -> None:
    grpc_port, http_port = free_port(), free_port()
    env = {"STOKER_HOME": str(tmp_path / "home")}
    tokens = []
    for _ in range(2):
        log = (tmp_path / "lite.log").open("ab")
        base = {
            k: v
            for k, v in os.environ.items()
            if k != "DATABASE_URL" and not k.startswith("STOKER_")
        }
        ports = ["--grpc-port", str(grpc_port), "--http-port", str(http_port)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "stoker", "lite", *ports],
            env={**base, **env}, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until(
                lambda: _healthy(f"http://127.0.0.1:{http_port}/healthz"),
                90,
                "stoker lite to answer",
                tmp_path / "lite.log",
            )
            profile = (tmp_path / "home" / "profile.json").read_text()
            tokens.append(profile)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            log.close()
    assert tokens[0] == tokens[1]  # the second start reused the stored token
    assert f'"address": "127.0.0.1:{grpc_port}"' in tokens[0]
    assert (tmp_path / "home" / "pg" / "PG_VERSION").exists()  # data persists


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False
