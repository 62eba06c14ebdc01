"""The SDK side of transactional enqueue without a database: the argument of
``enqueue_runs()``, the statement per driver, and how connections are recognised."""

from __future__ import annotations

import json

import psycopg
import pytest

from stoker._sdk.transactional import InboxRun, check_connection, kind_of, runs_json, statement
from stoker.errors import TransactionalEnqueueError


def test_the_runs_argument_is_json_with_the_payloads_spliced_in_as_they_are() -> None:
    run = InboxRun(
        run_id="6f1c2a8e-0000-4000-8000-000000000001",
        kind="task",
        name='say "hi"',
        input=b'{"text": "\\u00e9t\\u00e9", "n": [1, 2]}',
        additional_metadata=b'{"source": "signup"}',
        priority=2,
        desired_worker_id="",
        idempotency_key="k-1",
        idempotency_ttl_ms=60_000,
        definition='{"retries": 3}',
    )
    bare = InboxRun("6f1c2a8e-0000-4000-8000-000000000002", "workflow", "w", b"", b"", 0, "", "", 0)
    decoded = json.loads(runs_json([run, bare]))
    assert decoded[0] == {
        "id": run.run_id, "kind": "task", "name": 'say "hi"', "priority": 2, "worker": "",
        "key": "k-1", "ttl_ms": 60_000, "input": {"text": "été", "n": [1, 2]},
        "metadata": {"source": "signup"}, "definition": {"retries": 3},
    }  # fmt: skip
    assert decoded[1]["input"] is None and decoded[1]["metadata"] == {}
    assert decoded[1]["definition"] is None


def test_the_statement_quotes_the_schema_and_refuses_one_that_is_not_an_identifier() -> None:
    assert statement("stoker", "%s") == 'SELECT "stoker".enqueue_runs(%s) AS enqueued'
    assert statement("app_2", "$1::text").endswith("enqueue_runs($1::text) AS enqueued")
    with pytest.raises(TransactionalEnqueueError, match="not a plain identifier"):
        statement('x"; DROP TABLE t; --', "%s")


def test_connections_are_recognised_by_type_and_flavour() -> None:
    assert kind_of(object()) is None
    assert kind_of(psycopg.Connection.__new__(psycopg.Connection)) == "psycopg"
    aconn = psycopg.AsyncConnection.__new__(psycopg.AsyncConnection)
    assert kind_of(aconn) == "psycopg_async"
    with pytest.raises(TypeError, match=r"connection= takes psycopg\.Connection.*got builtins"):
        check_connection(42, aio=False, what="task 't'")
    with pytest.raises(TypeError, match="use aio_run_no_wait/aio_run_many"):
        check_connection(aconn, aio=False, what="task 't'")
    assert check_connection(aconn, aio=True, what="task 't'") == "psycopg_async"
