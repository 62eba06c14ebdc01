"""End to end: a real engine process, real worker processes, the public SDK."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from stoker import (
    Context,
    PayloadTooLargeError,
    RunCancelledError,
    Stoker,
    TaskRunError,
    UnknownTaskError,
)
from tests.apps import basic
from tests.apps.basic import Flaky, Greet, Greeting, Sleep
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def app(engine: Any, tenant: Any) -> Stoker:
    return basic.declare(Stoker(address=engine.grpc_address, token=tenant.token, connect_timeout=5))


@pytest.fixture
def worker(worker_factory: Any) -> Any:
    return worker_factory("tests.apps.basic:app", slots=8)


def task_rows(engine: Any, tenant: Any) -> list[dict[str, Any]]:
    with psycopg.connect(engine.db_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(
            "SELECT * FROM stoker.task WHERE tenant_id = %s ORDER BY id", (tenant.tenant_id,)
        ).fetchall()


def events_of(engine: Any, run_id: str) -> list[dict[str, Any]]:
    with psycopg.connect(engine.db_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute(
            "SELECT e.* FROM stoker.task_event e JOIN stoker.task t ON t.id = e.task_id"
            " WHERE t.external_id = %s ORDER BY e.id",
            (run_id,),
        ).fetchall()


def test_sync_and_async_tasks_run_in_all_forms(app: Stoker, worker: Any) -> None:
    greet, sync_greet = app.tasks["greet"], app.tasks["sync_greet"]
    assert greet.run(Greet(name="world")) == {"message": "hello world", "attempt": 0}
    # a dict is validated into the input model; the output comes back as the return model
    assert sync_greet.run({"name": "ada"}) == Greeting(message="hi ada", length=3)
    ref = greet.run_no_wait(Greet(name="ref"))
    assert ref.result(timeout=30)["message"] == "hello ref"

    async def aio() -> None:
        assert (await greet.aio_run(Greet(name="aio")))["message"] == "hello aio"
        ref = await sync_greet.aio_run_no_wait(Greet(name="bo"))
        assert await ref.aio_result() == Greeting(message="hi bo", length=2)

    asyncio.run(aio())


def test_run_many_enqueues_in_bulk(app: Stoker, worker: Any, engine: Any, tenant: Any) -> None:
    greet = app.tasks["greet"]
    refs = greet.run_many([Greet(name=f"n{i}") for i in range(1500)])
    assert len({r.run_id for r in refs}) == 1500
    # Every run's output, in the order of the inputs: one query once all are done, rather
    # than 1500 result calls.
    assert refs[-1].result(timeout=60)["message"] == "hello n1499"

    def outputs() -> list[Any] | None:
        with psycopg.connect(engine.db_url) as conn:
            rows = conn.execute(
                "SELECT t.status, t.output FROM unnest(%s::uuid[]) WITH ORDINALITY AS r(id, n)"
                " JOIN stoker.task t ON t.external_id = r.id ORDER BY r.n",
                ([r.run_id for r in refs],),
            ).fetchall()
        return rows if all(status == "COMPLETED" for status, _ in rows) else None

    rows = wait_until(outputs, 60, "every run to complete")
    assert [out["message"] for _, out in rows] == [f"hello n{i}" for i in range(1500)]
    assert refs[0].result(timeout=5)["message"] == "hello n0"
    assert len(task_rows(engine, tenant)) == 1500


def test_invalid_input_is_refused_before_enqueue(app: Stoker, engine: Any, tenant: Any) -> None:
    with pytest.raises(ValidationError, match="name"):
        app.tasks["greet"].run_no_wait({"nom": "x"})
    with pytest.raises(ValidationError):
        app.tasks["greet"].run_many([Greet(name="ok"), {"name": 3.5j}])
    assert task_rows(engine, tenant) == []


def test_output_is_validated_against_the_return_model(app: Stoker, worker: Any) -> None:
    with pytest.raises(TaskRunError) as info:
        app.tasks["bad_output_model"].run(Greet(name="x"))
    assert info.value.error_type == "OutputSerializationError"
    assert "length" in info.value.error_message


def test_failure_carries_remote_type_message_and_traceback(
    app: Stoker, worker: Any, engine: Any
) -> None:
    ref = app.tasks["always_fails"].run_no_wait(Greet(name="nobody"))
    with pytest.raises(TaskRunError) as info:
        ref.result(timeout=60)
    err = info.value
    assert err.error_type == "ValueError"
    assert err.error_message == "no such person: nobody"
    assert "raise ValueError" in err.remote_traceback
    # retries=2: three attempts, each failure recorded
    events = events_of(engine, ref.run_id)
    assert [e["kind"] for e in events] == ["FAILED", "FAILED", "FAILED"]
    assert [e["data"]["retry"] for e in events] == [True, True, False]


def test_retries_back_off_exponentially(app: Stoker, worker: Any, engine: Any) -> None:
    ref = app.tasks["flaky"].run_no_wait(Flaky(fail_times=2, key="k"))
    out = ref.result(timeout=60)
    assert out["retry_count"] == 2
    events = events_of(engine, ref.run_id)
    assert [e["data"]["delay_ms"] for e in events] == [1000, 2000]
    # the successful attempt started no earlier than the second backoff allowed
    assert out["at"] - events[-1]["created_at"].timestamp() >= 1.9


def test_non_retryable_error_skips_retries(app: Stoker, worker: Any, engine: Any) -> None:
    ref = app.tasks["fails_hard"].run_no_wait(Greet(name="x"))
    with pytest.raises(TaskRunError, match="cannot greet x") as info:
        ref.result(timeout=30)
    assert info.value.error_type == "NonRetryableError"
    assert len(events_of(engine, ref.run_id)) == 1


def test_retry_after_delays_the_next_attempt(app: Stoker, worker: Any, engine: Any) -> None:
    ref = app.tasks["retry_after"].run_no_wait(Greet(name="x"))
    assert ref.result(timeout=30) == {"retry_count": 1}
    assert events_of(engine, ref.run_id)[0]["data"]["delay_ms"] == 1500


def test_execution_timeout_fails_the_attempt_and_retries(
    app: Stoker, worker: Any, engine: Any
) -> None:
    ref = app.tasks["async_too_slow"].run_no_wait(Sleep(seconds=30))
    with pytest.raises(TaskRunError) as info:
        ref.result(timeout=30)
    assert info.value.error_type == "TaskTimeoutError"
    assert [e["kind"] for e in events_of(engine, ref.run_id)] == ["TIMED_OUT", "TIMED_OUT"]


def test_sync_task_timeout_is_reported_and_the_task_is_told(app: Stoker, worker: Any) -> None:
    with pytest.raises(TaskRunError) as info:
        app.tasks["sync_too_slow"].run(Sleep(seconds=10))
    assert info.value.error_type == "TaskTimeoutError"


def test_refresh_timeout_extends_the_deadline(app: Stoker, worker: Any) -> None:
    assert app.tasks["refreshes"].run(Sleep(seconds=1.8)) == {"slept": 1.8}


def test_schedule_timeout_cancels_a_task_nobody_takes(
    app: Stoker, engine: Any, tenant: Any
) -> None:
    @app.task(schedule_timeout="1s")
    async def unserved(input: Greet, ctx: Any) -> None:
        """No worker runs this task."""

    with pytest.raises(RunCancelledError) as info:
        unserved.run(Greet(name="x"))
    assert info.value.error_type == "ScheduleTimeoutError"
    assert info.value.status == "CANCELLED"


def test_output_that_is_not_json_fails_the_run(app: Stoker, worker: Any) -> None:
    with pytest.raises(TaskRunError) as info:
        app.tasks["not_json"].run(
            Greet(name="x"),
        )
    assert info.value.error_type == "OutputSerializationError"
    assert "object" in info.value.error_message


def test_output_over_the_payload_limit_fails_the_run(app: Stoker, worker: Any) -> None:
    with pytest.raises(TaskRunError) as info:
        app.tasks["huge_output"].run(Greet(name="x"))
    assert info.value.error_type == "PayloadTooLargeError"
    assert "4194304" in info.value.error_message


def test_oversized_input_is_refused_at_the_caller(app: Stoker, engine: Any, tenant: Any) -> None:
    with pytest.raises(PayloadTooLargeError, match="over the limit of 4194304 bytes"):
        app.tasks["echo"].run_no_wait({"blob": "x" * (4 * 1024 * 1024)})
    assert task_rows(engine, tenant) == []


def test_unknown_task_name_lists_the_registered_tasks(app: Stoker, worker: Any) -> None:
    with pytest.raises(UnknownTaskError) as info:
        app.run("no_such_task", {})
    assert "'no_such_task'" in str(info.value)
    assert "greet" in str(info.value) and "sync_greet" in str(info.value)


def test_metadata_reaches_the_task(app: Stoker, worker: Any) -> None:
    out = app.tasks["echo"].run({"a": 1}, additional_metadata={"customer": "acme"})
    assert out["input"] == {"a": 1} and out["metadata"] == {"customer": "acme"}


def test_a_blocked_event_loop_does_not_make_the_worker_look_dead(app: Stoker, worker: Any) -> None:
    # The engine declares workers dead after 3s without heartbeats; the task blocks the
    # worker's event loop for 5s, the heartbeat thread keeps the worker alive.
    out = app.tasks["blocks_loop"].run(
        Sleep(seconds=5),
    )
    assert out["attempt"] == 0


def test_runs_wait_in_the_queue_until_a_worker_comes(app: Stoker, worker_factory: Any) -> None:
    refs = app.tasks["greet"].run_many([Greet(name=str(i)) for i in range(20)])
    worker_factory("tests.apps.basic:app", slots=4)
    assert sorted(r.result(timeout=30)["message"] for r in refs) == sorted(
        f"hello {i}" for i in range(20)
    )


def test_time_to_result_is_reported(app: Stoker, worker: Any, engine: Any, tenant: Any) -> None:
    t0 = time.time()
    app.tasks["greet"].run(Greet(name="t"))
    (row,) = task_rows(engine, tenant)
    assert row["started_at"] is not None and row["finished_at"] >= row["started_at"]
    assert row["created_at"].timestamp() >= t0 - 5


def test_a_worker_serves_the_workflows_it_is_given(
    app: Stoker, engine: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """``app.worker(tasks=[workflow, task])``; the default name is ``host-pid``."""
    import os
    import socket
    import threading

    from stoker import DeclarationError

    wf = app.workflow("given")

    @wf.task()
    async def first(input: dict[str, Any], ctx: Context) -> int:
        return 1

    @wf.task(parents=[first])
    async def second(input: dict[str, Any], ctx: Context) -> int:
        return ctx.task_output(first) + 1

    with pytest.raises(DeclarationError, match="expected tasks and workflows, got str"):
        app.worker(tasks=["greet"])  # type: ignore[list-item]
    worker = app.worker(tasks=[wf, app.tasks["greet"]], slots=2)
    assert sorted(worker.tasks) == sorted([first.name, second.name, "greet"])
    assert worker.name == f"{socket.gethostname()}-{os.getpid()}"
    # Before the worker runs, the caller hears that the workflow's steps have no worker.
    with caplog.at_level("WARNING", logger="stoker.client"):
        early = wf.run_no_wait({})
    warned = sorted(r.getMessage() for r in caplog.records if "no worker" in r.getMessage())
    assert len(warned) == 2, warned
    assert f"serves task {first.name!r}" in warned[0] + warned[1]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(worker.async_start(),))
    thread.start()
    try:
        assert early.result(timeout=30) == {"first": 1, "second": 2}
        assert wf.run({}) == {"first": 1, "second": 2}
        assert app.tasks["greet"].run(Greet(name="wf"))["message"] == "hello wf"
        with psycopg.connect(engine.db_url) as conn:
            names = conn.execute("SELECT name FROM stoker.worker").fetchall()
        assert (worker.name,) in names
    finally:
        worker.request_stop()
        thread.join(timeout=30)
        loop.close()


def test_a_run_no_worker_serves_is_reported_to_the_caller_and_in_the_api(
    app: Stoker, engine: Any, tenant: Any, worker_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """No silent wait: the caller logs it once per task, the run detail says why it waits."""
    import httpx

    from stoker._proto import engine_pb2 as pb

    greet = app.tasks["greet"]
    with caplog.at_level("WARNING", logger="stoker.client"):
        refs = [greet.run_no_wait(Greet(name=str(i))) for i in range(3)]
    warned = [r.getMessage() for r in caplog.records if "no worker connected" in r.getMessage()]
    assert warned == [warned[0]], warned  # once per task name, not per run
    assert "serves task 'greet'" in warned[0] and "stoker worker" in warned[0]

    headers = {"authorization": f"Bearer {tenant.token}"}
    with httpx.Client(base_url=engine.http_url, headers=headers, timeout=10) as http:
        body = http.get(f"/api/v1/runs/{refs[0].run_id}").json()
        assert body["status"] == "QUEUED"
        assert body["waiting_reason"].startswith("no connected worker serves task 'greet'")

        worker_factory("tests.apps.basic:app", slots=4).wait_ready()
        assert [r.result(timeout=30)["message"] for r in refs] == ["hello 0", "hello 1", "hello 2"]
        assert http.get(f"/api/v1/runs/{refs[0].run_id}").json()["waiting_reason"] is None
    # With a live worker the engine names no task.
    item = app._named_item("greet", {"name": "x"}, {})
    resp = app.connection.calls.trigger(pb.TriggerRequest(items=[item]))
    assert list(resp.unserved_task_names) == []

    @app.task()
    async def lonely(input: dict[str, Any], ctx: Context) -> None:
        pass  # registered, but the running worker does not have it

    app.register([lonely])
    missing = app._named_item("lonely", {}, {})
    resp = app.connection.calls.trigger(pb.TriggerRequest(items=[item, missing]))
    assert list(resp.unserved_task_names) == ["lonely"]
