"""pgqueuer: a bare Postgres queue whose workers dequeue with SKIP LOCKED in batches.

Workers are our own runner processes (``python -m bench.systems.pgqueuer``), each a
``QueueManager`` over one asyncpg connection, the way ``pgq run`` sets it up (on uvloop
when installed), with a batch size of 50, the top of the range pgqueuer's docs suggest
(10-50). Tables keep pgqueuer's durable default (LOGGED).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Sequence
from datetime import timedelta

import asyncpg
from pgqueuer import AsyncpgDriver, AsyncpgPoolDriver, Job, QueueManager
from pgqueuer.queries import Queries

from bench import recorder
from bench.systems import System, python

ENTRYPOINT = "noop"
BULK_CHUNK = 5_000


class PgQueuerSystem(System):
    """pgqueuer with asyncpg, batch size = ``concurrency`` (default 50) per process."""

    name = "pgqueuer"
    # The top of the 10-50 range pgqueuer's docs suggest: its best drain on 2 cores
    # (measured: 10 -> ~4,400/s, 20 -> ~7,500/s, 50 -> ~13,500/s).
    default_concurrency = 50

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._pool: asyncpg.Pool | None = None
        self._queries: Queries | None = None

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "driver": "asyncpg", "batch_size": self.concurrency}

    async def install(self) -> None:
        conn = await asyncpg.connect(self.db_url)
        try:
            await Queries(AsyncpgDriver(conn)).install()
        finally:
            await conn.close()
        self._pool = await asyncpg.create_pool(self.db_url, min_size=2, max_size=10)
        self._queries = Queries(AsyncpgPoolDriver(self._pool))

    async def teardown(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        await super().teardown()

    @property
    def queries(self) -> Queries:
        assert self._queries is not None, "setup() first"
        return self._queries

    async def enqueue_bulk(self, seqs: Sequence[int]) -> None:
        for i in range(0, len(seqs), BULK_CHUNK):
            chunk = seqs[i : i + BULK_CHUNK]
            await self.queries.enqueue(
                [ENTRYPOINT] * len(chunk), [str(s).encode() for s in chunk], [0] * len(chunk)
            )

    async def enqueue_one(self, seq: int) -> None:
        await self.queries.enqueue(ENTRYPOINT, str(seq).encode())

    def worker_argv(self, index: int) -> list[str]:
        return [python(), "-m", "bench.systems.pgqueuer"]

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_DB_URL": self.db_url, "BENCH_BATCH_SIZE": str(self.concurrency)}

    async def pending(self) -> int | None:
        assert self._pool is not None
        return int(await self._pool.fetchval("SELECT count(*) FROM pgqueuer"))


async def _work() -> None:
    """A worker process: one QueueManager until SIGTERM."""
    conn = await asyncpg.connect(os.environ["BENCH_DB_URL"])
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint(ENTRYPOINT)
    async def noop(job: Job) -> None:
        recorder.noop(int(job.payload or b"0"))

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, qm.shutdown.set)
    await qm.run(
        batch_size=int(os.environ.get("BENCH_BATCH_SIZE", "50")),
        dequeue_timeout=timedelta(seconds=5),
    )
    await conn.close()


if __name__ == "__main__":
    # `pgq run` uses uvloop when it is installed; so do we.
    try:
        import uvloop
    except ImportError:
        asyncio.run(_work())
    else:
        uvloop.run(_work())
