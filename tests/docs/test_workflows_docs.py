"""Every example in docs/workflows.md runs, as written, against a real engine and workers.

As in tests/test_readme.py: a code block whose first line is ``# file: NAME.py`` is written
out; each module that declares an app gets a worker process; every ``run_*.py`` runs as a
user would run it, with the engine address and token in the environment.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO, WorkerProcess

DOC = REPO / "docs" / "workflows.md"
BLOCK = re.compile(r"```python\n# file: (?P<name>[\w.]+)\n(?P<body>.*?)```", re.DOTALL)

pytestmark = pytest.mark.timeout(120)


def test_every_workflows_doc_example_runs(engine: Any, tenant: Any, tmp_path: Path) -> None:
    files = {
        m["name"]: f"# file: {m['name']}\n{m['body']}" for m in BLOCK.finditer(DOC.read_text())
    }
    assert {"checkout.py", "run_checkout.py", "run_fanout.py", "run_cancel_replay.py"} <= set(files)
    for name, body in files.items():
        (tmp_path / name).write_text(body)
    modules = [n for n, b in files.items() if not n.startswith("run_") and "Stoker()" in b]
    workers = []
    try:
        for module in modules:
            worker = WorkerProcess(
                f"{module[:-3]}:app", tenant, engine.db_url, tmp_path, module[:-3],
                slots=100, cwd=tmp_path,
            )  # fmt: skip
            workers.append(worker.start())
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
        env.update(tenant.env)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
        for script in sorted(n for n in files if n.startswith("run_")):
            done = subprocess.run(
                [sys.executable, script], cwd=tmp_path, env=env, capture_output=True, text=True,
                timeout=90,
            )  # fmt: skip
            assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    finally:
        for worker in workers:
            worker.kill()
