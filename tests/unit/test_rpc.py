"""The gRPC servicers split by caller: every method of both wire services is answered by
exactly one of them, and the server refuses to start otherwise."""

from __future__ import annotations

import pytest

from stoker._proto import engine_pb2 as pb
from stoker._proto import workflows_pb2 as wpb
from stoker.engine.rpc import answering
from stoker.engine.rpc.client_service import ClientService
from stoker.engine.rpc.worker_service import WorkerService

WORKER = WorkerService.__new__(WorkerService)
CLIENT = ClientService.__new__(ClientService)


def test_each_method_has_one_servicer() -> None:
    engine = answering(pb.DESCRIPTOR.services_by_name["Engine"], [WORKER, CLIENT])
    assert {name for name, f in vars(engine).items() if f.__self__ is WORKER} == {
        "Connect",
        "Heartbeat",
    }
    workflows = answering(wpb.DESCRIPTOR.services_by_name["Workflows"], [WORKER, CLIENT])
    assert all(f.__self__ is CLIENT for f in vars(workflows).values())


def test_a_method_without_a_servicer_is_refused() -> None:
    with pytest.raises(TypeError, match=r"Engine\.Connect is answered by no servicer"):
        answering(pb.DESCRIPTOR.services_by_name["Engine"], [CLIENT])
    with pytest.raises(TypeError, match="answered by ClientService, ClientService"):
        answering(pb.DESCRIPTOR.services_by_name["Engine"], [WORKER, CLIENT, CLIENT])


def test_an_await_runs_answer_is_compact_and_bounded() -> None:
    from stoker._sdk.refs import outcomes
    from stoker.engine.rpc import client_service

    rows = [
        {"external_id": f"id{i}", "status": "COMPLETED", "output": "[1]", "error": None}
        for i in range(3)
    ] + [
        {
            "external_id": "bad",
            "status": "FAILED",
            "output": None,
            "error": {"type": "E", "message": "m", "traceback": ""},
        }
    ]
    resp = client_service.results_response(rows, True, [])
    assert list(resp.completed_run_ids) == ["id0", "id1", "id2"] and not resp.unknown_run_ids
    assert [r.run_id for r in resp.results] == ["bad"] and resp.results[0].error.message == "m"
    assert dict(outcomes(resp))["id1"] == b"[1]"
    # Not compact: a message per run, as clients without the compact form read it.
    plain = client_service.results_response(rows, False, [])
    assert [r.run_id for r in plain.results] == ["id0", "id1", "id2", "bad"]
    # Past the budget, the answer stops (always carrying one run); the client asks again.
    big = [{**rows[0], "output": "x" * 600} for _ in range(5)]
    old = client_service.RESULTS_BUDGET_BYTES
    client_service.RESULTS_BUDGET_BYTES = 1000
    try:
        assert len(client_service.results_response(big, True, []).completed_run_ids) == 1
        assert len(client_service.results_response(big, False, []).results) == 1
        assert len(client_service.results_response(big[:1], True, []).completed_run_ids) == 1
    finally:
        client_service.RESULTS_BUDGET_BYTES = old
