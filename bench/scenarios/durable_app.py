"""The durable tasks the ``durable`` scenario runs, and their worker process.

``python -m bench.scenarios.durable_app NAME`` runs a worker with ``BENCH_DURABLE_SLOTS``
durable slots for every task here (STOKER_ADDRESS/STOKER_TOKEN from the environment).
Times the tasks return are wall-clock epoch milliseconds of this host, compared with the
deadlines and start times Postgres stores (the same machine's clock).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from stoker import DurableContext, NonRetryableError, Stoker


async def _value(i: int) -> int:
    return i


def declare(app: Stoker) -> Stoker:
    """Puts the benchmark's durable tasks on ``app``."""

    @app.durable_task(name="bench_sleeper")
    async def sleeper(input: dict[str, Any], ctx: DurableContext) -> float:
        """Sleeps until ``until`` (epoch seconds), then says when it woke (epoch ms): its
        lateness past the deadline."""
        await ctx.sleep_until(datetime.fromtimestamp(float(input["until"]), UTC))
        return time.time() * 1000

    @app.durable_task(name="bench_replay")
    async def replay(input: dict[str, Any], ctx: DurableContext) -> float:
        """``steps`` recorded steps, then the next call: on the first attempt the run
        fails there (to be replayed); on the replay it returns when it got there (epoch
        ms), every step before having come back from the log."""
        for i in range(int(input["steps"])):
            await ctx.step(_value, i, name=f"s{i}")
        reached = time.time() * 1000
        if ctx.attempt == 0:
            raise NonRetryableError("failed once, so that the run is replayed")
        return reached

    @app.durable_task(name="bench_durable_mix")
    async def mix(input: dict[str, Any], ctx: DurableContext) -> int:
        """Three steps and a one-second sleep."""
        total = 0
        for i in range(3):
            total += await ctx.step(_value, i, name=f"step{i}")
        await ctx.sleep(float(input.get("sleep", 1.0)))
        return total

    return app


def _work(name: str) -> None:
    app = declare(Stoker())
    slots = int(os.environ.get("BENCH_DURABLE_SLOTS", "1000"))
    app.worker(name, slots=1, durable_slots=slots).start()


if __name__ == "__main__":
    _work(sys.argv[1] if len(sys.argv) > 1 else "bench-durable")
