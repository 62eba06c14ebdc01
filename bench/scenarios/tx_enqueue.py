"""tx_enqueue: enqueueing inside the application's own transaction, against the peers that
can (pgqueuer, procrastinate; Celery's broker is not the database, so it cannot).

Each transaction is what an application does: ``BEGIN``, one ``INSERT`` of its own row
(``bench_orders``), one enqueue of the no-op task through the system's transactional
path, ``COMMIT``. The workers run throughout.

* **Commit-to-start latency**: ``latency_txs`` transactions, one every 20 ms (an idle
  system, 50/s): per task, the worker's start time minus the moment ``COMMIT`` returned
  (the same wall clock). For Stoker also commit-to-queued: until the engine drained the
  run from its inbox (the task row's ``created_at``); target p50 ≤ 10 ms.
* **Throughput**: ``throughput_txs`` transactions from ``CLIENTS`` connections at once, as
  fast as they commit: transactions per second, and the time until the last task started.

How each system enqueues in a transaction, on the driver it is built on:

* Stoker: ``task.aio_run_no_wait(input, connection=conn)`` on a psycopg ``AsyncConnection``
  (one ``SELECT stoker.enqueue_runs(...)``; the engine drains the inbox on NOTIFY). The
  bench's database role is mapped to the bench tenant with ``grant_enqueue_role``.
* pgqueuer: ``Queries(AsyncpgDriver(conn)).enqueue(...)`` on the asyncpg connection whose
  transaction is open (its insert trigger NOTIFYs the workers).
* procrastinate: ``task.defer_async(...)`` with the app's connector replaced
  (``app.replace_connector``) by a psycopg connector whose pool is the open connection
  (procrastinate's hooks for an externally provided pool), so its ``defer`` statement runs
  in the transaction.

The scenario also checks that every committed task ran exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from bench.config import Context
from bench.measure import percentile, read_rows
from bench.report import error_rows, fmt, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.scenarios.common import wait_done
from bench.systems import System

LATENCY_TXS = {"quick": 200, "full": 1_000}
THROUGHPUT_TXS = {"quick": 2_000, "full": 10_000}
SPACING_S = 0.02
CLIENTS = 4
SUPPORTED = ("stoker", "pgqueuer", "procrastinate")

Enqueue = Callable[[int], Awaitable[None]]
"""Runs one application transaction enqueueing task ``seq``; returns when COMMIT did."""


@contextlib.asynccontextmanager
async def _client(system: System) -> AsyncIterator[Enqueue]:
    """One application connection of ``system`` and its transactional enqueue."""
    if system.name == "pgqueuer":
        import asyncpg
        from pgqueuer import AsyncpgDriver
        from pgqueuer.queries import Queries

        conn = await asyncpg.connect(system.db_url)
        queries = Queries(AsyncpgDriver(conn))

        async def pgq(seq: int) -> None:
            async with conn.transaction():
                await conn.execute("INSERT INTO bench_orders (seq) VALUES ($1)", seq)
                await queries.enqueue("noop", str(seq).encode())

        try:
            yield pgq
        finally:
            await conn.close()
        return

    import psycopg

    aconn = await psycopg.AsyncConnection.connect(system.db_url)
    try:
        if system.name == "stoker":
            from bench.systems.stoker import Noop

            task = system.client.tasks["noop"]  # type: ignore[attr-defined]

            async def stoker(seq: int) -> None:
                async with aconn.transaction():
                    await aconn.execute("INSERT INTO bench_orders (seq) VALUES (%s)", (seq,))
                    await task.aio_run_no_wait(Noop(seq=seq), connection=aconn)

            yield stoker
        else:
            import procrastinate

            connector = procrastinate.PsycopgConnector()
            await connector.open_async(pool=_OneConnection(aconn))  # type: ignore[arg-type]
            app = system.app  # type: ignore[attr-defined]

            async def procra(seq: int) -> None:
                async with aconn.transaction():
                    await aconn.execute("INSERT INTO bench_orders (seq) VALUES (%s)", (seq,))
                    with app.replace_connector(connector):
                        await app.tasks["noop"].defer_async(seq=seq)

            yield procra
    finally:
        await aconn.close()


class _OneConnection:
    """A stand-in for procrastinate's pool that always lends the application's connection
    (the one whose transaction is open)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        yield self._conn

    async def close(self) -> None:
        pass


async def _prepare(system: System) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(system.db_url, autocommit=True) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_orders (seq int NOT NULL)")
        if system.name == "stoker":
            await conn.execute("SELECT stoker.grant_enqueue_role(current_user, 'bench')")


async def run(system: System, ctx: Context) -> Result:
    if system.name not in SUPPORTED:
        return {"skipped": "no transactional enqueue (its broker is not the database)"}
    profile = ctx.profile.name
    n_latency = int(ctx.overrides.get("latency_txs", LATENCY_TXS.get(profile, 200)))
    n_tput = int(ctx.overrides.get("throughput_txs", THROUGHPUT_TXS.get(profile, 2_000)))
    await _prepare(system)
    directory = ctx.scratch(system.name, "tx_enqueue")
    system.start_workers(directory)
    try:
        # Latency: one transaction every SPACING_S on an idle system.
        committed: dict[int, int] = {}
        async with _client(system) as enqueue:
            await enqueue(-1)  # warm the connection and the path
            await wait_done(system, directory, 1)
            for seq in range(n_latency):
                await enqueue(seq)
                committed[seq] = time.time_ns()
                await asyncio.sleep(SPACING_S)
        await wait_done(system, directory, 1 + n_latency)
        # Throughput: CLIENTS connections committing as fast as they can.
        base = n_latency
        per_client = n_tput // CLIENTS

        async def client(k: int) -> None:
            async with _client(system) as enqueue:
                for i in range(per_client):
                    await enqueue(base + k * per_client + i)

        t0 = time.perf_counter()
        t0_ns = time.time_ns()
        await asyncio.gather(*(client(k) for k in range(CLIENTS)))
        tput_s = time.perf_counter() - t0
        total = 1 + n_latency + per_client * CLIENTS
        await wait_done(system, directory, total)
    finally:
        await system.stop_workers()
    rows = read_rows(directory)
    starts = {r.seq: r.start_ns for r in rows}
    late = [(starts[s] - c) / 1e6 for s, c in committed.items() if s in starts]
    tput_rows = [r for r in rows if r.seq >= base]
    queued = await _queued_ms(system, committed) if system.name == "stoker" else []
    await system.reset()
    return {
        "latency_txs": n_latency,
        "commit_to_start_ms": {
            "p50": percentile(late, 50),
            "p95": percentile(late, 95),
            "p99": percentile(late, 99),
            "max": max(late) if late else None,
        },
        # Stoker only: commit until the engine wrote the run (its drain of the inbox); the
        # peers' job rows are written by the application's transaction itself.
        "commit_to_queued_ms": {
            "p50": percentile(queued, 50),
            "p99": percentile(queued, 99),
        },
        "throughput_txs": per_client * CLIENTS,
        "clients": CLIENTS,
        "tx_per_s": per_client * CLIENTS / tput_s,
        "all_started_s": (max(r.start_ns for r in tput_rows) - t0_ns) / 1e9 if tput_rows else None,
        "ran": len(rows),
        "duplicates": len(rows) - len({r.seq for r in rows}),
        "missing": total - len({r.seq for r in rows}),
        "config": system.describe(),
    }


async def _queued_ms(system: System, committed: dict[int, int]) -> list[float]:
    """Per latency transaction, ms from its COMMIT to its task row's ``created_at`` (the
    start of the engine's drain transaction that wrote it; the same machine's clock)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(system.db_url) as conn:
        cur = await conn.execute(
            "SELECT (input->>'seq')::int, extract(epoch FROM created_at) FROM stoker.task"
            " WHERE (input->>'seq')::int = ANY(%s)",
            (list(committed),),
        )
        found = await cur.fetchall()
    return [float(at) * 1000 - committed[seq] / 1e6 for seq, at in found]


def report(results: dict[str, Result], ctx: Context) -> None:
    columns = ["system", "commit→start p50 ms", "p95 ms", "p99 ms", "max ms",
               "commit→queued p50 / p99 ms", "tx/s (4 clients)", "all started s",
               "duplicates", "missing"]  # fmt: skip
    rows = []
    for name, r in results.items():
        if "error" in r:
            continue
        if "skipped" in r:
            rows.append([name, r["skipped"], *[""] * (len(columns) - 2)])
            continue
        lat, q = r["commit_to_start_ms"], r["commit_to_queued_ms"]
        queued = f"{fmt(q['p50'], 2)} / {fmt(q['p99'], 2)}" if q["p50"] is not None else "in tx"
        rows.append(
            [name, fmt(lat["p50"], 2), fmt(lat["p95"], 2), fmt(lat["p99"], 2), fmt(lat["max"], 1),
             queued, fmt(r["tx_per_s"]), fmt(r["all_started_s"], 2), str(r["duplicates"]),
             str(r["missing"])]
        )  # fmt: skip
    rows += error_rows(results, len(columns))
    title = f"tx_enqueue ({ctx.label}): enqueue in the application's transaction"
    ctx.console.print(table(title, columns, rows))
    write_json(ctx, "tx_enqueue", results)


SCENARIO = register(
    Scenario(
        name="tx_enqueue",
        description="transactional enqueue: commit-to-start latency and transactions/s",
        run=run,
        report=report,
        order=78,
    )
)
