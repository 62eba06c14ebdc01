"""Runs the examples of a Markdown page as a user would: the one helper of tests/docs.

A code block whose first line is ``# file: NAME.py`` is an example file. Each module that
declares an app (``Stoker()``) gets a real worker process (``stoker worker module:app``,
plus the arguments its ``# worker:`` line gives; ``# worker: none``: no worker); then
every ``run_*.py`` runs in its own interpreter, in name order, with the tenant's engine
address and token in the environment.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.harness import REPO, EngineProcess, Tenant, WorkerProcess

BLOCK = re.compile(r"```python\n# file: (?P<name>[\w.]+)\n(?P<body>.*?)```", re.DOTALL)


def examples(page: Path) -> dict[str, str]:
    """The page's example files by name, each with its ``# file:`` line."""
    found = {
        m["name"]: f"# file: {m['name']}\n{m['body']}" for m in BLOCK.finditer(page.read_text())
    }
    assert found, f"{page.name} has no runnable examples"
    return found


def run_examples(
    files: dict[str, str],
    engine: EngineProcess,
    tenant: Tenant,
    folder: Path,
    timeout: float,
    env: dict[str, str] | None = None,
) -> dict[str, str]:
    """Writes ``files`` to ``folder``, serves their apps, runs every ``run_*.py`` (with
    ``env`` added to its environment); returns each script's stdout. A script that exits
    non-zero fails the test with its output."""
    for name, body in files.items():
        (folder / name).write_text(body)
    modules = [n for n, b in files.items() if not n.startswith("run_") and "Stoker()" in b]
    workers: list[WorkerProcess] = []
    outputs: dict[str, str] = {}
    try:
        for module in modules:
            args = re.search(r"^# worker: (.*)$", files[module], re.MULTILINE)
            if args and args[1].split()[0] == "none":
                continue  # served otherwise (an HTTP push worker behind uvicorn)
            worker = WorkerProcess(
                f"{module[:-3]}:app", tenant, engine.db_url, folder, module[:-3], slots=100,
                extra_args=shlex.split(args[1]) if args else [], cwd=folder,
            )  # fmt: skip
            workers.append(worker.start())
        given = env or {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
        env.update(tenant.env)
        env["ENGINE_HTTP"] = engine.http_url  # the webhook examples' engine HTTP address
        env.update(given)
        env["PYTHONPATH"] = os.pathsep.join([str(folder), str(REPO)])
        for script in sorted(n for n in files if n.startswith("run_")):
            done = subprocess.run(
                [sys.executable, script], cwd=folder, env=env, capture_output=True, text=True,
                timeout=timeout,
            )  # fmt: skip
            assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
            outputs[script] = done.stdout
    finally:
        for worker in workers:
            worker.kill()
    return outputs
