"""Scheduling policy, end to end: invariants checked from what real workers recorded.

Each test drives a real engine and real worker processes through the public SDK, then
checks the policy's invariant from the runs' recorded start/end times (worker clock) or
assignment times (engine clock). Randomised workloads use fixed seeds.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from stoker import (
    ConcurrencyExpression,
    DeclarationError,
    DesiredWorkerLabel,
    RateLimit,
    RunCancelledError,
    Stoker,
    TaskRunError,
)
from tests.apps import policies
from tests.apps.policies import Job
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(120)

APP = "tests.apps.policies:app"


@pytest.fixture
def app(engine: Any, tenant: Any) -> Stoker:
    return policies.declare(Stoker(address=engine.grpc_address, token=tenant.token))


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at t closes before a start at t)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = current = 0
    for _, step in points:
        current += step
        best = max(best, current)
    return best


def assigned_at(engine: Any, run_ids: list[str]) -> dict[str, float]:
    with psycopg.connect(engine.db_url) as conn:
        rows = conn.execute(
            "SELECT external_id::text, extract(epoch FROM assigned_at)::float8"
            " FROM stoker.task WHERE external_id = ANY(%s::uuid[])",
            (run_ids,),
        ).fetchall()
    return {r[0]: r[1] for r in rows}


# -- concurrency keys -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [7, 11])
def test_round_robin_never_exceeds_max_runs_per_key(
    app: Stoker, worker_factory: Any, seed: int
) -> None:
    rng = random.Random(seed)
    worker_factory(APP, slots=6)
    worker_factory(APP, slots=6)
    jobs = [
        Job(key=f"c{rng.randrange(6)}", seconds=rng.uniform(0.01, 0.15), n=i) for i in range(150)
    ]
    outs = [r.result(timeout=90) for r in app.tasks["round_robin"].run_many(jobs)]
    by_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for o in outs:
        by_key[o["key"]].append((o["start"], o["end"]))
    assert {k: max_overlap(v) <= 2 for k, v in by_key.items()} == {k: True for k in by_key}
    assert max(max_overlap(v) for v in by_key.values()) == 2  # the limit was reached


def test_round_robin_serves_quiet_keys_before_a_busy_key_drains(
    app: Stoker, worker_factory: Any
) -> None:
    # One customer floods the queue first; four quiet customers come after. With max_runs=2
    # a key never has more than 2 runs queued or running, so each quiet run is at most a few
    # places behind in the FIFO: every quiet run starts before the busy key's 5th start.
    busy = app.tasks["round_robin"].run_many([Job(key="busy", seconds=0.2, n=i) for i in range(30)])
    quiet = app.tasks["round_robin"].run_many(
        [Job(key=f"quiet{q}", seconds=0.2, n=i) for q in range(4) for i in range(2)]
    )
    worker_factory(APP, slots=4)
    busy_starts = sorted(r.result(timeout=90)["start"] for r in busy)
    quiet_starts = [r.result(timeout=90)["start"] for r in quiet]
    assert max(quiet_starts) < busy_starts[4]


def test_several_concurrency_expressions_all_apply(app: Stoker, worker_factory: Any) -> None:
    rng = random.Random(3)
    worker_factory(APP, slots=10)
    jobs = [
        Job(key=f"a{rng.randrange(4)}", other=f"b{rng.randrange(2)}", seconds=0.05, n=i)
        for i in range(60)
    ]
    outs = [r.result(timeout=90) for r in app.tasks["two_keys"].run_many(jobs)]
    by_a: dict[str, list[tuple[float, float]]] = defaultdict(list)
    by_b: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for job, o in zip(jobs, outs, strict=True):
        by_a[job.key].append((o["start"], o["end"]))
        by_b[job.other].append((o["start"], o["end"]))
    assert all(max_overlap(v) <= 1 for v in by_a.values())
    assert all(max_overlap(v) <= 2 for v in by_b.values())


def test_an_int_concurrency_is_one_global_key(app: Stoker, worker_factory: Any) -> None:
    worker_factory(APP, slots=10)
    outs = [
        r.result(timeout=60) for r in app.tasks["global_limit"].run_many([Job(seconds=0.1)] * 12)
    ]
    assert max_overlap([(o["start"], o["end"]) for o in outs]) == 2


def test_workflow_steps_queued_later_are_held_to_their_concurrency_limit(
    app: Stoker, worker_factory: Any
) -> None:
    # limited_chain: prepare -> charge, both limited to one run per key by the workflow's
    # default; charge is readied only when prepare ends, and is five times slower.
    worker_factory(APP, slots=12)
    jobs = [Job(key=f"k{i % 2}", seconds=0.05, n=i) for i in range(8)]
    outs = [r.result(timeout=90) for r in app.workflows["limited_chain"].run_many(jobs)]
    for step in ("prepare", "charge"):
        by_key: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for o in outs:
            by_key[o[step]["key"]].append((o[step]["start"], o[step]["end"]))
        assert {k: max_overlap(v) for k, v in by_key.items()} == {"k0": 1, "k1": 1}, step
    everything = [(o[s]["start"], o[s]["end"]) for o in outs for s in ("prepare", "charge")]
    assert max_overlap(everything) >= 2  # the two keys ran side by side


def test_a_replayed_run_waits_for_its_concurrency_slot_again(
    app: Stoker, worker_factory: Any, engine: Any, tmp_path: Any
) -> None:
    worker_factory(APP, slots=4)
    task = app.tasks["fails_once_limited"]
    failed = task.run_no_wait(Job(key="z", other=str(tmp_path / "first")))
    with pytest.raises(TaskRunError, match="fails the first time"):
        failed.result(timeout=30)
    (tmp_path / "second").touch()
    holder = task.run_no_wait(Job(key="z", other=str(tmp_path / "second"), seconds=1.0))
    wait_for_status(engine, holder.run_id, "RUNNING")
    assert app.runs.replay(failed).outcome == "replayed"
    replayed = failed.result(timeout=30)
    assert replayed["start"] >= holder.result(timeout=30)["end"] - 0.05


def test_cancel_in_progress_admits_the_newest_and_cancels_the_oldest(
    app: Stoker, worker_factory: Any, engine: Any
) -> None:
    worker_factory(APP, slots=4)
    task = app.tasks["cancel_in_progress"]
    first = task.run_no_wait(Job(key="x", seconds=30))
    wait_for_status(engine, first.run_id, "RUNNING")
    second = task.run_no_wait(Job(key="x", seconds=0.1))
    with pytest.raises(RunCancelledError) as info:
        first.result(timeout=30)
    assert info.value.error_type == "ConcurrencyCancelledError"
    assert second.result(timeout=30)["key"] == "x"
    # another key is unaffected
    assert task.run(Job(key="y", seconds=0.0))["key"] == "y"


def test_cancel_newest_cancels_the_incoming_run(
    app: Stoker, worker_factory: Any, engine: Any
) -> None:
    worker_factory(APP, slots=4)
    task = app.tasks["cancel_newest"]
    first = task.run_no_wait(Job(key="x", seconds=1.0))
    wait_for_status(engine, first.run_id, "RUNNING")
    with pytest.raises(RunCancelledError, match="concurrency limit on key 'x'"):
        task.run(Job(key="x"))
    assert first.result(timeout=30)["key"] == "x"
    assert task.run(Job(key="x"))["key"] == "x"  # the slot is free again


def test_a_key_expression_failing_on_an_input_fails_only_that_run(app: Stoker, engine: Any) -> None:
    @app.task(concurrency=ConcurrencyExpression(expression="input.customer.id", max_runs=1))
    async def by_customer(input: dict[str, Any], ctx: Any) -> str:
        return "ran"

    bad = by_customer.run_no_wait({"no_customer": 1})
    good = by_customer.run_no_wait({"customer": {"id": 5}})
    with pytest.raises(TaskRunError) as info:
        bad.result(timeout=30)
    assert info.value.error_type == "PolicyError"
    assert "input.customer.id" in info.value.error_message

    # The good run is admitted by its key and waits, queued, for a worker (none runs it).
    def admitted() -> bool:
        with psycopg.connect(engine.db_url) as conn:
            row = conn.execute(
                "SELECT t.status, c.admitted FROM stoker.task t"
                " JOIN stoker.concurrency_slot c ON c.task_id = t.id WHERE t.external_id = %s",
                (good.run_id,),
            ).fetchone()
        return row == ("QUEUED", True)

    wait_until(admitted, 30, "the good run to be admitted")


def test_invalid_expressions_and_comparators_fail_at_declaration(app: Stoker) -> None:
    with pytest.raises(
        DeclarationError, match=r"invalid CEL expression 'input\.\(': .*Syntax error"
    ):

        @app.task(concurrency=ConcurrencyExpression(expression="input.(", max_runs=1))
        async def broken(input: dict[str, Any], ctx: Any) -> None: ...

    with pytest.raises(DeclarationError, match="rate limit dynamic_key: invalid CEL"):

        @app.task(
            rate_limits=[RateLimit(dynamic_key="input.[", units=1, limit=1, duration="second")]
        )
        async def broken_limit(input: dict[str, Any], ctx: Any) -> None: ...

    with pytest.raises(ValidationError, match="comparator"):
        DesiredWorkerLabel(value=1, comparator="ROUGHLY")  # type: ignore[arg-type]


# -- rate limits ------------------------------------------------------------------------

SECOND_US = 1_000_000


def assigned_us(db_url: str, run_ids: list[str]) -> dict[str, int]:
    """The assignment instant of each run assigned so far, in exact microseconds since the
    epoch (the instant its rate limits counted it at)."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT external_id::text, (extract(epoch FROM assigned_at) * 1000000)::bigint"
            " FROM stoker.task WHERE external_id = ANY(%s::uuid[]) AND assigned_at IS NOT NULL",
            (run_ids,),
        ).fetchall()
    return {r[0]: r[1] for r in rows}


def busiest_window(starts: list[tuple[int, int]], width_us: int) -> int:
    """The most units started in any interval [s, s + width) of (instant, units) starts;
    the busiest interval can always be taken to begin at a start."""
    return max(sum(u for t, u in starts if s <= t < s + width_us) for s, _ in starts)


def at_mid_second() -> None:
    """Returns once the clock is 0.3 s into a second, so a first burst of runs starts well
    inside an aligned one-second window and the next one would cross its boundary."""
    time.sleep((1.3 - time.time() % 1.0) % 1.0)


def test_static_rate_limit_holds_in_every_window_across_workers(
    app: Stoker, worker_factory: Any, engine: Any
) -> None:
    app.rate_limits.put("shared", limit=5, duration="second")
    worker_factory(APP, slots=10)
    worker_factory(APP, slots=10)
    at_mid_second()
    refs = app.tasks["static_limited"].run_many([Job(n=i) for i in range(30)])
    [r.result(timeout=60) for r in refs]
    times = sorted(assigned_us(engine.db_url, [r.run_id for r in refs]).values())
    assert len(times) == 30
    # Every interval of one second, aligned or not, holds at most 5 starts...
    assert busiest_window([(t, 1) for t in times], SECOND_US) <= 5
    # ...so 30 runs span at least 5 s; a freed unit is reused soon after it frees.
    assert 5 * SECOND_US <= times[-1] - times[0] < 9 * SECOND_US


def test_rate_limit_units_count_in_every_window(
    app: Stoker, worker_factory: Any, engine: Any
) -> None:
    app.rate_limits.put("shared", limit=5, duration="second")
    worker_factory(APP, slots=20)
    at_mid_second()
    ones = app.tasks["static_limited"].run_many([Job(n=i) for i in range(8)])
    twos = app.tasks["static_limited_2"].run_many([Job(n=i) for i in range(8)])
    [r.result(timeout=60) for r in ones + twos]
    units = {r.run_id: 1 for r in ones} | {r.run_id: 2 for r in twos}
    times = assigned_us(engine.db_url, list(units))
    assert busiest_window([(times[k], u) for k, u in units.items()], SECOND_US) <= 5


def test_runs_over_a_rate_limit_wait_until_their_units_free(
    app: Stoker, worker_factory: Any, engine: Any
) -> None:
    """Runs turned away are dated the instant they fit, each behind the ones before it:
    with 2 per 2 s, the 3rd and 4th of six wait exactly until the first two are 2 s old,
    the 5th and 6th until those are; the scheduler does not claim them again before."""
    app.rate_limits.put("shared", limit=2, duration=timedelta(seconds=2))
    worker_factory(APP, slots=10)
    refs = app.tasks["static_limited"].run_many([Job(n=i) for i in range(6)])
    ids = [r.run_id for r in refs]

    def deferred() -> list[int] | None:
        with psycopg.connect(engine.db_url) as conn:
            rows = conn.execute(
                "SELECT (extract(epoch FROM q.available_at) * 1000000)::bigint"
                " FROM stoker.queue_item q JOIN stoker.task t ON t.id = q.task_id"
                " WHERE t.external_id = ANY(%s::uuid[]) ORDER BY 1",
                (ids,),
            ).fetchall()
        started = assigned_us(engine.db_url, ids)
        return [r[0] for r in rows] if len(rows) == 4 and len(started) == 2 else None

    waiting = wait_until(deferred, 10, "four runs deferred by the rate limit")
    [r.result(timeout=60) for r in refs]
    times = assigned_us(engine.db_url, ids)
    first = min(times.values())
    assert [t - first for t in waiting] == [2 * SECOND_US] * 2 + [4 * SECOND_US] * 2
    assert busiest_window([(t, 1) for t in times.values()], 2 * SECOND_US) <= 2
    assert sorted(times.values())[2] >= first + 2 * SECOND_US


def test_two_replicas_share_one_rate_limit(
    engine_factory: Any, tenant_factory: Any, worker_factory: Any
) -> None:
    first = engine_factory()
    second = engine_factory(db_url=first.db_url)
    ten = tenant_factory(first)
    via = [
        policies.declare(Stoker(address=e.grpc_address, token=ten.token)) for e in (first, second)
    ]
    via[0].rate_limits.put("shared", limit=5, duration="second")
    worker_factory(APP, slots=10, engine=first, tenant=ten, name="on-first")
    worker_factory(APP, slots=10, engine=second, tenant=ten, name="on-second")
    at_mid_second()
    refs = [r for app in via for r in app.tasks["static_limited"].run_many([Job()] * 15)]
    outs = [r.result(timeout=60) for r in refs]
    assert len({o["worker"] for o in outs}) == 2  # both replicas started runs
    times = assigned_us(first.db_url, [r.run_id for r in refs])
    assert busiest_window([(t, 1) for t in times.values()], SECOND_US) <= 5


def test_dynamic_rate_limit_is_per_key(app: Stoker, worker_factory: Any, engine: Any) -> None:
    worker_factory(APP, slots=20)
    at_mid_second()
    jobs = [Job(user=u, n=i) for i in range(8) for u in ("ann", "bob")]
    refs = app.tasks["dynamic_limited"].run_many(jobs)
    [r.result(timeout=60) for r in refs]
    times = assigned_us(engine.db_url, [r.run_id for r in refs])
    for user in ("ann", "bob"):
        mine = [(times[r.run_id], 1) for r, j in zip(refs, jobs, strict=True) if j.user == user]
        assert busiest_window(mine, SECOND_US) <= 3


def test_a_dynamic_rate_limit_holds_for_workflow_steps(
    app: Stoker, worker_factory: Any, engine: Any
) -> None:
    worker_factory(APP, slots=20)
    at_mid_second()
    refs = app.workflows["rated_chain"].run_many([Job(user="cy", n=i) for i in range(8)])
    assert len([r.result(timeout=60) for r in refs]) == 8
    with psycopg.connect(engine.db_url) as conn:
        times = [
            (row[0], 1)
            for row in conn.execute(
                "SELECT (extract(epoch FROM t.assigned_at) * 1000000)::bigint FROM stoker.task t"
                " JOIN stoker.dag d ON d.id = t.dag_id WHERE d.external_id = ANY(%s::uuid[])",
                ([r.run_id for r in refs],),
            )
        ]
    assert len(times) == 8
    assert busiest_window(times, SECOND_US) <= 3


def test_units_over_a_dynamic_limit_fail_the_run_saying_so(app: Stoker) -> None:
    @app.task(
        rate_limits=[
            RateLimit(dynamic_key="input.user", units="input.n", limit=2, duration="second")
        ]
    )
    async def greedy(input: dict[str, Any], ctx: Any) -> None: ...

    with pytest.raises(TaskRunError, match=r"takes 3 units per run but allows only 2 per second"):
        greedy.run({"user": "ann", "n": 3})


def test_a_rate_limited_run_waits_without_blocking_others(
    app: Stoker, worker_factory: Any, engine: Any
) -> None:
    app.rate_limits.put("shared", limit=1, duration="hour")
    worker_factory(APP, slots=4)
    first, second = app.tasks["static_limited"].run_many([Job(n=1), Job(n=2)])
    assert first.result(timeout=30)["n"] == 1
    # the second is over the limit for the hour: it stays queued, it does not fail
    assert app.tasks["plain"].run(Job(n=3))["n"] == 3
    with psycopg.connect(engine.db_url) as conn:
        status = conn.execute(
            "SELECT status FROM stoker.task WHERE external_id = %s", (second.run_id,)
        ).fetchone()
    assert status == ("QUEUED",)
    app.rate_limits.put("shared", limit=2, duration="hour")  # raising the limit lets it run
    assert second.result(timeout=30)["n"] == 2


def test_a_rate_limit_never_created_is_reported(app: Stoker, worker_factory: Any) -> None:
    @app.task(rate_limits=[RateLimit(static_key="nobody-made-me")])
    async def orphan(input: dict[str, Any], ctx: Any) -> None: ...

    with pytest.raises(
        TaskRunError, match=r"rate limit 'nobody-made-me' was never created.*rate_limits\.put"
    ):
        orphan.run({})


# -- priority, slots --------------------------------------------------------------------


def test_higher_priority_runs_first_fifo_within_a_level(app: Stoker, worker_factory: Any) -> None:
    plain = app.tasks["plain"]
    low = plain.run_many([Job(n=i) for i in range(10)], priority=1)
    high = plain.run_many([Job(n=100 + i) for i in range(10)], priority=3)
    mid = plain.run_many([Job(n=50 + i) for i in range(10)], priority=2)
    worker_factory(APP, slots=1)
    order = [
        o["n"]
        for o in sorted((r.result(timeout=60) for r in low + high + mid), key=lambda o: o["start"])
    ]
    assert order == [*range(100, 110), *range(50, 60), *range(10)]


def test_slot_cost_limits_what_runs_at_once(app: Stoker, worker_factory: Any) -> None:
    worker_factory(APP, slots=4)
    outs = [r.result(timeout=60) for r in app.tasks["costly"].run_many([Job(seconds=0.2)] * 8)]
    assert max_overlap([(o["start"], o["end"]) for o in outs]) == 2


def test_release_slot_lets_the_worker_take_more(app: Stoker, worker_factory: Any) -> None:
    worker_factory(APP, slots=4)
    holds = app.tasks["whole_worker"].run_many([Job(seconds=0.6, n=0)] * 2)
    outs = [r.result(timeout=60) for r in holds]
    assert max_overlap([(o["start"], o["end"]) for o in outs]) == 1
    releases = app.tasks["whole_worker"].run_many([Job(seconds=0.6, n=1)] * 3)
    outs = [r.result(timeout=60) for r in releases]
    assert max_overlap([(o["start"], o["end"]) for o in outs]) == 3


def test_durable_tasks_use_their_own_slot_pool(app: Stoker, worker_factory: Any) -> None:
    worker_factory(APP, slots=1, durable_slots=1)
    durable = app.tasks["durable_job"].run_many([Job(seconds=0.3)] * 3)
    plain = app.tasks["plain"].run_many([Job(seconds=0.3)] * 3)
    d = [r.result(timeout=60) for r in durable]
    p = [r.result(timeout=60) for r in plain]
    assert max_overlap([(o["start"], o["end"]) for o in d]) == 1
    assert max_overlap([(o["start"], o["end"]) for o in p]) == 1
    assert max_overlap([(o["start"], o["end"]) for o in d + p]) == 2


# -- labels and sticky ------------------------------------------------------------------


def test_required_labels_are_honoured(app: Stoker, worker_factory: Any) -> None:
    gpu = worker_factory(APP, slots=5, labels={"gpu": "a100"})
    worker_factory(APP, slots=5, labels={"gpu": "none"})
    outs = [r.result(timeout=60) for r in app.tasks["needs_gpu"].run_many([Job(seconds=0.05)] * 20)]
    assert {o["worker"] for o in outs} == {gpu.worker_id}


def test_required_labels_nobody_has_wait_until_the_schedule_timeout(
    app: Stoker, worker_factory: Any
) -> None:
    worker_factory(APP, slots=5, labels={"gpu": "t4"})
    with pytest.raises(RunCancelledError) as info:
        app.tasks["needs_gpu"].run(Job())
    assert info.value.error_type == "ScheduleTimeoutError"
    assert app.tasks["plain"].run(Job(n=1))["n"] == 1  # the queue was not blocked


def test_weighted_labels_pick_the_best_scoring_worker(app: Stoker, worker_factory: Any) -> None:
    big = worker_factory(APP, slots=50, labels={"memory_gb": 64})
    worker_factory(APP, slots=50, labels={"memory_gb": 16})
    outs = [r.result(timeout=60) for r in app.tasks["prefers_memory"].run_many([Job()] * 20)]
    assert {o["worker"] for o in outs} == {big.worker_id}


def test_hard_sticky_never_moves_a_run(app: Stoker, worker_factory: Any) -> None:
    chosen = worker_factory(APP, slots=1)
    worker_factory(APP, slots=10)
    # Occupy the chosen worker, then ask for it: the runs wait for it, the idle one is ignored.
    blocker = app.tasks["plain"].run_no_wait(Job(seconds=1.0), desired_worker_id=chosen.worker_id)
    refs = app.tasks["hard_sticky"].run_many(
        [Job(n=i) for i in range(5)], desired_worker_id=chosen.worker_id
    )
    outs = [r.result(timeout=60) for r in refs]
    assert {o["worker"] for o in outs} == {chosen.worker_id}
    assert min(o["start"] for o in outs) >= blocker.result(timeout=30)["end"] - 0.05


@pytest.mark.parametrize(("sticky", "slots"), [("hard", 3), ("soft", 20)])
def test_sticky_keeps_every_step_of_a_workflow_run_on_one_worker(
    app: Stoker, worker_factory: Any, sticky: str, slots: int
) -> None:
    # Hard: the steps wait for their worker even when the other one is idle. Soft: with
    # room on its worker, a run's steps stay there too.
    worker_factory(APP, slots=slots)
    worker_factory(APP, slots=slots)
    refs = app.workflows[f"{sticky}_chain"].run_many([Job(n=i) for i in range(12)])
    outs = [r.result(timeout=60) for r in refs]
    used = set()
    for out in outs:
        workers = {step["worker"] for step in out.values()}
        assert len(workers) == 1, out  # first, left, right and last on one worker
        used |= workers
    assert len(used) == 2  # the runs themselves were spread over both workers


def first_step_worker(engine: Any, run_id: str) -> str | None:
    """The worker that ran a workflow run's ``first`` step, once it completed."""
    with psycopg.connect(engine.db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT w.external_id::text FROM stoker.task t"
            " JOIN stoker.dag d ON d.id = t.dag_id JOIN stoker.worker w ON w.id = t.worker_id"
            " WHERE d.external_id = %s AND t.step = 'first' AND t.status = 'COMPLETED'",
            (run_id,),
        ).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize("sticky", ["soft", "hard"])
def test_sticky_worker_lost_between_steps(
    app: Stoker, worker_factory: Any, engine: Any, sticky: str
) -> None:
    workers = [worker_factory(APP, slots=5), worker_factory(APP, slots=5)]
    ref = app.workflows[f"{sticky}_chain"].run_no_wait(Job())
    # The later steps wait two seconds after `first`; its worker dies in that pause.
    first = wait_until(lambda: first_step_worker(engine, ref.run_id), 30, "the first step")
    gone = next(w for w in workers if w.worker_id == first)
    gone.kill()
    if sticky == "soft":
        out = ref.result(timeout=60)  # the preference gives way: the rest runs elsewhere
        assert out["first"]["worker"] == first
        assert {out[s]["worker"] for s in ("left", "right", "last")} == {
            next(w.worker_id for w in workers if w is not gone)
        }
    else:
        with pytest.raises(RunCancelledError) as info:  # waits for its worker, then times out
            ref.result(timeout=60)
        assert info.value.error_type == "ScheduleTimeoutError"


def test_desired_worker_is_a_soft_preference(app: Stoker, worker_factory: Any) -> None:
    chosen = worker_factory(APP, slots=20)
    worker_factory(APP, slots=20)
    outs = [
        r.result(timeout=60)
        for r in app.tasks["plain"].run_many([Job()] * 10, desired_worker_id=chosen.worker_id)
    ]
    assert {o["worker"] for o in outs} == {chosen.worker_id}


def wait_for_status(engine: Any, run_id: str, status: str, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    with psycopg.connect(engine.db_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT status FROM stoker.task WHERE external_id = %s", (run_id,)
            ).fetchone()
            if row and row[0] == status:
                return
            time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {status}")


def test_the_rest_api_shows_a_runs_scheduling_policy(
    app: Stoker, worker_factory: Any, engine: Any, tenant: Any
) -> None:
    import httpx

    labelled = worker_factory(APP, slots=1, labels={"gpu": "a100"})
    blocker = app.tasks["round_robin"].run_no_wait(Job(key="acme", seconds=1.0))
    waiting = app.tasks["round_robin"].run_many([Job(key="acme", seconds=0.1)] * 2)
    headers = {"authorization": f"Bearer {tenant.token}"}
    with httpx.Client(base_url=engine.http_url, headers=headers, timeout=10) as http:
        wait_for_status(engine, blocker.run_id, "RUNNING")
        body = http.get(f"/api/v1/runs/{waiting[1].run_id}").json()
        assert body["scheduling"]["concurrency"] == [
            {
                "expression": "input.key",
                "key": "acme",
                "max_runs": 2,
                "limit_strategy": "GROUP_ROUND_ROBIN",
                "admitted": False,
            }
        ]
        workers = http.get("/api/v1/workers").json()["items"]
        assert [w["labels"] for w in workers] == [{"gpu": "a100"}]
        [r.result(timeout=30) for r in [blocker, *waiting]]
        app.rate_limits.put("shared", limit=10, duration="minute")
        ref = app.tasks["static_limited"].run_no_wait(Job(), desired_worker_id=labelled.worker_id)
        ref.result(timeout=30)
        body = http.get(f"/api/v1/runs/{ref.run_id}").json()
        assert body["scheduling"]["rate_limits"] == [{"key": "shared", "units": 1}]
        assert body["scheduling"]["desired_worker_id"] == labelled.worker_id
        assert body["scheduling"]["assigned_at"] is not None
        assert body["scheduling"]["concurrency"] == []  # released when the run finished


def test_worker_labels_can_change_while_it_runs(app: Stoker, engine: Any) -> None:
    import asyncio
    import threading

    worker = app.worker("relabelled", slots=4, labels={"gpu": "t4"})
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(worker.async_start(),))
    thread.start()
    try:
        wait_for_worker_labels(engine, "relabelled", {"gpu": "t4"})
        ref = app.tasks["needs_gpu"].run_no_wait(Job())
        worker.update_labels({"gpu": "a100"})
        wait_for_worker_labels(engine, "relabelled", {"gpu": "a100"})
        assert ref.result(timeout=30)["worker"] == worker.worker_id
    finally:
        worker.request_stop()
        thread.join(timeout=30)
        loop.close()


def wait_for_worker_labels(engine: Any, name: str, labels: dict[str, Any]) -> None:
    import time

    deadline = time.monotonic() + 20
    with psycopg.connect(engine.db_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT labels FROM stoker.worker WHERE name = %s AND status = 'ACTIVE'", (name,)
            ).fetchone()
            if row and row[0] == labels:
                return
            time.sleep(0.05)
    raise AssertionError(f"worker {name} never showed labels {labels}")
