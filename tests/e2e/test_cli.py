"""The command line, run as a user runs it (a subprocess), against a real Postgres."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import psycopg

from tests.harness import (
    REPO,
    create_database,
    drop_database,
    free_port,
    spawn,
    wait_until,
    with_database,
)


def stoker(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stoker", *args],
        env={**_clean_env(), **(env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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


def test_database_mistakes_are_one_line_saying_what_to_do(pg_url: str) -> None:
    unreachable = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/stoker"}
    for args in (["migrate"], ["token", "create", "--tenant", "x"], ["engine"]):
        done = stoker(*args, env=unreachable)
        assert done.returncode == 2, done.stderr
        assert "cannot connect to Postgres: connection failed" in done.stderr
        assert "Traceback" not in done.stderr
    empty = create_database(pg_url)
    try:
        bare = {"DATABASE_URL": with_database(pg_url, empty)}
        done = stoker("engine", "--no-migrate", env=bare)
        assert done.returncode == 2, done.stderr
        assert "lacks migrations 0001_" in done.stderr and "run `stoker migrate`" in done.stderr
        done = stoker("token", "create", "--tenant", "x", env=bare)
        assert done.returncode == 2, done.stderr
        assert "run `stoker migrate` first" in done.stderr
    finally:
        drop_database(pg_url, empty)


def test_a_port_in_use_is_refused_before_the_engine_starts(db_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"DATABASE_URL": db_url, "STOKER_GRPC_PORT": str(port)}
        done = stoker("engine", "--no-migrate", env=env)
    assert done.returncode == 2, done.stderr
    assert f"cannot listen on 127.0.0.1:{port} for gRPC" in done.stderr


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
    ) in done.stderr


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


def test_lite_is_the_quickstart_and_keeps_its_data_and_token(tmp_path: Path) -> None:
    """Two starts of ``stoker lite`` on one STOKER_HOME; the README quickstart on the second."""
    home, log_path = tmp_path / "home", tmp_path / "lite.log"
    grpc_port, http_port = free_port(), free_port()
    env = {**_clean_env(), "STOKER_HOME": str(home)}
    health = f"http://127.0.0.1:{http_port}/healthz"
    profiles = []
    for start in range(2):
        with log_path.open("ab") as log:
            ports = ["--grpc-port", str(grpc_port), "--http-port", str(http_port)]
            proc = spawn(
                [sys.executable, "-m", "stoker", "lite", *ports],
                env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            wait_until(lambda: _healthy(health), 90, "stoker lite to answer", log_path)
            profiles.append(json.loads((home / "profile.json").read_text()))
            if start == 0:
                # A webhook with no configuration at all: lite keeps the key to its secret.
                made = stoker(
                    "webhook", "create", "hook", "--auth", "api-key", "--header", "X-Key",
                    "--secret", "k-1", "--event-key", "'lite:' + input.kind", env=env,
                )  # fmt: skip
                assert made.returncode == 0, made.stderr
                hook_path = json.loads(made.stdout)["path"]
                assert (home / "webhook-secret.key").stat().st_mode & 0o077 == 0
            if start == 1:
                # The secret stored by the first start opens under the second.
                posted = urllib.request.urlopen(
                    urllib.request.Request(
                        f"http://127.0.0.1:{http_port}{hook_path}", data=b'{"kind": "ping"}',
                        headers={"X-Key": "k-1", "content-type": "application/json"},
                    ),
                    timeout=10,
                )  # fmt: skip
                assert posted.status == 202 and json.loads(posted.read())["key"] == "lite:ping"
                _run_quickstart(tmp_path / "app", env)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        assert code == 0, log_path.read_text()[-4000:]
        # The embedded Postgres stopped with it (a clean shutdown removes its pid file).
        assert not (home / "pg" / "postmaster.pid").exists()
    assert profiles[0]["token"] == profiles[1]["token"]  # the second start reused it
    assert profiles[0]["address"] == f"127.0.0.1:{grpc_port}"
    assert (home / "pg" / "PG_VERSION").exists()  # the data persists
    assert "export STOKER_TOKEN=" + profiles[0]["token"] in log_path.read_text()


def test_lite_takes_env_ports_and_refuses_a_second_lite_on_its_data_dir(tmp_path: Path) -> None:
    """STOKER_GRPC_PORT/STOKER_HTTP_PORT as the README says; one lite per data directory."""
    home, log_path = tmp_path / "home", tmp_path / "lite.log"
    grpc_port, http_port = free_port(), free_port()
    env = {
        **_clean_env(),
        "STOKER_HOME": str(home),
        "STOKER_GRPC_PORT": str(grpc_port),
        "STOKER_HTTP_PORT": str(http_port),
    }
    with log_path.open("ab") as log:
        first = spawn(
            [sys.executable, "-m", "stoker", "lite"],
            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        health = f"http://127.0.0.1:{http_port}/healthz"
        wait_until(lambda: _healthy(health), 90, "stoker lite on STOKER_HTTP_PORT", log_path)
        profile = (home / "profile.json").read_text()
        assert json.loads(profile)["address"] == f"127.0.0.1:{grpc_port}"
        # The engine banner gives the lines to paste, outside the box.
        token = json.loads(profile)["token"]
        assert f"\nexport STOKER_TOKEN={token}\n" in log_path.read_text()

        other = ["--grpc-port", str(free_port()), "--http-port", str(free_port())]
        second = stoker("lite", *other, env={"STOKER_HOME": str(home)})
        assert second.returncode == 2, second.stderr
        assert (
            f"another `stoker lite` (pid {first.pid}, gRPC 127.0.0.1:{grpc_port}, "
            f"REST API http://127.0.0.1:{http_port}) is running on the data directory {home}"
        ) in " ".join(second.stderr.split())
        assert "Traceback" not in second.stderr
        # The first one is untouched: same profile, still serving.
        assert (home / "profile.json").read_text() == profile
        assert _healthy(health)
    finally:
        first.send_signal(signal.SIGTERM)
        code = first.wait(timeout=60)
    assert code == 0, log_path.read_text()[-4000:]


def test_help_and_version() -> None:
    done = stoker("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stoker 0.1.0"
    for command in ("lite", "engine", "worker"):
        shown = stoker(command, "--help", env={"COLUMNS": "120"})
        assert shown.returncode == 0, shown.stderr
        assert "--verbose" in shown.stdout and "Debug logging" in shown.stdout
        assert "<bool>" not in shown.stdout  # flags take no value
    assert "<int>" in stoker("lite", "--help", env={"COLUMNS": "120"}).stdout


def _run_quickstart(folder: Path, env: dict[str, str]) -> None:
    """hello.py and run_hello.py from the README, configured by the lite profile alone."""
    from tests.snippets import examples

    folder.mkdir()
    files = examples(REPO / "README.md")
    for name in ("hello.py", "run_hello.py"):
        (folder / name).write_text(files[name])
    with (folder / "worker.log").open("ab") as log:
        worker = spawn(
            [sys.executable, "-m", "stoker", "worker", "hello:app"],
            env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        done = subprocess.run(
            [sys.executable, "run_hello.py"],
            env=env, cwd=folder, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        worker_log = (folder / "worker.log").read_text()
        assert done.returncode == 0, f"{done.stderr}\n--- worker ---\n{worker_log}"
        assert done.stdout.strip() == "{'message': 'hello world'}"
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=40)


def _clean_env() -> dict[str, str]:
    """This process's environment minus anything that would point Stoker elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    env.pop("DATABASE_URL", None)
    return env


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def test_enqueue_role_grant_list_and_revoke(db_url: str) -> None:
    env = {"DATABASE_URL": db_url}
    role = f"stoker_cli_{uuid.uuid4().hex[:8]}"
    assert stoker("token", "create", "--tenant", "shop", env=env).returncode == 0
    unknown = stoker("enqueue-role", "grant", role, "--tenant", "shop", env=env)
    assert unknown.returncode == 2 and f"no database role {role}" in unknown.stderr
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN'.encode())
    try:
        no_tenant = stoker("enqueue-role", "grant", role, "--tenant", "nope", env=env)
        assert no_tenant.returncode == 2 and "no tenant nope" in no_tenant.stderr
        granted = stoker("enqueue-role", "grant", role, "--tenant", "shop", env=env)
        assert granted.returncode == 0, granted.stderr
        listed = stoker("enqueue-role", "list", env=env)
        assert role in listed.stdout and "shop" in listed.stdout
        with psycopg.connect(db_url) as conn:
            (allowed,) = conn.execute(  # type: ignore[misc]
                "SELECT has_function_privilege(%s, 'stoker.enqueue_runs(text)', 'EXECUTE')",
                (role,),
            ).fetchone()
        assert allowed
        assert stoker("enqueue-role", "revoke", role, env=env).returncode == 0
        again = stoker("enqueue-role", "revoke", role, env=env)
        assert again.returncode == 2 and "may not enqueue" in again.stderr
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"'.encode())
            conn.execute(f'DROP ROLE "{role}"'.encode())
