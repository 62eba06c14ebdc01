"""Memoized steps, determinism helpers and child runs of durable tasks, through real engine
and worker processes: a killed worker's run resumes on another without running a completed
step again or spawning a child twice, and recorded failures come back the same way."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from stoker import DeclarationError, InvalidRequestError, StepError, Stoker, TaskRunError
from tests.apps import dsteps
from tests.apps.dsteps import Job
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(180)

APP = "tests.apps.dsteps:app"


@pytest.fixture
def app(engine: Any, tenant: Any) -> Stoker:
    return dsteps.declare(
        Stoker(address=engine.grpc_address, token=tenant.token, connect_timeout=30)
    )


def query(db_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(sql, args).fetchall()


def entries(db_url: str, run_id: str) -> list[dict[str, Any]]:
    """The run's recorded calls, in position order."""
    return query(
        db_url,
        "SELECT e.position, e.kind, e.name, e.status, e.result, e.error, e.invocation,"
        " e.child_external_id, e.satisfied_at FROM stoker.durable_entry e"
        " JOIN stoker.all_tasks t ON t.id = e.task_id"
        " WHERE t.external_id = %s ORDER BY e.position",
        run_id,
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def children_of(db_url: str, run_id: str) -> int:
    """How many child runs the run's task has (each spawn writes one child_run row)."""
    rows = query(
        db_url,
        "SELECT count(*) AS n FROM stoker.child_run c"
        " JOIN stoker.all_tasks t ON t.id = c.parent_task_id WHERE t.external_id = %s",
        run_id,
    )
    return int(rows[0]["n"])


def sleeping(db_url: str, run_id: str) -> bool:
    return any(e["kind"] == "wait" and e["status"] == "pending" for e in entries(db_url, run_id))


def test_completed_steps_and_helpers_survive_a_killed_worker(
    app: Stoker, engine: Any, worker_factory: Any, tmp_path: Path
) -> None:
    doomed = worker_factory(APP, durable_slots=2, name="doomed")
    ref = app.tasks["memo"].run_no_wait(Job(dir=str(tmp_path), seconds=6))
    wait_until(lambda: sleeping(engine.db_url, ref.run_id), what="the sleep to be recorded")
    doomed.kill()
    worker_factory(APP, durable_slots=2, name="survivor")
    out = ref.result(timeout=90)
    # Each step ran in the first invocation only: the charge once, the flaky step's three
    # tries (two failures, retried in-process, then a result).
    assert lines(tmp_path / "charges") == [str(doomed.pid)]
    assert len(lines(tmp_path / "flaky")) == 3
    assert out["paid"] == {"charged": 42, "count": 1} and out["flaky"] == 3
    assert out["attempt"] == 1
    # now/uuid/random: the replay got the first invocation's values back.
    first, second = (json.loads(x) for x in lines(tmp_path / "helpers"))
    assert first == second
    assert {k: out[k] for k in ("now", "uuid", "random")} == first
    assert datetime.fromisoformat(first["now"]).tzinfo is not None
    assert 0 <= first["random"] < 1
    recorded = entries(engine.db_url, ref.run_id)
    assert [(e["kind"], e["name"], e["status"]) for e in recorded] == [
        ("step", "charge", "ok"),
        ("step", "flaky", "ok"),
        ("step", "stoker.now", "ok"),
        ("step", "stoker.uuid", "ok"),
        ("step", "stoker.random", "ok"),
        ("wait", "sleep", "ok"),
    ]
    assert all(e["invocation"] == 1 for e in recorded)


def test_a_failed_step_is_recorded_and_raised_again_on_replay_not_run_again(
    app: Stoker, engine: Any, worker_factory: Any, tmp_path: Path
) -> None:
    doomed = worker_factory(APP, durable_slots=2, name="doomed")
    ref = app.tasks["failing_step"].run_no_wait(Job(dir=str(tmp_path), seconds=6))
    wait_until(lambda: sleeping(engine.db_url, ref.run_id), what="the sleep to be recorded")
    doomed.kill()
    worker_factory(APP, durable_slots=2, name="survivor")
    out = ref.result(timeout=90)
    assert out == {"type": "ValueError", "message": "the card was declined", "step": "boom"}
    assert len(lines(tmp_path / "booms")) == 3  # 1 try + 2 retries, in the first invocation
    step = entries(engine.db_url, ref.run_id)[0]
    assert (step["kind"], step["name"], step["status"]) == ("step", "boom", "error")
    assert step["error"]["type"] == "ValueError"
    assert step["error"]["message"] == "the card was declined"
    assert "ValueError" in step["error"]["traceback"]


def test_a_retry_replays_the_recorded_step_failure(
    app: Stoker, engine: Any, worker_factory: Any, tmp_path: Path
) -> None:
    worker_factory(APP, durable_slots=2)
    ref = app.tasks["uncaught_step"].run_no_wait(Job(dir=str(tmp_path)))
    with pytest.raises(TaskRunError) as failed:
        ref.result(timeout=60)
    assert failed.value.error_type == "StepError"
    assert "step 'boom' (position 1) failed: ValueError: the card was declined" in str(failed.value)
    # The task's retry replayed the failure: the step's three tries ran once, not twice.
    assert len(lines(tmp_path / "booms")) == 3
    row = query(
        engine.db_url,
        "SELECT retry_count FROM stoker.all_tasks WHERE external_id = %s",
        ref.run_id,
    )[0]
    assert row["retry_count"] == 1


def test_a_step_that_is_not_json_or_too_slow_fails_with_a_clear_error(
    app: Stoker, engine: Any, worker_factory: Any, tmp_path: Path
) -> None:
    worker_factory(APP, durable_slots=2)
    out = app.tasks["bad_steps"].run_no_wait(Job(dir=str(tmp_path))).result(timeout=60)
    kind, message = out["json"]
    assert kind == "OutputSerializationError"
    assert "step 'make_a_set' returned a set, which is not JSON" in message
    assert out["timeout"] == [
        "StepTimeoutError",
        "step 'slow' took longer than its timeout of 0.3s",
    ]
    run_id = query(
        engine.db_url,
        "SELECT external_id::text AS id FROM stoker.all_tasks WHERE task_name = 'bad_steps'",
    )[0]["id"]
    assert [(e["name"], e["status"]) for e in entries(engine.db_url, run_id)] == [
        ("make_a_set", "error"),
        ("slow", "error"),
    ]


def test_a_parent_with_100_children_replays_without_spawning_more(
    app: Stoker, engine: Any, worker_factory: Any, tmp_path: Path
) -> None:
    doomed = worker_factory(APP, slots=20, durable_slots=2, name="doomed")
    ref = app.tasks["parent"].run_no_wait(Job(dir=str(tmp_path), seconds=8, children=100))
    wait_until(lambda: sleeping(engine.db_url, ref.run_id), what="the sleep to be recorded")
    spawned = children_of(engine.db_url, ref.run_id)
    assert spawned == 101  # aio_run_many's 100 and a run_no_wait
    # The children's ends settle their entries while the parent sleeps: nobody awaits
    # them through the log, so only the transactions that finished them can have.
    wait_until(
        lambda: (
            [e["status"] for e in entries(engine.db_url, ref.run_id) if e["kind"] == "child"]
            == ["ok"] * 101
        ),
        what="the children's entries to be settled by their ends",
    )
    assert sleeping(engine.db_url, ref.run_id)
    doomed.kill()
    worker_factory(APP, slots=20, durable_slots=2, name="survivor")
    out = ref.result(timeout=120)
    assert out["total"] == sum(2 * i for i in range(100))
    assert (out["last"], out["loose"]) == (1000, 2000)
    assert out["flow"] == {"greet": "hello 7"}
    # The replay found the 101 children instead of spawning them again; the two children
    # awaited after the sleep came on top, once each.
    assert children_of(engine.db_url, ref.run_id) == 103
    kid_runs = query(
        engine.db_url, "SELECT count(*) AS n FROM stoker.all_tasks WHERE task_name = 'kid'"
    )[0]["n"]
    assert kid_runs == 102
    # Kids killed with the first worker may run again (at least once); none was spawned twice.
    assert len(lines(tmp_path / "kids")) >= 102
    recorded = entries(engine.db_url, ref.run_id)
    assert [e["kind"] for e in recorded] == ["child"] * 101 + ["wait", "child", "child"]
    assert sorted(str(e["child_external_id"]) for e in recorded[:100]) == out["ids"]
    assert all(e["status"] == "ok" for e in recorded)
    assert recorded[-3]["result"] is None and recorded[-2]["result"] == 1000


def test_a_child_s_failure_is_stored_once_and_raised_again_on_replay(
    app: Stoker, engine: Any, worker_factory: Any, tmp_path: Path
) -> None:
    doomed = worker_factory(APP, durable_slots=2, name="doomed")
    ref = app.tasks["grieving"].run_no_wait(Job(dir=str(tmp_path), seconds=6))
    wait_until(lambda: sleeping(engine.db_url, ref.run_id), what="the sleep to be recorded")
    doomed.kill()
    worker_factory(APP, durable_slots=2, name="survivor")
    out = ref.result(timeout=90)
    child = entries(engine.db_url, ref.run_id)[0]
    assert out == {
        "type": "RuntimeError",
        "message": "kid 3 gave up",
        "run": str(child["child_external_id"]),
    }
    assert (child["kind"], child["name"], child["status"]) == ("child", "bad_kid", "error")
    assert child["error"]["status"] == "FAILED"
    # Settled in the transaction that failed the child: the same now().
    ended = query(
        engine.db_url,
        "SELECT finished_at FROM stoker.all_tasks WHERE external_id = %s",
        child["child_external_id"],
    )[0]["finished_at"]
    assert child["satisfied_at"] == ended
    assert lines(tmp_path / "bad-kids") == [str(doomed.pid)]  # ran once, spawned once
    assert children_of(engine.db_url, ref.run_id) == 1


def test_a_child_key_used_twice_finds_the_same_finished_child(
    app: Stoker, engine: Any, worker_factory: Any, tmp_path: Path
) -> None:
    worker_factory(APP, durable_slots=2)
    ref = app.tasks["keyed"].run_no_wait(Job(dir=str(tmp_path)))
    assert ref.result(timeout=60) == [8, 8]
    first, again = entries(engine.db_url, ref.run_id)
    assert first["child_external_id"] == again["child_external_id"]
    # The second entry found a finished child: settled when recorded, from its outcome.
    assert (first["status"], again["status"]) == ("ok", "ok")
    assert again["result"] == 8
    assert children_of(engine.db_url, ref.run_id) == 1
    assert len(lines(tmp_path / "kids")) == 1


def test_a_child_re_executed_after_a_reset_is_a_new_run(
    app: Stoker, engine: Any, worker_factory: Any, tmp_path: Path
) -> None:
    # parent with one child: 1 kid 0, 2 the loose kid, 3 the sleep, 4 kid 500, 5 family.
    worker_factory(APP, slots=4, durable_slots=2)
    ref = app.tasks["parent"].run_no_wait(Job(dir=str(tmp_path), children=1))
    first = ref.result(timeout=60)
    assert children_of(engine.db_url, ref.run_id) == 4
    assert len(lines(tmp_path / "kids")) == 3
    assert app.runs.reset(ref, 4).branch == 2
    assert ref.result(timeout=60) == first
    # Positions 4 and 5 ran again on branch 2: new children, not the old branch's runs.
    assert children_of(engine.db_url, ref.run_id) == 6
    assert len(lines(tmp_path / "kids")) == 4
    assert len(lines(tmp_path / "family")) == 2
    rows = query(
        engine.db_url,
        "SELECT e.branch, e.position, e.child_external_id AS child FROM stoker.durable_entry e"
        " JOIN stoker.all_tasks t ON t.id = e.task_id WHERE t.external_id = %s"
        " AND e.position >= 4 ORDER BY e.position, e.branch",
        ref.run_id,
    )
    assert [(r["position"], r["branch"]) for r in rows] == [(4, 1), (4, 2), (5, 1), (5, 2)]
    assert rows[0]["child"] != rows[1]["child"] and rows[2]["child"] != rows[3]["child"]


def test_a_durable_step_of_a_workflow_is_reset_while_it_waits_not_once_finished(
    app: Stoker, engine: Any, worker_factory: Any, tmp_path: Path
) -> None:
    worker_factory(APP, slots=4, durable_slots=2)
    (tmp_path / "nap").write_text("600")
    ref = app.workflows["review"].run_no_wait(Job(dir=str(tmp_path)))
    step_id = lambda: query(  # noqa: E731
        engine.db_url,
        "SELECT t.external_id::text AS id FROM stoker.all_tasks t"
        " JOIN stoker.all_dags d ON d.id = t.dag_id"
        " WHERE d.external_id = %s AND t.step = 'check'",
        ref.run_id,
    )
    wait_until(
        lambda: bool(step_id()) and sleeping(engine.db_url, step_id()[0]["id"]),
        what="the durable step's sleep to be recorded",
    )
    step = step_id()[0]["id"]
    (tmp_path / "nap").write_text("0.1")  # the fix: the sleep at 2 runs again, shorter
    done = app.runs.reset(step, 2)
    assert (done.branch, done.dropped) == (2, 1)
    out = ref.result(timeout=60)
    assert out["check"] == {"paid": {"charged": 1, "count": 1}, "attempt": 1}
    assert out["after"] == "after attempt 1"
    assert len(lines(tmp_path / "charges")) == 1  # the step before the fork replayed
    assert len(lines(tmp_path / "after")) == 1
    # Completed, the steps after it ran on its output: refused, saying why.
    with pytest.raises(InvalidRequestError, match="reset only before it finishes"):
        app.runs.reset(step, 2)
    with pytest.raises(InvalidRequestError, match="is a workflow run"):
        app.runs.reset(ref.run_id, 1)


def test_a_failed_durable_step_of_a_finished_workflow_is_reset_and_the_workflow_resumes(
    app: Stoker, engine: Any, worker_factory: Any, tmp_path: Path
) -> None:
    worker_factory(APP, slots=4, durable_slots=2)
    (tmp_path / "fail").touch()
    ref = app.workflows["review"].run_no_wait(Job(dir=str(tmp_path)))
    with pytest.raises(TaskRunError, match="the check failed after its sleep"):
        ref.result(timeout=60)
    [step] = query(
        engine.db_url,
        "SELECT t.external_id::text AS id, t.status FROM stoker.all_tasks t"
        " JOIN stoker.all_dags d ON d.id = t.dag_id"
        " WHERE d.external_id = %s AND t.step = 'check'",
        ref.run_id,
    )
    assert step["status"] == "FAILED"
    (tmp_path / "fail").unlink()  # the fix
    done = app.runs.reset(step["id"], 2)
    assert (done.branch, done.status) == (2, "QUEUED")
    out = ref.result(timeout=60)
    assert out["check"] == {"paid": {"charged": 1, "count": 1}, "attempt": 1}
    assert out["after"] == "after attempt 1"
    assert len(lines(tmp_path / "charges")) == 1  # the step before the fork replayed


def test_a_durable_step_of_a_workflow_keeps_its_log(
    app: Stoker, engine: Any, worker_factory: Any, tmp_path: Path
) -> None:
    doomed = worker_factory(APP, durable_slots=2, name="doomed")
    ref = app.workflows["pipeline"].run_no_wait(Job(dir=str(tmp_path), seconds=6))
    step_id = lambda: query(  # noqa: E731
        engine.db_url,
        "SELECT t.external_id::text AS id FROM stoker.all_tasks t"
        " JOIN stoker.all_dags d ON d.id = t.dag_id"
        " WHERE d.external_id = %s AND t.step = 'process'",
        ref.run_id,
    )
    wait_until(
        lambda: bool(step_id()) and sleeping(engine.db_url, step_id()[0]["id"]),
        what="the durable step's sleep to be recorded",
    )
    doomed.kill()
    worker_factory(APP, durable_slots=2, name="survivor")
    out = ref.result(timeout=90)
    assert out["process"] == {"paid": {"charged": 3, "count": 1}, "attempt": 1}
    assert lines(tmp_path / "charges") == [str(doomed.pid)]
    recorded = entries(engine.db_url, step_id()[0]["id"])
    assert [(e["kind"], e["name"], e["status"]) for e in recorded] == [
        ("step", "charge", "ok"),
        ("wait", "sleep", "ok"),
    ]


def test_steps_are_plain_calls_outside_durable_tasks_and_checked_at_declaration() -> None:
    app = Stoker(address="127.0.0.1:1")

    @app.step(retries=1)
    def double(x: int) -> int:
        return 2 * x

    assert double(4) == 8
    with pytest.raises(DeclarationError, match="retries must be an int >= 0"):
        app.step(retries=-1)
    with pytest.raises(DeclarationError, match="timeout must be seconds > 0"):
        app.step(timeout=0)
    with pytest.raises(DeclarationError, match=r"durable step 'sync'.*must be async"):
        wf = app.workflow("wf")

        @wf.durable_task()
        def sync(input: Job, ctx: Any) -> None: ...

    assert issubclass(StepError, Exception)
