"""Every example in the README runs, as written, against a real engine and worker.

A README code block whose first line is ``# file: NAME.py`` is written to a folder as that
file. Each module that declares an app gets a real worker process (``stoker worker
module:app``, plus the arguments its ``# worker:`` line gives); then every ``run_*.py``
runs as a user would run it, with the engine address and token in the environment.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO, WorkerProcess

README = REPO / "README.md"
BLOCK = re.compile(r"```python\n# file: (?P<name>[\w.]+)\n(?P<body>.*?)```", re.DOTALL)

pytestmark = pytest.mark.timeout(180)


def examples() -> dict[str, str]:
    found = {
        m["name"]: f"# file: {m['name']}\n{m['body']}" for m in BLOCK.finditer(README.read_text())
    }
    assert found, "the README has no runnable examples"
    return found


def test_every_readme_example_runs(engine: Any, tenant: Any, tmp_path: Path) -> None:
    files = examples()
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    modules = [n for n, b in files.items() if not n.startswith("run_") and "Stoker()" in b]
    assert {"hello.py", "run_hello.py"} <= set(files)
    workers = []
    try:
        for module in modules:
            args = re.search(r"^# worker: (.*)$", files[module], re.MULTILINE)
            worker = WorkerProcess(
                f"{module[:-3]}:app",
                tenant,
                engine.db_url,
                tmp_path,
                module[:-3],
                slots=100,
                extra_args=shlex.split(args[1]) if args else [],
                cwd=tmp_path,
            )
            workers.append(worker.start())
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
        env.update(tenant.env)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
        for script in sorted(n for n in files if n.startswith("run_")):
            done = subprocess.run(
                [sys.executable, script], cwd=tmp_path, env=env, capture_output=True, text=True,
                timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
            if script == "run_hello.py":
                assert done.stdout.strip() == "{'message': 'hello world'}"
    finally:
        for worker in workers:
            worker.kill()


def test_the_readme_curl_example_works_with_the_exported_token(engine: Any, tenant: Any) -> None:
    """The REST API example, run by a shell holding the token as `stoker lite` exports it."""
    text = README.read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("curl ")]
    assert "$STOKER_TOKEN" in line
    assert "export STOKER_TOKEN=" in text  # the README says where the variable comes from
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    env["STOKER_TOKEN"] = tenant.token
    done = subprocess.run(
        ["bash", "-c", f"{line.replace('http://127.0.0.1:7078', engine.http_url)} --fail -sS"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["items"] == []
