"""Workflows end to end: real engine and worker processes, the public SDK only."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stoker import NotFoundError, RunCancelledError, Stoker, TaskRunError
from tests.apps import workflows
from tests.apps.workflows import Count, Job
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def app(engine: Any, tenant: Any) -> Stoker:
    return workflows.declare(
        Stoker(address=engine.grpc_address, token=tenant.token, connect_timeout=5)
    )


@pytest.fixture
def worker(worker_factory: Any) -> Any:
    return worker_factory("tests.apps.workflows:app", slots=20)


def steps(engine: Any, run_id: str) -> dict[str, dict[str, Any]]:
    """The steps of a workflow run by step name."""
    with psycopg.connect(engine.db_url, row_factory=psycopg.rows.dict_row) as conn:
        rows = conn.execute(
            "SELECT t.* FROM stoker.task t JOIN stoker.dag d ON d.id = t.dag_id"
            " WHERE d.external_id = %s",
            (run_id,),
        ).fetchall()
    return {r["step"]: r for r in rows}


def log_lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_diamond_runs_parents_first_and_returns_outputs_by_step(
    app: Stoker, worker: Any, engine: Any, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    out = app.workflows["diamond"].run(Job(log=str(log), value=3))
    assert out == {
        "a": {"v": 3},
        "b": {"v": 30},
        "c": {"v": 8},
        "d": {"sum": 38, "b_started": True},
    }
    order = log_lines(log)
    assert order[0] == "a" and order[-1] == "d" and sorted(order[1:3]) == ["b", "c"]


def test_skip_does_not_block_children_and_cancel_if_cancels_downstream(
    app: Stoker, worker: Any, engine: Any
) -> None:
    branchy = app.workflows["branchy"]
    # 500: "small" is skipped (its child runs and sees the skip); "not_huge" runs.
    out = branchy.run(Job(value=500))
    assert out["after_small"] == {"small_skipped": True}
    assert "small" not in out and out["not_huge"] == "not huge"
    assert out["after_not_huge"] == "ran"
    # 5000: "not_huge" is cancelled by cancel_if, and so is its child; the run is CANCELLED.
    ref = branchy.run_no_wait(Job(value=5000))
    with pytest.raises(RunCancelledError, match="not_huge"):
        ref.result(timeout=30)
    s = steps(engine, ref.run_id)
    assert s["not_huge"]["status"] == "CANCELLED" and s["after_not_huge"]["status"] == "CANCELLED"
    assert s["small"]["skipped"] and s["after_small"]["status"] == "COMPLETED"
    # 50: nothing skipped or cancelled.
    out = branchy.run(Job(value=50))
    assert out["small"] == "small" and out["after_small"] == {"small_skipped": False}


def test_sleep_event_and_and_of_ors_conditions(app: Stoker, worker: Any, engine: Any) -> None:
    waits = app.workflows["waits"]
    ref = waits.run_no_wait(Job(order_id=7))
    wait_until(
        lambda: (
            steps(engine, ref.run_id)["paid"]["status"] == "PENDING"
            and steps(engine, ref.run_id)["start"]["status"] == "COMPLETED"
        ),
        30,
        "the start step",
    )
    # waiting steps hold no worker slot: nothing of theirs is queued or running
    s = steps(engine, ref.run_id)
    assert {s[n]["status"] for n in ("paid", "mixed")} == {"PENDING"}
    # an event for another order does not match; one whose payload breaks the expression
    # is reported on the waiting step without blocking anything
    assert app.events.push("order:paid", {"order_id": 8}).satisfied == 0
    assert app.events.push("order:paid", "not an object").satisfied == 0
    assert app.events.push("order:paid", {"order_id": 7}).satisfied == 1
    assert app.events.push("order:go", {}, scope=ref.run_id).satisfied == 1
    out = ref.result(timeout=30)
    assert out["paid"] == "paid" and out["mixed"] == "mixed"
    assert out["slept"]["at"] - out["start"]["at"] >= 1.0
    with psycopg.connect(engine.db_url) as conn:
        kinds = conn.execute(
            "SELECT e.kind, e.data::text FROM stoker.task_event e"
            " JOIN stoker.task t ON t.id = e.task_id JOIN stoker.dag d ON d.id = t.dag_id"
            " WHERE d.external_id = %s",
            (ref.run_id,),
        ).fetchall()
    assert any(k == "CONDITION_ERROR" and "order_id" in data for k, data in kinds)


def test_on_failure_and_on_success_handlers(app: Stoker, worker: Any, engine: Any) -> None:
    ref = app.workflows["failing"].run_no_wait(Job())
    with pytest.raises(TaskRunError, match="boom failed on purpose") as info:
        ref.result(timeout=30)
    assert info.value.status == "FAILED"
    s = steps(engine, ref.run_id)
    assert s["boom"]["status"] == "FAILED" and s["fine"]["status"] == "COMPLETED"
    assert s["after_boom"]["status"] == "CANCELLED"
    assert s["cleanup"]["output"] == {"boom": "NonRetryableError: boom failed on purpose"}
    out = app.workflows["succeeding"].run(Job(value=4))
    assert out == {"only": 4, "celebrate": "done"}


def test_fan_out_of_a_thousand_children(app: Stoker, worker: Any, engine: Any) -> None:
    out = app.tasks["fan_out"].run(Count(n=1000), additional_metadata={"tenant": "acme"})
    assert out == {"sum": sum(i * i for i in range(1000)), "children": 1000}
    with psycopg.connect(engine.db_url) as conn:
        n, md = conn.execute(
            "SELECT count(*), min(t.additional_metadata::text) FROM stoker.child_run c"
            " JOIN stoker.task t ON t.external_id = c.external_id"
            " WHERE t.task_name = 'square'"
        ).fetchone()  # type: ignore[misc]
    assert n >= 1000 and '"tenant": "acme"' in md


def test_retried_parent_gets_the_same_children(app: Stoker, worker: Any, engine: Any) -> None:
    ref = app.tasks["spawn_then_fail"].run_no_wait(Count(n=5), additional_metadata={"k": "v"})
    out = ref.result(timeout=30)
    assert out["sum"] == sum(i * i for i in range(5)) and out["metadata"] == {"k": "v"}
    with psycopg.connect(engine.db_url) as conn:
        children = conn.execute(
            "SELECT c.external_id::text, c.child_index, c.child_key FROM stoker.child_run c"
            " JOIN stoker.task p ON p.id = c.parent_task_id WHERE p.external_id = %s",
            (ref.run_id,),
        ).fetchall()
        squares = conn.execute(
            "SELECT count(*) FROM stoker.task WHERE external_id = ANY(%s::uuid[])",
            (out["ids"],),
        ).fetchone()
    # two attempts spawned 6 children each; 6 exist, and the retry got the same ids
    assert len(children) == 6 and squares == (6,)
    assert sorted(c[0] for c in children) == sorted(out["ids"])
    assert [c[2] for c in children if c[2]] == ["the-keyed-one"]


def test_child_workflow_from_a_sync_task_and_metadata_propagation(app: Stoker, worker: Any) -> None:
    assert app.tasks["sync_parent"].run(Count(n=2)) == {"d": 20 + 7}
    out = app.tasks["metadata_parent"].run(Count(n=1), additional_metadata={"tenant": "acme"})
    assert out == {"child_saw": {"tenant": "acme", "child": "yes"}}


def test_cancel_a_run_with_running_sync_and_async_steps(
    app: Stoker, worker: Any, engine: Any, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    ref = app.workflows["slow"].run_no_wait(Job(log=str(log)))
    wait_until(
        lambda: {"async_wait:start", "sync_spin:start"} <= set(log_lines(log)),
        30,
        "both steps to start",
    )
    outcome = app.runs.cancel(ref.run_id)
    assert outcome.outcome == "cancelled"
    with pytest.raises(RunCancelledError):
        ref.result(timeout=30)
    s = steps(engine, ref.run_id)
    assert {r["status"] for r in s.values()} == {"CANCELLED"}
    # the worker was told: the async step was cancelled, the sync one saw ctx.is_cancelled
    wait_until(
        lambda: {"async_wait:cancelled", "sync_spin:cancelled"} <= set(log_lines(log)),
        30,
        "the worker to stop both steps",
    )
    assert "never" not in log_lines(log)
    again = app.runs.cancel(ref.run_id)
    assert again.outcome == "already_finished" and "already finished" in again.message
    with pytest.raises(NotFoundError):
        app.runs.cancel("00000000-0000-0000-0000-000000000000")
    with pytest.raises(NotFoundError):
        app.runs.replay("00000000-0000-0000-0000-000000000000")


def test_bulk_cancel_by_metadata_filter(app: Stoker, worker: Any, tmp_path: Path) -> None:
    slow = app.workflows["slow"]
    mine = [slow.run_no_wait(Job(log=str(tmp_path / f"l{i}")), additional_metadata={"batch": "x"})
            for i in range(3)]  # fmt: skip
    other = slow.run_no_wait(Job(log=str(tmp_path / "other")), additional_metadata={"batch": "y"})
    outcomes = app.runs.bulk_cancel(workflow="slow", additional_metadata={"batch": "x"})
    assert sorted(o.run_id for o in outcomes) == sorted(r.run_id for r in mine)
    for r in mine:
        with pytest.raises(RunCancelledError):
            r.result(timeout=30)
    assert app.runs.cancel(other).outcome == "cancelled"


def test_replay_after_failure_keeps_successful_outputs(
    app: Stoker, worker: Any, engine: Any, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    ref = app.workflows["replayable"].run_no_wait(Job(log=str(log), value=41))
    with pytest.raises(TaskRunError, match="second"):
        ref.result(timeout=30)
    assert app.runs.replay(ref.run_id).outcome == "replayed"
    assert ref.result(timeout=30) == {"first": {"v": 41}, "second": {"v": 42}}
    assert log_lines(log) == ["first", "second", "second"]
    assert app.runs.replay(ref.run_id).outcome == "completed"


def test_replay_re_runs_the_failed_child_runs_of_a_failed_parent(
    app: Stoker, worker: Any, tmp_path: Path
) -> None:
    parent = app.tasks["parent_of_failing_child"].run_no_wait(Job(log=str(tmp_path / "c")))
    with pytest.raises(TaskRunError, match="the child fails the first time"):
        parent.result(timeout=30)
    assert app.runs.replay(parent).outcome == "replayed"
    # The parent spawns its child again (same index): the child was replayed with it.
    assert parent.result(timeout=30) == {"child": "child ok"}


def test_killing_the_worker_mid_dag_resumes_without_rerunning_finished_steps(
    app: Stoker, worker_factory: Any, engine: Any, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    first = worker_factory("tests.apps.workflows:app", slots=4, name="doomed")
    ref = app.workflows["diamond"].run_no_wait(Job(log=str(log), value=2, hold_s=2.0))
    wait_until(lambda: {"b", "c"} <= set(log_lines(log)), 30, "b and c to start")
    first.kill()
    worker_factory("tests.apps.workflows:app", slots=4, name="rescuer")
    out = ref.result(timeout=60)
    assert out["d"] == {"sum": 20 + 7, "b_started": True}
    lines = log_lines(log)
    assert lines.count("a") == 1 and lines.count("d") == 1
    assert lines.count("b") == 2 and lines.count("c") == 2  # interrupted, so run again


def test_declaration_errors() -> None:
    from stoker import DeclarationError, ParentCondition, UserEventCondition

    app = Stoker()
    wf = app.workflow("shape")

    @wf.task()
    async def one(input: dict[str, Any], ctx: Any) -> int:
        return 1

    with pytest.raises(DeclarationError, match="already declared"):

        @wf.task(name="one")
        async def again(input: dict[str, Any], ctx: Any) -> int:
            return 1

    other = app.workflow("other")

    @other.task()
    async def foreign(input: dict[str, Any], ctx: Any) -> int:
        return 1

    with pytest.raises(DeclarationError, match="not a step of this workflow"):

        @wf.task(parents=[foreign])
        async def two(input: dict[str, Any], ctx: Any) -> int:
            return 1

    with pytest.raises(DeclarationError, match=r"invalid CEL expression 'output\.x >'"):
        ParentCondition(one, "output.x >")
    with pytest.raises(DeclarationError, match="invalid CEL expression"):
        UserEventCondition("k", "input.(")
    with pytest.raises(DeclarationError, match="not one of its parents"):

        @wf.task(skip_if=[ParentCondition(one, "output > 1")])
        async def three(input: dict[str, Any], ctx: Any) -> int:
            return 1

    with pytest.raises(TypeError, match="run the workflow"):
        one.run_no_wait({})


def test_steps_run_concurrently_and_handoff_is_fast(app: Stoker, worker: Any) -> None:
    async def many() -> list[dict[str, Any]]:
        refs = await app.workflows["diamond"].aio_run_many([Job(value=i) for i in range(50)])
        return await asyncio.gather(*(r.aio_result() for r in refs))

    started = time.monotonic()
    results = asyncio.run(many())
    assert [r["d"]["sum"] for r in results] == [i * 10 + i + 5 for i in range(50)]
    assert time.monotonic() - started < 20


def test_rest_api_shows_the_dag_and_filters_by_metadata(
    app: Stoker, worker: Any, engine: Any, tenant: Any
) -> None:
    import httpx

    ref = app.workflows["branchy"].run_no_wait(
        Job(value=500), additional_metadata={"tenant": "acme", "team": "a"}
    )
    ref.result(timeout=30)
    app.workflows["branchy"].run(Job(value=50), additional_metadata={"tenant": "other"})
    headers = {"authorization": f"Bearer {tenant.token}"}
    with httpx.Client(base_url=engine.http_url, headers=headers, timeout=10) as http:
        body = http.get(f"/api/v1/workflow-runs/{ref.run_id}").json()
        assert body["status"] == "COMPLETED" and body["workflow_name"] == "branchy"
        assert body["additional_metadata"] == {"tenant": "acme", "team": "a"}
        by_step = {s["step"]: s for s in body["steps"]}
        assert by_step["small"]["status"] == "SKIPPED"
        assert by_step["amount"]["output"] == {"amount": 500}
        assert by_step["amount"]["attempts"][0]["status"] == "COMPLETED"
        assert by_step["after_small"]["parents"] == ["small"]
        assert {"parent": "amount", "child": "small"} in body["edges"]
        assert all(
            s["duration_ms"] is not None for s in body["steps"] if not s["status"] == "SKIPPED"
        )
        page = http.get("/api/v1/workflow-runs", params={"metadata": "tenant:acme"}).json()
        assert [i["run_id"] for i in page["items"]] == [ref.run_id]
        missing = http.get(f"/api/v1/workflow-runs/{uuid.uuid4()}")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFoundError"
        # the generic run list still answers while steps are PENDING
        assert http.get("/api/v1/runs").status_code == 200


def failures_of(eng: Any, message: str) -> int:
    """How many times the engine's log shows ``message`` so far."""
    return eng.log_path.read_text(errors="replace").count(message)


def test_a_failing_progression_keeps_the_outcome_and_the_sweeper_recovers_the_run(
    engine_factory: Any, tenant_factory: Any, worker_factory: Any
) -> None:
    # Fault injection on a private engine: with task_wait gone, progressing a run fails.
    eng = engine_factory()
    ten = tenant_factory(eng)
    app = workflows.declare(Stoker(address=eng.grpc_address, token=ten.token))
    worker_factory("tests.apps.workflows:app", slots=4, engine=eng, tenant=ten)
    with psycopg.connect(eng.db_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE stoker.task_wait RENAME TO task_wait_away")
        ref = app.workflows["diamond"].run_no_wait(Job(value=3))
        # `a` ends and its outcome is stored, although the run cannot progress past it.
        wait_until(lambda: steps(eng, ref.run_id)["a"]["status"] == "COMPLETED", 30, "a")
        # The progression in a's own transaction failed before a showed as COMPLETED; once
        # a sweep after that failed too, nothing else could have progressed the run.
        failed_before = failures_of(eng, 'task_wait" does not exist')
        wait_until(
            lambda: failures_of(eng, 'task_wait" does not exist') > failed_before,
            30,
            "a sweep to fail on the missing table",
        )
        assert {s: r["status"] for s, r in steps(eng, ref.run_id).items()} == {
            "a": "COMPLETED",
            "b": "PENDING",
            "c": "PENDING",
            "d": "PENDING",
        }
        conn.execute("ALTER TABLE stoker.task_wait_away RENAME TO task_wait")
    # The sweeper finds the stalled run and progresses it.
    assert ref.result(timeout=30)["d"]["sum"] == 30 + 8
