"""procrastinate: a Postgres task queue; each job is fetched by a stored procedure.

Workers are ``app.run_worker_async(concurrency=N)`` in separate processes
(``python -m bench.systems.procrastinate``), on the psycopg connector, with
LISTEN/NOTIFY on (procrastinate's default). Finished jobs are kept, also the default.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

import procrastinate
from procrastinate.types import JSONValue

from bench import recorder
from bench.systems import System, python

BULK_CHUNK = 5_000


def make_app(db_url: str, pool_size: int = 10) -> procrastinate.App:
    """A procrastinate app on ``db_url`` with the no-op task registered."""
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=db_url, min_size=1, max_size=pool_size)
    )

    @app.task(name="noop")
    async def noop(seq: int) -> None:
        recorder.noop(seq)

    return app


class ProcrastinateSystem(System):
    """procrastinate with ``concurrency`` (default 20) jobs in flight per process."""

    name = "procrastinate"
    # About 280 jobs/s here: 100,000 would take six minutes per drain.
    max_drain_tasks = 20_000
    default_concurrency = 20

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._app: procrastinate.App | None = None

    async def install(self) -> None:
        self._app = make_app(self.db_url)
        await self._app.open_async()
        await self._app.schema_manager.apply_schema_async()

    async def teardown(self) -> None:
        if self._app is not None:
            await self._app.close_async()
            self._app = None
        await super().teardown()

    @property
    def app(self) -> procrastinate.App:
        assert self._app is not None, "setup() first"
        return self._app

    async def enqueue_bulk(self, seqs: Sequence[int]) -> None:
        task = self.app.tasks["noop"]
        for i in range(0, len(seqs), BULK_CHUNK):
            kwargs: list[dict[str, JSONValue]] = [{"seq": s} for s in seqs[i : i + BULK_CHUNK]]
            await task.batch_defer_async(*kwargs)

    async def enqueue_one(self, seq: int) -> None:
        await self.app.tasks["noop"].defer_async(seq=seq)

    def worker_argv(self, index: int) -> list[str]:
        return [python(), "-m", "bench.systems.procrastinate"]

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_DB_URL": self.db_url, "BENCH_CONCURRENCY": str(self.concurrency)}

    async def pending(self) -> int | None:
        async with self.app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            cur = await conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
            )
            row = await cur.fetchone()
        return int(row[0]) if row else None


async def _work() -> None:
    """A worker process: runs until SIGTERM (procrastinate installs the handlers)."""
    app = make_app(os.environ["BENCH_DB_URL"], pool_size=4)
    async with app.open_async():
        await app.run_worker_async(
            concurrency=int(os.environ.get("BENCH_CONCURRENCY", "20")), wait=True
        )


if __name__ == "__main__":
    asyncio.run(_work())
