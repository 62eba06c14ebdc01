"""End to end: reading results of runs one at a time, gathered, and in bulk
(``app.runs.results``), with the engine answering in its compact form."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest

from stoker import NotFoundError, RunCancelledError, Stoker, TaskRunError
from tests.apps import basic
from tests.apps.basic import Greet, Greeting, Sleep
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def app(engine: Any, tenant: Any) -> Stoker:
    return basic.declare(Stoker(address=engine.grpc_address, token=tenant.token, connect_timeout=5))


@pytest.fixture
def worker(worker_factory: Any) -> Any:
    return worker_factory("tests.apps.basic:app", slots=20)


def test_bulk_results_come_back_in_order_decoded_by_their_tasks(app: Stoker, worker: Any) -> None:
    greets = app.tasks["greet"].run_many([Greet(name=f"n{i}") for i in range(300)])
    typed = app.tasks["sync_greet"].run_many([Greet(name="ab"), Greet(name="abc")])
    refs = [*greets, *typed]
    out = app.runs.results(refs, timeout=60)
    assert [o["message"] for o in out[:300]] == [f"hello n{i}" for i in range(300)]
    # The output model of the run's own task decodes it; a plain id gives the JSON.
    assert out[300:] == [Greeting(message="hi ab", length=2), Greeting(message="hi abc", length=3)]
    assert app.runs.results([typed[0].run_id]) == [{"message": "hi ab", "length": 2}]
    # The same run twice, and again now that every run is finished.
    assert app.runs.results([refs[0], refs[0]]) == [out[0], out[0]]
    assert app.runs.results(refs) == out


def test_bulk_results_wait_for_running_runs(app: Stoker, worker: Any) -> None:
    slow = app.tasks["slow"].run_many([Sleep(seconds=0.5 + i / 10, tag=str(i)) for i in range(5)])
    fast = app.tasks["greet"].run_no_wait(Greet(name="first"))
    out = asyncio.run(app.runs.aio_results([fast, *slow], timeout=60))
    assert out[0]["message"] == "hello first"
    assert [o["tag"] for o in out[1:]] == ["0", "1", "2", "3", "4"]


def test_bulk_results_times_out_naming_the_unfinished(app: Stoker, worker: Any) -> None:
    ref = app.tasks["slow"].run_no_wait(Sleep(seconds=30))
    with pytest.raises(TimeoutError, match="1 runs did not finish"):
        app.runs.results([ref], timeout=0.5)
    with pytest.raises(TimeoutError, match="1 runs did not finish"):
        asyncio.run(app.runs.aio_results([ref], timeout=0.5))
    app.runs.cancel(ref)


def test_failures_raise_or_take_their_place(app: Stoker, worker: Any) -> None:
    ok = app.tasks["greet"].run_no_wait(Greet(name="x"))
    bad = app.tasks["fails_hard"].run_no_wait(Greet(name="y"))
    unknown = str(uuid.uuid4())
    with pytest.raises(TaskRunError, match="cannot greet y"):
        app.runs.results([ok, bad], timeout=60)
    out = app.runs.results([ok, bad, unknown], timeout=60, return_exceptions=True)
    assert out[0]["message"] == "hello x"
    assert isinstance(out[1], TaskRunError) and "cannot greet y" in str(out[1])
    assert isinstance(out[2], NotFoundError)
    with pytest.raises(NotFoundError, match=unknown):
        app.runs.results([ok, unknown])
    with pytest.raises(NotFoundError):
        app.runs.results(["not-a-uuid"])
    aio = asyncio.run(app.runs.aio_results([bad, unknown], return_exceptions=True))
    assert isinstance(aio[0], TaskRunError) and isinstance(aio[1], NotFoundError)


def test_gathered_aio_results_are_asked_together_and_stay_separate(
    app: Stoker, worker: Any
) -> None:
    refs = app.tasks["greet"].run_many([Greet(name=f"g{i}") for i in range(200)])
    bad = app.tasks["fails_hard"].run_no_wait(Greet(name="z"))
    slow = app.tasks["slow"].run_no_wait(Sleep(seconds=30))
    unknown = app.tasks["greet"].run_no_wait(Greet(name="u"))
    unknown.run_id = str(uuid.uuid4())
    asked: list[int] = []
    calls = app.connection.calls
    original = calls.aio_await_runs

    async def counting(request: Any) -> Any:
        asked.append(len(request.run_ids))
        return await original(request)

    calls.aio_await_runs = counting  # type: ignore[method-assign]

    async def main() -> list[Any]:
        # A caller that times out leaves the others waiting; an unknown id and a failed run
        # fail only their own callers.
        return await asyncio.gather(
            *(r.aio_result(timeout=60) for r in refs),
            bad.aio_result(timeout=60),
            slow.aio_result(timeout=0.5),
            unknown.aio_result(timeout=60),
            return_exceptions=True,
        )

    out = asyncio.run(main())
    assert [o["message"] for o in out[:200]] == [f"hello g{i}" for i in range(200)]
    assert isinstance(out[200], TaskRunError)
    assert isinstance(out[201], TimeoutError)
    assert isinstance(out[202], NotFoundError)
    # All 203 ids went out in the first call, whatever came after.
    assert asked[0] == 203
    app.runs.cancel(slow)
    with pytest.raises(RunCancelledError):
        slow.result(timeout=30)


def test_results_of_runs_moved_to_history_are_read_there(
    engine_factory: Any, tenant_factory: Any, worker_factory: Any
) -> None:
    eng = engine_factory(env={"STOKER_HISTORY_AFTER_S": "0.3", "STOKER_ARCHIVE_INTERVAL_S": "0.2"})
    ten = tenant_factory(eng)
    worker_factory("tests.apps.basic:app", slots=10, engine=eng, tenant=ten)
    app = basic.declare(Stoker(address=eng.grpc_address, token=ten.token))
    refs = app.tasks["greet"].run_many([Greet(name=f"h{i}") for i in range(3)])
    first = app.runs.results(refs, timeout=60)

    def moved() -> bool:
        with psycopg.connect(eng.db_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM stoker.task_history WHERE external_id = ANY(%s::uuid[])",
                ([r.run_id for r in refs],),
            ).fetchone()
        return row is not None and row[0] == 3

    wait_until(moved, 30, "the runs to move to history")
    assert app.runs.results(refs) == first
    assert refs[1].result() == first[1]
    assert asyncio.run(refs[2].aio_result()) == first[2]
