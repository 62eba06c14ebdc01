"""Testing helpers: a pytest plugin with an engine and a worker for your app, and the
in-process stand-ins (``task.mock_run``, :class:`MockContext`). README "Testing".

Enable the plugin with ``pytest -p stoker.testing`` (or ``pytest_plugins =
["stoker.testing"]`` in a conftest; installing Stoker also registers it under the
``pytest11`` entry point, so it is on wherever Stoker is installed). Then:

* ``stoker_engine`` (session): an engine for the whole test session. By default
  ``stoker lite`` on an embedded Postgres in a temporary folder, on free ports; with
  ``STOKER_TEST_ADDRESS`` and ``STOKER_TEST_TOKEN`` set, that engine instead.
* ``stoker_app``: your app — define this fixture in your conftest (return the
  ``Stoker`` object your tasks are declared on).
* ``stoker_worker``: a worker for ``stoker_app`` running in-process (on its own thread
  and event loop) for the test, connected to ``stoker_engine``; the app is pointed at
  that engine first, so ``await my_task.aio_run(...)`` in the test runs end to end.
  Options come from ``stoker_worker_options`` (a fixture returning the keywords of
  ``app.worker(...)``; override it to set slots, a lifespan or an executor).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stoker._sdk.app import Stoker
from stoker._sdk.mocking import MockContext
from stoker._sdk.worker import Worker

START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class TestEngine:
    """Where the test session's engine listens, and a token for its tenant."""

    __test__ = False  # not a test class, whatever pytest's collection rules say

    address: str
    token: str
    http_url: str = ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(http_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{http_url}/healthz", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


class LiteEngine:
    """``stoker lite`` in a temporary folder, on free ports, for one test session."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="stoker-test-")
        self.home = Path(self._dir.name)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> TestEngine:
        grpc_port, http_port = _free_port(), _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
        env.pop("DATABASE_URL", None)
        env["STOKER_HOME"] = str(self.home)
        log = (self.home / "lite.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stoker", "lite", "--data-dir", str(self.home),
             "--grpc-port", str(grpc_port), "--http-port", str(http_port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        http_url = f"http://127.0.0.1:{http_port}"
        profile = self.home / "profile.json"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (profile.exists() and _healthy(http_url)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.home / "lite.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"stoker lite did not start for the tests:\n{tail}")
            time.sleep(0.1)
        saved = json.loads(profile.read_text())
        return TestEngine(saved["address"], saved["token"], http_url)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._dir.cleanup()


@pytest.fixture(scope="session")
def stoker_engine() -> Iterator[TestEngine]:
    """The test session's engine (see the module docstring)."""
    address, token = os.environ.get("STOKER_TEST_ADDRESS"), os.environ.get("STOKER_TEST_TOKEN")
    if address and token:
        yield TestEngine(address, token, os.environ.get("STOKER_TEST_HTTP", ""))
        return
    lite = LiteEngine()
    try:
        yield lite.start()
    finally:
        lite.stop()


@pytest.fixture
def stoker_app() -> Stoker:
    """Your app: override this fixture in your conftest.py."""
    raise pytest.UsageError(
        "the stoker_worker fixture needs your app: define a `stoker_app` fixture in your "
        "conftest.py that returns the Stoker object your tasks are declared on"
    )


@pytest.fixture
def stoker_worker_options() -> dict[str, Any]:
    """Keywords for ``app.worker(...)`` (override to set slots, lifespan, executor...)."""
    return {"slots": 10}


def point_at(app: Stoker, engine: TestEngine) -> None:
    """Makes ``app`` talk to ``engine`` (its next call opens a new connection)."""
    app._overrides.update(address=engine.address, token=engine.token)
    app.close()


@pytest.fixture
def stoker_worker(
    stoker_engine: TestEngine, stoker_app: Stoker, stoker_worker_options: dict[str, Any]
) -> Iterator[Worker]:
    """A worker for ``stoker_app`` running in-process for the test (see the module
    docstring); stopped, without waiting for what still runs, after the test."""
    point_at(stoker_app, stoker_engine)
    options = {"name": f"pytest-{os.getpid()}", **stoker_worker_options}
    worker = stoker_app.worker(**options)
    loop = asyncio.new_event_loop()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_until_complete(worker.async_start())
        except BaseException as exc:  # reported to the test below
            failed.append(exc)

    thread = threading.Thread(target=run, name="stoker-test-worker", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while worker.connected is None or not worker.connected.is_set():
        if failed or not thread.is_alive():
            raise RuntimeError(f"the test worker did not start: {failed[0] if failed else ''}")
        if time.monotonic() > deadline:
            raise RuntimeError("the test worker did not connect in time")
        time.sleep(0.01)
    try:
        yield worker
    finally:
        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(worker.stop(wait=False)))
        thread.join(30)
        loop.close()
        stoker_app.close()
        if failed and not isinstance(failed[0], asyncio.CancelledError):
            raise failed[0]


__all__ = ["MockContext", "TestEngine", "point_at"]
