"""The tasks of the ``executors`` scenario, and their worker process.

``python -m bench.scenarios.executors_app NAME SLOTS EXECUTOR`` runs a worker with SLOTS
slots whose sync tasks without an executor of their own use EXECUTOR (``thread`` or
``process``); STOKER_ADDRESS/STOKER_TOKEN come from the environment. The tasks are declared
at module level: a subprocess imports them by name.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from stoker import Context, Stoker

app = Stoker()


@app.task(name="bench_exec_thread_noop", executor="thread")
def thread_noop(input: dict[str, Any], ctx: Context) -> int:
    """Nothing, in the task's own thread pool."""
    return 1


@app.task(name="bench_exec_process_noop", executor="process")
def process_noop(input: dict[str, Any], ctx: Context) -> int:
    """Nothing, in one of the worker's subprocesses."""
    return 1


@app.task(name="bench_exec_cpu")
def cpu(input: dict[str, Any], ctx: Context) -> float:
    """``rounds`` rounds of pure-Python arithmetic (the worker's default executor);
    returns the seconds it took."""
    start = time.perf_counter()
    work(int(input["rounds"]))
    return time.perf_counter() - start


def work(rounds: int) -> int:
    """A fixed amount of pure-Python work (it holds the GIL throughout)."""
    total = 0
    for _ in range(rounds):
        total += sum(i * i for i in range(5_000))
    return total


def _work(name: str, slots: int, executor: str) -> None:
    app.worker(name, slots=slots, executor=executor).start()  # type: ignore[arg-type]


if __name__ == "__main__":
    _work(sys.argv[1], int(sys.argv[2]), sys.argv[3])
