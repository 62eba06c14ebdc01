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
