"""The workflows the dag and fanout scenarios run, and their worker process.

``python -m bench.scenarios.workflow_app NAME`` runs a worker with ``BENCH_SLOTS`` slots
for every workflow here (STOKER_ADDRESS/STOKER_TOKEN from the environment).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from stoker import Context, Stoker, Workflow

SHAPES = ("chain2", "chain5", "diamond")


def declare(app: Stoker) -> Stoker:
    """Puts the benchmark workflows (no-op steps) and the fan-out parent on ``app``."""

    async def step(input: dict[str, Any], ctx: Context) -> int:
        return 1

    def chain(name: str, length: int) -> Workflow[Any]:
        wf = app.workflow(name)
        previous = None
        for i in range(length):
            parents = [previous] if previous is not None else []
            previous = wf.task(name=f"s{i}", parents=parents)(step)
        return wf

    chain("chain2", 2)
    chain("chain5", 5)
    diamond = app.workflow("diamond")
    top = diamond.task(name="top")(step)
    left = diamond.task(name="left", parents=[top])(step)
    right = diamond.task(name="right", parents=[top])(step)
    diamond.task(name="bottom", parents=[left, right])(step)

    @app.task(name="bench_child")
    async def child(input: dict[str, int], ctx: Context) -> int:
        return input["n"]

    @app.task(name="bench_fan_out", execution_timeout="600s")
    async def fan_out(input: dict[str, int], ctx: Context) -> int:
        refs = await child.aio_run_many([{"n": i} for i in range(input["children"])])
        return sum(await asyncio.gather(*(r.aio_result() for r in refs)))

    return app


def _work(name: str) -> None:
    app = declare(Stoker())
    app.worker(name, slots=int(os.environ.get("BENCH_SLOTS", "100"))).start()


if __name__ == "__main__":
    _work(sys.argv[1] if len(sys.argv) > 1 else "bench-workflows")
