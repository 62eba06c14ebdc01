"""Durable waits for events through real engine and worker processes: ``ctx.wait_for_event``
satisfied after and (with a lookback) before the wait, racing its registration, once per
task and event, with a timeout, a model and a bad expression; ``ctx.wait_for`` with or_()
groups; and waits that survive a killed engine or worker."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest

from stoker import Stoker, TaskRunError
from tests.apps import waits
from tests.apps.waits import Await, Either
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(180)

TARGET = "tests.apps.waits:app"


@pytest.fixture
def app(engine: Any, tenant: Any) -> Stoker:
    return waits.declare(
        Stoker(address=engine.grpc_address, token=tenant.token, connect_timeout=30)
    )


def query(db_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(sql, args).fetchall()


def entries(db_url: str, run_id: str) -> list[dict[str, Any]]:
    """The run's recorded calls, in position order."""
    return query(
        db_url,
        "SELECT e.position, e.kind, e.name, e.status, e.fired, e.event_id, e.result,"
        " e.recorded_at, e.satisfied_at, e.satisfied_seq"
        " FROM stoker.durable_entry e JOIN stoker.task t ON t.id = e.task_id"
        " WHERE t.external_id = %s ORDER BY e.position",
        run_id,
    )


def conditions(db_url: str, run_id: str) -> list[dict[str, Any]]:
    """The run's rows in the condition registry."""
    return query(
        db_url,
        "SELECT w.cond, w.kind, w.position, w.event_id, w.satisfied_at"
        " FROM stoker.task_wait w JOIN stoker.task t ON t.id = w.task_id"
        " WHERE t.external_id = %s ORDER BY w.cond",
        run_id,
    )


def pending(db_url: str, run_id: str, count: int = 1) -> bool:
    """The run recorded ``count`` waits and they are pending."""
    rows = entries(db_url, run_id)
    return len(rows) == count and all(r["status"] == "pending" for r in rows)


def key() -> str:
    return f"order:{uuid.uuid4().hex[:8]}"


def test_an_event_pushed_after_the_wait_resumes_the_task(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    worker_factory(TARGET, durable_slots=4)
    k = key()
    ref = app.tasks["await_event"].run_no_wait(Await(key=k, expression="input.total > 10"))
    wait_until(lambda: pending(engine.db_url, ref.run_id), what="the wait to be recorded")
    assert app.events.push(k, {"total": 5}).satisfied == 0  # the expression is false: not taken
    assert app.events.push(k + ":other", {"total": 50}).satisfied == 0  # another key
    assert app.events.push(k, {"total": 50}).satisfied == 1
    assert ref.result(timeout=60)["payload"] == {"total": 50}
    [wait] = entries(engine.db_url, ref.run_id)
    assert (wait["kind"], wait["name"], wait["status"], wait["fired"]) == (
        "wait", "wait_for_event", "ok", "0",
    )  # fmt: skip
    assert wait["event_id"] is not None


def test_a_lookback_takes_the_earliest_unused_event_pushed_before_the_wait(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    k = key()
    app.events.push(k, {"n": 1}, scope="elsewhere")  # another scope never matches
    app.events.push(k, {"n": 2}, scope="mine")
    app.events.push(k, {"n": 3}, scope="mine")
    worker_factory(TARGET, durable_slots=4)
    first = app.tasks["await_event"].run_no_wait(Await(key=k, scope="mine", lookback_s=600))
    assert first.result(timeout=60)["payload"] == {"n": 2}  # the earliest, not the newest
    # Events are not used up across tasks: another task's lookback finds n=2 again.
    again = app.tasks["await_event"].run_no_wait(Await(key=k, scope="mine", lookback_s=600))
    assert again.result(timeout=60)["payload"] == {"n": 2}
    [wait] = entries(engine.db_url, first.run_id)
    # Satisfied by the registration itself: in the transaction that recorded the wait.
    assert wait["status"] == "ok" and wait["satisfied_at"] == wait["recorded_at"]


def test_an_event_older_than_the_lookback_does_not_satisfy_the_wait(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    k = key()
    app.events.push(k, {"n": "old"})
    # Let the event age past a 1 s window (on the database clock).
    wait_until(
        lambda: query(
            engine.db_url,
            "SELECT 1 FROM stoker.user_event WHERE key = %s"
            " AND created_at < now() - interval '1.5 seconds'",
            k,
        ),
        what="the event to age",
    )
    worker_factory(TARGET, durable_slots=4)
    ref = app.tasks["await_event"].run_no_wait(Await(key=k, lookback_s=1))
    # Pending once recorded: the lookback ran in the recording transaction and found none.
    wait_until(lambda: pending(engine.db_url, ref.run_id), what="the wait to be recorded")
    assert app.events.push(k, {"n": "new"}).satisfied == 1
    assert ref.result(timeout=60)["payload"] == {"n": "new"}


def test_an_event_racing_the_wait_s_registration_satisfies_it_exactly_once(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    worker_factory(TARGET, durable_slots=20)
    runs: list[tuple[str, Any, int]] = []
    for i in range(60):
        k = f"race:{uuid.uuid4().hex[:8]}"
        ref = app.tasks["await_event"].run_no_wait(Await(key=k, lookback_s=600))
        if i % 2:  # half of them once the attempt runs, close to its registration
            wait_until(
                lambda ref=ref: query(
                    engine.db_url,
                    "SELECT 1 FROM stoker.task WHERE external_id = %s AND status = 'RUNNING'",
                    ref.run_id,
                ),
                what="the attempt to start",
            )
        runs.append((k, ref, app.events.push(k, {"i": i}).satisfied))
    for i, (k, ref, taken) in enumerate(runs):
        assert ref.result(timeout=60)["payload"] == {"i": i}
        [wait] = entries(engine.db_url, ref.run_id)
        [cond] = conditions(engine.db_url, ref.run_id)
        [event] = query(engine.db_url, "SELECT id FROM stoker.user_event WHERE key = %s", k)
        assert wait["status"] == "ok" and wait["event_id"] == event["id"] == cond["event_id"]
        # Exactly one side took it: the push (live) or the registration's lookback.
        by_lookback = wait["satisfied_at"] == wait["recorded_at"]
        assert taken == (0 if by_lookback else 1), (i, taken, by_lookback)


def test_one_event_satisfies_every_task_but_only_one_wait_per_task(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    worker_factory(TARGET, durable_slots=4)
    k = key()
    twice = app.tasks["await_twice"].run_no_wait(Await(key=k))
    once = app.tasks["await_event"].run_no_wait(Await(key=k))
    wait_until(lambda: pending(engine.db_url, twice.run_id, 2), what="two waits recorded")
    wait_until(lambda: pending(engine.db_url, once.run_id), what="the other task's wait")
    assert app.events.push(k, {"n": 1}).satisfied == 2  # one wait of each task
    assert once.result(timeout=60)["payload"] == {"n": 1}
    first, second = entries(engine.db_url, twice.run_id)
    assert (first["status"], second["status"]) == ("ok", "pending")  # the lowest position
    assert app.events.push(k, {"n": 2}).satisfied == 1
    assert twice.result(timeout=60) == [{"n": 1}, {"n": 2}]


def test_a_timeout_raises_wait_timeout_error(app: Stoker, engine: Any, worker_factory: Any) -> None:
    worker_factory(TARGET, durable_slots=4)
    ref = app.tasks["await_event"].run_no_wait(Await(key=key(), timeout_s=1))
    with pytest.raises(TaskRunError) as failed:
        ref.result(timeout=60)
    assert failed.value.error_type == "WaitTimeoutError"
    assert "timed out after 0:00:01" in failed.value.error_message
    [wait] = entries(engine.db_url, ref.run_id)
    assert (wait["status"], wait["fired"]) == ("ok", "0.1")  # the timer of the or-group


def test_a_model_validates_the_payload(app: Stoker, engine: Any, worker_factory: Any) -> None:
    worker_factory(TARGET, durable_slots=4)
    k = key()
    good = app.tasks["await_order"].run_no_wait(Await(key=k))
    wait_until(lambda: pending(engine.db_url, good.run_id), what="the wait to be recorded")
    app.events.push(k, {"id": 7, "total": 9.5})
    assert good.result(timeout=60) == {"type": "Order", "order": {"id": 7, "total": 9.5}}
    bad = app.tasks["await_order"].run_no_wait(Await(key=k))
    wait_until(lambda: pending(engine.db_url, bad.run_id), what="the wait to be recorded")
    app.events.push(k, {"id": "seven"})
    with pytest.raises(TaskRunError) as failed:
        bad.result(timeout=60)
    assert failed.value.error_type == "ValidationError"
    assert "id" in failed.value.error_message


def test_an_invalid_expression_fails_at_the_call(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    worker_factory(TARGET, durable_slots=4)
    ref = app.tasks["await_event"].run_no_wait(Await(key=key(), expression="input.total >"))
    with pytest.raises(TaskRunError) as failed:
        ref.result(timeout=60)
    assert failed.value.error_type == "ValueError"
    assert "invalid CEL expression 'input.total >'" in failed.value.error_message
    assert entries(engine.db_url, ref.run_id) == []  # refused before anything was recorded


def test_wait_for_with_an_or_group_says_what_fired(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    worker_factory(TARGET, durable_slots=4)
    k = key()
    by_event = app.tasks["await_either"].run_no_wait(Either(key=k, sleep_s=120))
    by_sleep = app.tasks["await_either"].run_no_wait(Either(key=key(), sleep_s=1))
    wait_until(lambda: pending(engine.db_url, by_event.run_id), what="the wait to be recorded")
    app.events.push(k, {"ok": True, "n": 1})
    assert by_event.result(timeout=60) == {"fired": "event", "payload": {"ok": True, "n": 1}}
    assert by_sleep.result(timeout=60) == {"fired": "sleep", "payload": None}
    # The or-group's losing condition is gone from the registry; the winner stays.
    left = conditions(engine.db_url, by_event.run_id)
    assert [(c["cond"].split(":")[1], c["kind"]) for c in left] == [("0.1", "event")]


def test_wait_for_holds_only_when_every_item_does(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    worker_factory(TARGET, durable_slots=4)
    k = key()
    ref = app.tasks["await_both"].run_no_wait(Either(key=k, sleep_s=2))
    wait_until(lambda: pending(engine.db_url, ref.run_id), what="the wait to be recorded")
    assert (
        app.events.push(k + ":b", {"n": "b"}).satisfied == 1
    )  # the or-item holds, the sleep not yet
    assert entries(engine.db_url, ref.run_id)[0]["status"] == "pending"
    assert ref.result(timeout=60) == {"fired": "sleep", "payload": None}  # the sleep completed it


def test_an_engine_killed_mid_wait_then_an_event_resumes_the_task(
    engine_factory: Any, tenant_factory: Any, worker_factory: Any
) -> None:
    eng = engine_factory()
    ten = tenant_factory(eng)
    worker = worker_factory(TARGET, durable_slots=4, engine=eng, tenant=ten)
    client = waits.declare(Stoker(address=eng.grpc_address, token=ten.token, connect_timeout=60))
    k = key()
    ref = client.tasks["await_event"].run_no_wait(Await(key=k))
    wait_until(lambda: pending(eng.db_url, ref.run_id), what="the wait to be recorded")
    eng.restart()  # SIGKILL and start again
    wait_until(lambda: client.events.push(k, {"after": "restart"}).satisfied == 1, timeout=60,
               what="the restarted engine to take the event")  # fmt: skip
    out = ref.result(timeout=90)
    # The same attempt on the same worker resumed: it reconnected and was woken.
    assert out == {"payload": {"after": "restart"}, "attempt": 0, "pid": worker.pid}


def test_a_worker_killed_mid_wait_resumes_on_another_worker_with_the_event(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    doomed = worker_factory(TARGET, durable_slots=4, name="doomed")
    k = key()
    ref = app.tasks["await_event"].run_no_wait(Await(key=k))
    wait_until(lambda: pending(engine.db_url, ref.run_id), what="the wait to be recorded")
    doomed.kill()
    assert (
        app.events.push(k, {"while": "no worker"}).satisfied == 1
    )  # recorded with no one running it
    survivor = worker_factory(TARGET, durable_slots=4, name="survivor")
    out = ref.result(timeout=90)
    assert out == {"payload": {"while": "no worker"}, "attempt": 1, "pid": survivor.pid}


def test_events_pushed_from_threads_while_tasks_register_lose_nothing(
    app: Stoker, engine: Any, worker_factory: Any
) -> None:
    """Several tasks wait on one key; pushes from threads race the registrations. With a
    lookback covering them, each task takes exactly one event and no event twice."""
    worker_factory(TARGET, durable_slots=10)
    k = key()
    refs = [app.tasks["await_event"].run_no_wait(Await(key=k, lookback_s=600)) for _ in range(10)]
    pushers = [threading.Thread(target=app.events.push, args=(k, {"t": t})) for t in range(3)]
    for t in pushers:
        t.start()
    for t in pushers:
        t.join()
    got = [ref.result(timeout=60)["payload"] for ref in refs]
    assert all(p in ({"t": 0}, {"t": 1}, {"t": 2}) for p in got)
    for ref in refs:
        assert len([c for c in conditions(engine.db_url, ref.run_id) if c["event_id"]]) == 1
