"""A parent task that spawns children when the test says so (tests/test_idempotency.py).

The parent first spawns one child, so that its connection to the engine is open, then
waits for the file ``go`` names before it spawns the three it returns the ids of.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel

from stoker import Context, Stoker


class Go(BaseModel):
    go: str


class Child(BaseModel):
    n: int


def declare(app: Stoker) -> Stoker:
    @app.task()
    async def idem_child(input: Child, ctx: Context) -> int:
        return input.n

    @app.task(execution_timeout="60s")
    def idem_parent(input: Go, ctx: Context) -> list[str]:
        idem_child.run_no_wait(Child(n=-1))
        while not Path(input.go).exists():
            time.sleep(0.05)
        refs = idem_child.run_many([Child(n=n) for n in range(3)])
        return [r.run_id for r in refs]

    return app


app = declare(Stoker())
