"""The systems under test: one module per system, one :class:`System` subclass each.

A system knows how to make its schema in a fresh database, enqueue the no-op task in bulk
and one at a time, and start and stop real worker processes whose task body is
:func:`bench.recorder.noop`. Scenarios only talk to this interface, so a peer is compared
with Stoker on exactly the same workload and measurement.

This package is imported by worker processes too: keep its top level light.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from bench.pg import Server

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Env:
    """What every system is given: the server, scratch space and the worker layout."""

    server: Server
    work_dir: Path
    worker_procs: int = 2
    concurrency: dict[str, int] = field(default_factory=dict)


@dataclass
class Proc:
    """A worker (or engine) subprocess with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    """Starts ``argv`` in its own session with output to ``<log_dir>/<name>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    full_env = {**os.environ, **env}
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), full_env.get("PYTHONPATH", "")) if p
    )
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Proc(name, popen, log)


def stop_procs(procs: Sequence[Proc], timeout: float = 15.0, sig: int = signal.SIGTERM) -> None:
    """Asks each process to stop, waits, then kills what is left of its session."""
    for proc in procs:
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(sig)
    deadline = time.monotonic() + timeout
    for proc in procs:
        remaining = max(0.1, deadline - time.monotonic())
        try:
            proc.popen.wait(remaining)
        except subprocess.TimeoutExpired:
            pass
        # The session holds any pool children (Celery prefork); none may outlive the run.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(5)


def python() -> str:
    """The interpreter running the harness; workers use the same environment."""
    return sys.executable


class System(ABC):
    """One task queue under test."""

    name: ClassVar[str]
    """Short name used on the command line and in results."""
    default_concurrency: ClassVar[int] = 10
    max_drain_tasks: ClassVar[int | None] = None
    """A cap on the drain's size for a system too slow to drain the full profile's N in
    reasonable time (its rate per task barely depends on N; the report shows the count)."""
    """Tasks in flight per worker process unless ``--concurrency`` says otherwise."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.db_url = ""
        self.workers: list[Proc] = []

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this system cannot run here, or None when it can."""
        return None

    @property
    def concurrency(self) -> int:
        return self.env.concurrency.get(self.name, self.default_concurrency)

    @property
    def log_dir(self) -> Path:
        return self.env.work_dir / self.name / "logs"

    def version(self) -> str:
        """The installed version of the system (for the report)."""
        from importlib.metadata import version

        return version(self.name)

    def describe(self) -> dict[str, Any]:
        """The configuration the numbers were measured with."""
        return {
            "version": self.version(),
            "worker_processes": self.env.worker_procs,
            "concurrency_per_process": self.concurrency,
        }

    async def setup(self) -> None:
        """Creates this system's database and schema (and any server it needs)."""
        from bench.pg import create_database

        self.db_url = create_database(self.env.server, self.name)
        await self.install()

    async def teardown(self) -> None:
        """Stops workers and drops the database; safe to call twice."""
        await self.stop_workers()
        if self.db_url:
            from bench.pg import drop_database

            drop_database(self.env.server, self.db_url)
            self.db_url = ""

    async def reset(self) -> None:
        """Back to an empty queue in a fresh database."""
        await self.teardown()
        await self.setup()

    @abstractmethod
    async def install(self) -> None:
        """Makes the system's schema in ``self.db_url``."""

    @abstractmethod
    async def enqueue_bulk(self, seqs: Sequence[int]) -> None:
        """Enqueues one no-op task per sequence number, the fastest way the system offers."""

    @abstractmethod
    async def enqueue_one(self, seq: int) -> None:
        """Enqueues one no-op task the way an application would (one call, one task)."""

    @abstractmethod
    def worker_argv(self, index: int) -> list[str]:
        """The command line of worker process ``index``."""

    def worker_env(self) -> dict[str, str]:
        """Environment for the worker processes (beyond the recorder directory)."""
        return {}

    def start_workers(self, recorder_dir: Path) -> None:
        """Starts ``env.worker_procs`` worker processes recording into ``recorder_dir``."""
        recorder_dir.mkdir(parents=True, exist_ok=True)
        env = {"BENCH_RECORDER_DIR": str(recorder_dir), **self.worker_env()}
        for index in range(self.env.worker_procs):
            self.workers.append(
                spawn(f"worker-{index}", self.worker_argv(index), env, self.log_dir)
            )

    async def stop_workers(self) -> None:
        """Stops the worker processes (gracefully, then by force)."""
        import asyncio

        workers, self.workers = self.workers, []
        await asyncio.to_thread(stop_procs, workers)

    def check_workers(self) -> None:
        """Raises with the log tail if a worker process died."""
        for proc in self.workers:
            code = proc.popen.poll()
            if code is not None:
                raise RuntimeError(
                    f"{self.name} {proc.name} exited with {code}; log tail:\n{proc.tail()}"
                )

    def worker_pids(self) -> list[int]:
        return [p.popen.pid for p in self.workers]

    def server_pids(self) -> list[int]:
        """Processes of the system's own server side (engine, broker), if any."""
        return []

    async def pending(self) -> int | None:
        """Unfinished tasks in the system's own bookkeeping, or None if it keeps none.

        Called only after the workers have recorded every task, to see when the system
        itself has caught up (results written, jobs marked done).
        """
        return None


def registry() -> dict[str, type[System]]:
    """Every system by name, in report order (Stoker first)."""
    from bench.systems.celery import CelerySystem
    from bench.systems.pgqueuer import PgQueuerSystem
    from bench.systems.procrastinate import ProcrastinateSystem
    from bench.systems.stoker import StokerSystem

    return {
        cls.name: cls for cls in (StokerSystem, PgQueuerSystem, ProcrastinateSystem, CelerySystem)
    }
