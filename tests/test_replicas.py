"""Two engine replicas on one Postgres: the limits are global and upkeep fails over."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import pytest

from stoker import RunCancelledError, Stoker
from tests.apps import policies
from tests.apps.policies import Job
from tests.test_scheduling import APP, assigned_at, max_overlap

pytestmark = pytest.mark.timeout(120)

FAST_LEASE = {"STOKER_LEASE_TTL_S": "1.5"}


@pytest.fixture
def replicas(engine_factory: Any) -> tuple[Any, Any]:
    first = engine_factory(env=FAST_LEASE)
    second = engine_factory(db_url=first.db_url, env=FAST_LEASE)
    return first, second


def test_runs_flow_between_replicas_and_limits_hold_across_them(
    replicas: tuple[Any, Any], tenant_factory: Any, worker_factory: Any
) -> None:
    first, second = replicas
    ten = tenant_factory(first)
    via_first = policies.declare(Stoker(address=first.grpc_address, token=ten.token))
    via_first.rate_limits.put("shared", limit=4, duration="second")
    worker_factory(APP, slots=8, engine=second, tenant=ten, name="on-second")

    # Triggered through one replica, run by a worker of the other, awaited through the first.
    assert via_first.tasks["plain"].run(Job(n=7))["n"] == 7

    worker_factory(APP, slots=8, engine=first, tenant=ten, name="on-first")
    jobs = [Job(key=f"k{i % 3}", seconds=0.05, n=i) for i in range(60)]
    outs = [r.result(timeout=90) for r in via_first.tasks["round_robin"].run_many(jobs)]
    assert len({o["worker"] for o in outs}) == 2  # both replicas' workers took part
    by_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for o in outs:
        by_key[o["key"]].append((o["start"], o["end"]))
    assert max(max_overlap(v) for v in by_key.values()) <= 2

    refs = via_first.tasks["static_limited"].run_many([Job(n=i) for i in range(14)])
    [r.result(timeout=60) for r in refs]
    times = assigned_at(first, [r.run_id for r in refs])
    assert max(Counter(int(t) for t in times.values()).values()) <= 4


def test_upkeep_moves_to_the_surviving_replica(
    replicas: tuple[Any, Any], tenant_factory: Any
) -> None:
    first, second = replicas
    ten = tenant_factory(first)
    client = policies.declare(Stoker(address=second.grpc_address, token=ten.token))
    # Whoever leads now, kill the first replica; the second must (still or now) lead and
    # cancel a run that nobody takes before its schedule timeout.
    first.kill()
    with pytest.raises(RunCancelledError) as info:
        client.tasks["needs_gpu"].run(Job())
    assert info.value.error_type == "ScheduleTimeoutError"
