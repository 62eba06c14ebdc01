"""The tasks of the ``push`` scenario and their two workers.

* ``python -m bench.scenarios.push_app NAME SLOTS``: a stream worker serving
  ``bench_stream_noop``;
* ``uvicorn bench.scenarios.push_app:worker``: an HTTP push worker serving
  ``bench_push_noop`` at PUSH_URL with PUSH_SLOTS slots, signed with PUSH_SECRET.

STOKER_ADDRESS/STOKER_TOKEN come from the environment. The two tasks do the same nothing,
so the figures compare the two ways of delivering an attempt.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from stoker import Context, Stoker

app = Stoker()


@app.task(name="bench_stream_noop")
async def stream_noop(input: dict[str, Any], ctx: Context) -> int:
    return 1


@app.task(name="bench_push_noop")
async def push_noop(input: dict[str, Any], ctx: Context) -> int:
    return 1


worker = app.http_worker(
    "bench-push",
    url=os.environ.get("PUSH_URL", "http://127.0.0.1:8000"),
    secret=os.environ.get("PUSH_SECRET", "bench-push-secret-0123456789"),
    slots=int(os.environ.get("PUSH_SLOTS", "50")),
    tasks=[push_noop],
)

if __name__ == "__main__":
    app.worker(sys.argv[1], slots=int(sys.argv[2]), tasks=[stream_noop]).start()
