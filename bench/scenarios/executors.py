"""executors (Stoker only): what ``executor="process"`` costs and what it buys.

* **Overhead per task**: a no-op sync task run ``EXEC_RUNS`` times in a thread and as
  many times in a subprocess, one at a time and interleaved (so drift in the machine's
  load hits both alike), measured two ways: in the worker's runtime alone (the pool's
  ``run`` against ``run_in_executor`` on a thread pool, in this process: what the
  subprocess adds — pickling the call, the pipe both ways, the reader thread, the hop
  back to the event loop) and end to end through the engine (where the engine's own
  latency and its noise dwarf it). Reported: p50 of each and the difference. Target
  (issue 17): ≤ 2 ms on top of a thread task.
* **CPU-bound scaling**: ``EXEC_CPU_TASKS`` tasks of a fixed amount of pure-Python work
  (about ``EXEC_CPU_S`` seconds on one idle core, calibrated here first),
  enqueued at once, on one worker whose sync tasks run in its thread pool (2 slots: the
  GIL lets one run at a time), then in its subprocesses with 1 and with 2 slots; reported:
  tasks per second and the speed-up over one process. On a machine with two cores shared
  with other work, the 2-process figure is bounded by what the other work leaves.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.config import Context
from bench.measure import percentile
from bench.report import error_rows, fmt, table, write_json
from bench.scenarios import Result, Scenario, register
from bench.systems import Proc, System, python, spawn, stop_procs
from stoker import Context as TaskContext
from stoker import Stoker, UnknownTaskError
from stoker._sdk.worker.executors import Executors

EXEC_RUNS = {"quick": 200, "full": 1_000}
EXEC_CPU_TASKS = {"quick": 8, "full": 24}
EXEC_CPU_S = 0.25
TIMEOUT_S = 600.0


def _size(ctx: Context, key: str, sizes: dict[str, int]) -> int:
    return int(ctx.overrides.get(key, sizes.get(ctx.profile.name, sizes["quick"])))


class _Worker:
    """One worker process serving the scenario's tasks."""

    def __init__(self, system: System, name: str, slots: int, executor: str) -> None:
        self.system, self.name, self.slots, self.executor = system, name, slots, executor
        self.proc: Proc | None = None

    async def __aenter__(self) -> Stoker:
        env = self.system.worker_env()
        argv = [python(), "-m", "bench.scenarios.executors_app", self.name, str(self.slots)]
        self.proc = spawn(self.name, [*argv, self.executor], env, self.system.log_dir)
        app = Stoker(address=env["STOKER_ADDRESS"], token=env["STOKER_TOKEN"])
        # Warm up: registration, the worker's connection and its first subprocesses.
        deadline = time.monotonic() + 60
        for name in ("bench_exec_thread_noop", "bench_exec_process_noop"):
            while True:
                try:
                    await app.aio_run(name, {})
                    break
                except UnknownTaskError:  # the worker has not registered its tasks yet
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        return app

    async def __aexit__(self, *_: object) -> None:
        if self.proc is not None:
            stop_procs([self.proc])


async def _overhead(app: Stoker, runs: int) -> Result:
    thread_ms: list[float] = []
    process_ms: list[float] = []
    for _ in range(runs):
        for name, into in (
            ("bench_exec_thread_noop", thread_ms),
            ("bench_exec_process_noop", process_ms),
        ):
            start = time.perf_counter()
            await app.aio_run(name, {})
            into.append((time.perf_counter() - start) * 1000)
    t50, p50 = percentile(thread_ms, 50), percentile(process_ms, 50)
    return {
        "runs": runs,
        "thread_p50_ms": t50,
        "process_p50_ms": p50,
        "thread_p90_ms": percentile(thread_ms, 90),
        "process_p90_ms": percentile(process_ms, 90),
        "extra_p50_ms": None if t50 is None or p50 is None else p50 - t50,
    }


async def _in_runtime(runs: int) -> Result:
    """The process path's extra cost inside the worker runtime, without the engine."""
    from bench.scenarios import executors_app

    task = executors_app.app.tasks["bench_exec_process_noop"]
    executors = Executors("bench", [task], 2, None)
    await executors.start()
    pool, target = executors.processes, executors.targets[task.name]
    assert pool is not None
    threads = ThreadPoolExecutor(2)
    loop = asyncio.get_running_loop()
    about: dict[str, Any] = dict(
        run_id="bench", task_name=task.name, attempt=0, retry_count=0,
        additional_metadata={}, filter_payload=None, worker_id="bench", task_id=0,
    )  # fmt: skip
    task_ctx = TaskContext(**about)
    thread_ms: list[float] = []
    process_ms: list[float] = []
    try:
        for _ in range(runs):
            start = time.perf_counter()
            value = await loop.run_in_executor(threads, task.fn, {}, task_ctx)
            task.encode_output(value)
            thread_ms.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            await pool.run(task, target, task_ctx, b"{}", False, about)
            process_ms.append((time.perf_counter() - start) * 1000)
    finally:
        executors.shutdown()
        threads.shutdown()
    t50, p50 = percentile(thread_ms, 50), percentile(process_ms, 50)
    return {
        "runs": runs,
        "thread_p50_ms": t50,
        "process_p50_ms": p50,
        "process_p99_ms": percentile(process_ms, 99),
        "extra_p50_ms": None if t50 is None or p50 is None else p50 - t50,
    }


def _calibrate() -> int:
    """Rounds of the CPU task's work that take about EXEC_CPU_S here."""
    from bench.scenarios.executors_app import work

    start = time.perf_counter()
    work(20)
    per_round = (time.perf_counter() - start) / 20
    return max(1, int(EXEC_CPU_S / per_round))


async def _cpu(system: System, executor: str, slots: int, tasks: int, rounds: int) -> Result:
    async with _Worker(system, f"exec-{executor}-{slots}", slots, executor) as app:
        started = time.perf_counter()
        refs = [app.run_no_wait("bench_exec_cpu", {"rounds": rounds}) for _ in range(tasks)]
        took = [float(await r.aio_result(timeout=TIMEOUT_S)) for r in refs]
        seconds = time.perf_counter() - started
    return {
        "executor": executor,
        "slots": slots,
        "tasks": tasks,
        "rounds": rounds,
        "task_s_p50": percentile(took, 50),
        "seconds": seconds,
        "tasks_per_s": tasks / seconds,
    }


async def run_executors(system: System, ctx: Context) -> Result:
    out: Result = {"config": system.describe()}
    runs = _size(ctx, "exec_runs", EXEC_RUNS)
    out["in_runtime"] = await _in_runtime(runs)
    async with _Worker(system, "exec-overhead", 4, "thread") as app:
        out["overhead"] = await _overhead(app, runs)
    tasks = _size(ctx, "exec_cpu_tasks", EXEC_CPU_TASKS)
    rounds = _calibrate()
    configs = [("thread", 2), ("process", 1), ("process", 2)]
    out["cpu"] = [await _cpu(system, e, slots, tasks, rounds) for e, slots in configs]
    one = out["cpu"][1]["tasks_per_s"]
    for row in out["cpu"]:
        row["speedup_vs_one_process"] = row["tasks_per_s"] / one
    return out


def report_executors(results: dict[str, Result], ctx: Context) -> None:
    columns = [
        "system",
        "in runtime p50 ms: thread / process (extra)",
        "end to end p50 ms: thread / process",
        "CPU tasks/s: threads (2 slots)",
        "1 process",
        "2 processes",
        "speed-up 2 vs 1",
    ]
    rows: list[list[Any]] = []
    for name, r in results.items():
        if "error" in r:
            continue
        o, cpu, rt = r["overhead"], r["cpu"], r["in_runtime"]
        rows.append(
            [
                name,
                f"{fmt(rt['thread_p50_ms'])} / {fmt(rt['process_p50_ms'])}"
                f" ({fmt(rt['extra_p50_ms'])})",
                f"{fmt(o['thread_p50_ms'])} / {fmt(o['process_p50_ms'])}",
                fmt(cpu[0]["tasks_per_s"]),
                fmt(cpu[1]["tasks_per_s"]),
                fmt(cpu[2]["tasks_per_s"]),
                fmt(cpu[2]["speedup_vs_one_process"]),
            ]
        )
    rows += error_rows(results, len(columns))
    ctx.console.print(
        table(f"executors ({ctx.label}): process-pool cost and scaling", columns, rows)
    )
    write_json(ctx, "executors", results)


EXECUTORS = register(
    Scenario(
        name="executors",
        description="process-pool overhead per task vs a thread task; CPU-bound scaling",
        run=run_executors,
        report=report_executors,
        stoker_only=True,
        order=87,
    )
)
