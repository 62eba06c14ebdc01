"""Soak: the engine's memory stays flat under a steady load (marked slow: ``-m slow``).

A leak check, not a timing assertion: a real engine and worker process run a steady
open-loop load for a few minutes while the engine's RSS is sampled; the slope over the
second half must be about zero. The benchmark suite's ``soak`` scenario is the
ten-minute version that reports the numbers (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bench.scenarios.soak import slope_mb_per_min
from stoker import Stoker
from tests.apps import basic

psutil = pytest.importorskip("psutil", reason="the bench extra is not installed")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

RATE = 300
SECONDS = 180


def test_engine_memory_is_flat_under_a_steady_load(
    engine_factory: Any, tenant_factory: Any, worker_factory: Any
) -> None:
    eng = engine_factory()
    ten = tenant_factory(eng)
    worker_factory("tests.apps.basic:app", slots=100, engine=eng, tenant=ten)
    app = basic.declare(Stoker(address=eng.grpc_address, token=ten.token))
    assert eng.proc is not None
    engine = psutil.Process(eng.proc.pid)
    samples: list[tuple[float, float]] = []

    async def load() -> int:
        greet = app.tasks["greet"]
        refs = []
        t0 = time.monotonic()
        next_sample = t0
        for i in range(RATE * SECONDS):
            delay = t0 + i / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            refs.append(asyncio.create_task(greet.aio_run(basic.Greet(name=str(i)))))
            if time.monotonic() >= next_sample:
                samples.append((time.monotonic() - t0, engine.memory_info().rss / 2**20))
                next_sample += 2.0
        done = await asyncio.gather(*refs)
        return len(done)

    assert asyncio.run(load()) == RATE * SECONDS
    second_half = samples[len(samples) // 2 :]
    slope = slope_mb_per_min(second_half)
    growth = second_half[-1][1] - second_half[0][1]
    assert slope < 3.0, f"engine RSS grows {slope:.2f} MB/min: {samples}"
    assert growth < 20.0, f"engine RSS grew {growth:.1f} MB in the second half: {samples}"
