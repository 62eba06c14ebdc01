"""Worker operations from the shell: ``stoker worker --reload`` restarts on code change."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from stoker import Stoker
from tests.harness import _env, spawn, wait_until

pytestmark = pytest.mark.timeout(120)

MODULE = """
from typing import Any

from stoker import Context, Stoker

app = Stoker()


@app.task()
def version(input: Any, ctx: Context) -> str:
    return "{version}"
"""


def test_reload_restarts_the_worker_when_a_source_changes(
    engine: Any, tenant: Any, tmp_path: Path
) -> None:
    source = tmp_path / "reloadme.py"
    source.write_text(MODULE.format(version="v1"))
    log = (tmp_path / "worker.log").open("wb")
    env = {
        **_env(tenant.env),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), _env({})["PYTHONPATH"]]),
    }
    proc = spawn(
        [sys.executable, "-m", "stoker", "worker", "reloadme:app", "--reload", "--grace", "1"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    app = Stoker(address=engine.grpc_address, token=tenant.token, connect_timeout=30)
    try:

        def answer() -> str | None:
            try:
                return str(app.run_no_wait("version", {}).result(timeout=5))
            except Exception:  # not registered yet, or restarting
                return None

        assert wait_until(answer, timeout=60, what="the first worker") == "v1"
        source.write_text(MODULE.format(version="v2"))
        later = time.time() + 2  # a modification time surely different from the first
        os.utime(source, (later, later))
        wait_until(lambda: answer() == "v2", timeout=60, what="the reloaded worker")
        assert "reloadme.py changed; restarting the worker" in (tmp_path / "worker.log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        finally:
            proc.kill()
            log.close()
            app.close()
