"""Celery with the Redis broker: the most common Python task queue, not on Postgres.

One ``celery worker`` with a prefork pool of ``env.worker_procs`` processes (so as many
processes run tasks as for the other systems), prefetch multiplier = ``concurrency``,
result backend off, early acks (Celery's defaults). The broker is Redis on a dedicated
database number, flushed at setup; when no Redis answers and ``redis-server`` is on PATH,
the suite starts one for the run. Redis here keeps its default persistence (periodic
snapshots, no fsync per message), so Celery does not pay for durable commits the way the
Postgres-backed systems do.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import redis
from celery import Celery

from bench import recorder
from bench.net import free_port
from bench.systems import Proc, System, python, spawn, stop_procs

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
QUEUE = "bench"


def make_app(broker_url: str, prefetch: int = 16) -> Celery:
    """A Celery app on ``broker_url`` with the no-op task registered."""
    app = Celery("bench", broker=broker_url)
    app.conf.update(
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=QUEUE,
        worker_prefetch_multiplier=prefetch,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )

    # Not shared: the harness and the module-level app each have their own task.
    @app.task(name="noop", shared=False)  # type: ignore[untyped-decorator]
    def noop(seq: int) -> None:
        recorder.noop(seq)

    return app


# The worker processes load this module-level app (``celery -A bench.systems.celery:app``).
app = make_app(
    os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL),
    int(os.environ.get("BENCH_PREFETCH", "16")),
)


def _reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


class CelerySystem(System):
    """Celery + Redis; ``concurrency`` is the prefetch multiplier (default 16)."""

    name = "celery"
    default_concurrency = 16

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
        self._redis_server: Proc | None = None
        self._app: Celery | None = None

    @classmethod
    def unavailable(cls) -> str | None:
        url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
        if _reachable(url) or shutil.which("redis-server"):
            return None
        return f"no Redis answers at {url} and redis-server is not on PATH"

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "pool": f"prefork x{self.env.worker_procs}",
            "prefetch_multiplier": self.concurrency,
            "broker": self.redis_url,
            "result_backend": None,
        }

    async def setup(self) -> None:
        # Celery needs no database; the broker gets a flushed, dedicated Redis db instead.
        if not _reachable(self.redis_url):
            port = free_port()
            self._redis_server = spawn(
                "redis-server",
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
                {},
                self.log_dir,
            )
            self.redis_url = f"redis://127.0.0.1:{port}/13"
            for _ in range(100):
                if _reachable(self.redis_url):
                    break
                await asyncio.sleep(0.05)
        await self.install()

    async def install(self) -> None:
        redis.Redis.from_url(self.redis_url).flushdb()
        self._app = make_app(self.redis_url, self.concurrency)

    async def teardown(self) -> None:
        await self.stop_workers()
        if self._app is not None:
            redis.Redis.from_url(self.redis_url).flushdb()
            self._app.close()
            self._app = None
        if self._redis_server is not None:
            await asyncio.to_thread(stop_procs, [self._redis_server])
            self._redis_server = None

    @property
    def app(self) -> Celery:
        assert self._app is not None, "setup() first"
        return self._app

    def _send_many(self, seqs: Sequence[int]) -> None:
        task = self.app.tasks["noop"]
        with self.app.producer_or_acquire() as producer:
            for seq in seqs:
                task.apply_async((seq,), producer=producer)

    async def enqueue_bulk(self, seqs: Sequence[int]) -> None:
        # Celery has no bulk enqueue; one producer connection, one message per task.
        await asyncio.to_thread(self._send_many, seqs)

    async def enqueue_one(self, seq: int) -> None:
        # A Redis LPUSH on loopback: called inline like an application would.
        self.app.tasks["noop"].apply_async((seq,))

    def start_workers(self, recorder_dir: Path) -> None:
        # One main process whose prefork pool has env.worker_procs children.
        recorder_dir.mkdir(parents=True, exist_ok=True)
        env = {"BENCH_RECORDER_DIR": str(recorder_dir), **self.worker_env()}
        self.workers.append(spawn("worker-0", self.worker_argv(0), env, self.log_dir))

    def worker_argv(self, index: int) -> list[str]:
        return [
            python(),
            "-m",
            "celery",
            "-A",
            "bench.systems.celery:app",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            str(self.env.worker_procs),
            "--queues",
            QUEUE,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
            "--hostname",
            f"bench{index}@%h",
        ]

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_REDIS_URL": self.redis_url, "BENCH_PREFETCH": str(self.concurrency)}

    def server_pids(self) -> list[int]:
        try:
            return [int(redis.Redis.from_url(self.redis_url).info("server")["process_id"])]
        except (redis.RedisError, KeyError, ValueError):
            return []
