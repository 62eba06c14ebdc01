"""Stoker: the engine process between the SDK and Postgres, workers on gRPC streams.

Per run: a fresh database migrated with ``python -m stoker migrate``, a tenant token from
``python -m stoker token create --tenant bench``, one engine (``python -m stoker engine``)
on free ports, ready when ``/healthz`` answers 200. Workers are separate processes
(``python -m bench.systems.stoker``) running ``app.worker("bench", slots=N).start()``.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import os
import re
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from bench import recorder
from bench.net import free_port, healthy
from bench.systems import Proc, System, python, spawn, stop_procs
from stoker import (
    ConcurrencyExpression,
    Context,
    DesiredWorkerLabel,
    RateLimit,
    Stoker,
)

BULK_CHUNK = 5_000
ENGINE_READY_TIMEOUT_S = 60.0


class Noop(BaseModel):
    """The no-op task's input: its sequence number in the run."""

    seq: int


# The policy scenario drains the same no-op under each scheduling policy.
POLICY_KEYS = 1_000
RATE_LIMIT_KEY = "bench"
VARIANTS: dict[str, dict[str, Any]] = {
    "noop": {},
    # 1,000 concurrency keys, one run per key at a time.
    "noop_keyed": {
        "concurrency": ConcurrencyExpression(
            expression=f"string(input.seq % {POLICY_KEYS})", max_runs=1
        )
    },
    # A static rate limit high enough never to bind: what checking it costs.
    "noop_limited": {"rate_limits": [RateLimit(static_key=RATE_LIMIT_KEY, units=1)]},
    # A required and a weighted label, matched against every worker.
    "noop_labelled": {
        "desired_worker_labels": {
            "zone": DesiredWorkerLabel(value="a", required=True),
            "tier": DesiredWorkerLabel(value=2, weight=10),
        }
    },
}
WORKER_LABELS: dict[str, str | int] = {"zone": "a", "tier": 2}


def traced_app(**options: Any) -> Stoker:
    """An app whose calls and attempts are traced (``stoker.otel.Tracing``): spans made and
    ended by the OpenTelemetry SDK, batched, and dropped by the exporter, so what is
    measured is the cost of tracing in the process, not of a collector."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from stoker.otel import Tracing

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    return Stoker(interceptors=[Tracing.using(provider)], **options)


def declare(app: Stoker) -> Stoker:
    """Puts the benchmark's no-op task, and its policy variants, on ``app``."""

    async def noop(input: Noop, ctx: Context) -> dict[str, Any]:
        recorder.noop(input.seq)
        return {}

    for name, options in VARIANTS.items():
        app.task(name=name, **options)(noop)
    return app


class StokerSystem(System):
    """Stoker engine + SDK workers; ``concurrency`` is slots per worker (default 100)."""

    name = "stoker"
    default_concurrency = 100

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.engine: Proc | None = None
        self.token = ""
        self.grpc_port = 0
        self.http_port = 0
        self._client: Stoker | None = None
        self.variant = "noop"
        """The task ``enqueue_bulk`` enqueues (see VARIANTS)."""
        self.tracing = False
        """Enqueue and run with ``stoker.otel.Tracing``, spans recorded by the OpenTelemetry
        SDK and handed to an exporter that drops them (the ``tracing`` scenario)."""
        self._traced: Stoker | None = None

    @classmethod
    def unavailable(cls) -> str | None:
        if importlib.util.find_spec("stoker.__main__") is None:
            return (
                "Stoker's command line (python -m stoker engine / migrate / token) is not "
                "in this checkout yet"
            )
        return None

    def version(self) -> str:
        import stoker

        return stoker.__version__

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "slots_per_worker": self.concurrency}

    def _stoker(self, *args: str) -> str:
        result = subprocess.run(
            [python(), "-m", "stoker", *args],
            env={**os.environ, "DATABASE_URL": self.db_url},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"python -m stoker {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    async def install(self) -> None:
        await asyncio.to_thread(self._stoker, "migrate")
        out = await asyncio.to_thread(self._stoker, "token", "create", "--tenant", "bench")
        found = re.findall(r"stk_\S+", out)
        self.token = found[-1] if found else out.strip().splitlines()[-1].strip()
        self.grpc_port, self.http_port = free_port(), free_port()
        self.engine = spawn(
            "engine",
            [python(), "-m", "stoker", "engine"],
            {
                "DATABASE_URL": self.db_url,
                "STOKER_GRPC_PORT": str(self.grpc_port),
                "STOKER_HTTP_PORT": str(self.http_port),
                # Seals the secrets of HTTP push endpoints (the push scenario).
                "STOKER_WEBHOOK_SECRET_KEY": base64.b64encode(os.urandom(32)).decode(),
            },
            self.log_dir,
        )
        health = f"http://127.0.0.1:{self.http_port}/healthz"
        deadline = time.monotonic() + ENGINE_READY_TIMEOUT_S
        while not await asyncio.to_thread(healthy, health):
            if self.engine.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Stoker engine did not become ready:\n{self.engine.tail()}")
            await asyncio.sleep(0.1)
        self._client = declare(Stoker(address=self.address, token=self.token))
        await self._client.rate_limits.aio_put(RATE_LIMIT_KEY, limit=10_000_000, duration="second")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def client(self) -> Stoker:
        assert self._client is not None, "setup() first"
        return self._client

    async def teardown(self) -> None:
        await self.stop_workers()
        if self._traced is not None:
            self._traced.close()
            self._traced = None
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.engine is not None:
            await asyncio.to_thread(stop_procs, [self.engine])
            self.engine = None
        await super().teardown()

    async def enqueue_bulk(self, seqs: Sequence[int]) -> None:
        app = self.client
        if self.tracing:
            if self._traced is None:
                self._traced = declare(traced_app(address=self.address, token=self.token))
            app = self._traced
        task = app.tasks[self.variant]
        for i in range(0, len(seqs), BULK_CHUNK):
            await task.aio_run_many([Noop(seq=s) for s in seqs[i : i + BULK_CHUNK]])

    async def enqueue_one(self, seq: int) -> None:
        await self.client.tasks["noop"].aio_run_no_wait(Noop(seq=seq))

    def worker_argv(self, index: int) -> list[str]:
        return [python(), "-m", "bench.systems.stoker", f"bench-{index}"]

    def worker_env(self) -> dict[str, str]:
        return {
            "STOKER_ADDRESS": self.address,
            "STOKER_TOKEN": self.token,
            "BENCH_SLOTS": str(self.concurrency),
            "BENCH_TRACING": "1" if self.tracing else "",
        }

    def server_pids(self) -> list[int]:
        return [self.engine.popen.pid] if self.engine is not None else []

    async def pending(self) -> int | None:
        # Best effort: reads the engine's task table; None if the schema has moved on.
        import psycopg

        try:
            async with await psycopg.AsyncConnection.connect(self.db_url) as conn:
                cur = await conn.execute(
                    "SELECT count(*) FROM stoker.task WHERE finished_at IS NULL"
                )
                row = await cur.fetchone()
        except psycopg.Error:
            return None
        return int(row[0]) if row else None


def _work(name: str) -> None:
    """A worker process: the SDK's worker with BENCH_SLOTS slots, until SIGTERM."""
    app = declare(traced_app() if os.environ.get("BENCH_TRACING") else Stoker())
    slots = int(os.environ.get("BENCH_SLOTS", "100"))
    app.worker(name, slots=slots, labels=WORKER_LABELS).start()


if __name__ == "__main__":
    import sys

    _work(sys.argv[1] if len(sys.argv) > 1 else "bench")
