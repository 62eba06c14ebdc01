"""A worker is believed only about the attempts the engine assigned to it.

Events for other attempts (another tenant's, another worker's), running claims that are not
the worker's own, and heartbeats for another tenant's worker are ignored and counted on
``GET /metrics``; the tests wait on that count, never on time.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import threading
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
import pytest

from stoker import Stoker
from stoker._proto import engine_pb2 as pb
from stoker._proto import engine_pb2_grpc as pb_grpc
from tests.apps import basic
from tests.apps.basic import Sleep
from tests.e2e.test_failures import query, status_of
from tests.harness import Tenant, wait_until

pytestmark = pytest.mark.timeout(120)


def rejected(engine: Any, reason: str) -> float:
    """The engine's count of ignored worker messages for one reason."""
    with urllib.request.urlopen(engine.http_url + "/metrics", timeout=5) as resp:
        body = resp.read().decode()
    found = re.search(
        rf'^stoker_worker_messages_rejected_total{{reason="{reason}"}} (\S+)$', body, re.M
    )
    return float(found.group(1)) if found else 0.0


class RawWorker:
    """A worker stream driven by hand over gRPC, as a hostile or confused client could."""

    def __init__(
        self, tenant: Tenant, task_names: Sequence[str], running: Sequence[pb.TaskRef] = ()
    ) -> None:
        self.worker_id = str(uuid.uuid4())
        self._out: queue.Queue[pb.WorkerMessage | None] = queue.Queue()
        self.received: queue.Queue[pb.EngineMessage] = queue.Queue()
        self._channel = grpc.insecure_channel(tenant.address)
        self._out.put(
            pb.WorkerMessage(
                register=pb.WorkerRegistration(
                    worker_id=self.worker_id,
                    name="raw",
                    slots=1,
                    task_names=list(task_names),
                    running=list(running),
                )
            )
        )
        self._call = pb_grpc.EngineStub(self._channel).Connect(
            self._messages(), metadata=(("authorization", f"Bearer {tenant.token}"),)
        )
        threading.Thread(target=self._read, daemon=True).start()
        first = self.received.get(timeout=30)
        assert first.WhichOneof("msg") == "registered"

    def _messages(self) -> Iterator[pb.WorkerMessage]:
        while (msg := self._out.get()) is not None:
            yield msg

    def _read(self) -> None:
        try:
            for msg in self._call:
                self.received.put(msg)
        except grpc.RpcError:
            pass

    def send(self, events: list[pb.TaskEvent]) -> None:
        self._out.put(pb.WorkerMessage(events=pb.TaskEvents(events=events)))

    def close(self) -> None:
        self._out.put(None)
        self._call.cancel()
        self._channel.close()


def task_id_of(engine: Any, run_id: str) -> int:
    rows = query(engine.db_url, "SELECT id FROM stoker.task WHERE external_id = %s", run_id)
    return int(rows[0]["id"])


def completed(task_id: int, tag: str) -> pb.TaskEvent:
    output = f'{{"pid": 0, "attempt": 0, "tag": "{tag}"}}'.encode()
    return pb.TaskEvent(task_id=task_id, attempt=0, kind=pb.COMPLETED, output=output)


def test_events_of_another_tenant_are_ignored_and_counted(
    engine: Any, tenant: Tenant, tenant_factory: Any, worker_factory: Any
) -> None:
    victim = basic.declare(Stoker(address=engine.grpc_address, token=tenant.token))
    real = worker_factory("tests.apps.basic:app", slots=2, name="victim")
    ref = victim.tasks["slow"].run_no_wait(Sleep(seconds=2, tag="mine"))
    wait_until(lambda: status_of(engine.db_url, ref.run_id) == "RUNNING", 30, "the run to start")
    task_id = task_id_of(engine, ref.run_id)
    other = tenant_factory(engine)
    before = rejected(engine, "not_held")
    forger = RawWorker(other, ["slow"])
    try:
        # A sweep over nearby ids, as ids are one global sequence: every kind of event.
        sweep = range(task_id - 19, task_id + 20)
        forger.send([completed(t, "forged") for t in sweep])
        forger.send(
            [
                pb.TaskEvent(task_id=task_id, attempt=0, kind=pb.FAILED),
                pb.TaskEvent(task_id=task_id, attempt=0, kind=pb.REFRESH_TIMEOUT, timeout_ms=1),
                pb.TaskEvent(task_id=task_id, attempt=0, kind=pb.RELEASE_SLOT),
            ]
        )
        wait_until(
            lambda: rejected(engine, "not_held") >= before + len(sweep) + 3,
            30,
            "the forged events to be counted as ignored",
        )
        out = ref.result(timeout=60)
        assert out["tag"] == "mine" and out["pid"] == real.pid
    finally:
        forger.close()


def test_a_forged_running_claim_does_not_capture_another_workers_attempt(
    engine: Any, tenant: Tenant, worker_factory: Any
) -> None:
    app = basic.declare(Stoker(address=engine.grpc_address, token=tenant.token))
    real = worker_factory("tests.apps.basic:app", slots=2, name="holder")
    ref = app.tasks["slow"].run_no_wait(Sleep(seconds=2, tag="real"))
    wait_until(lambda: status_of(engine.db_url, ref.run_id) == "RUNNING", 30, "the run to start")
    task_id = task_id_of(engine, ref.run_id)
    before = rejected(engine, "claim")
    # Same tenant, another worker id, claiming at registration to run the attempt.
    forger = RawWorker(tenant, ["nothing"], [pb.TaskRef(task_id=task_id, attempt=0, slot_cost=1)])
    try:
        told = forger.received.get(timeout=30)  # the engine tells it to drop the claim
        assert [(c.task_id, c.attempt) for c in told.cancellations.items] == [(task_id, 0)]
        assert rejected(engine, "claim") == before + 1
        forger.send([completed(task_id, "forged")])
        out = ref.result(timeout=60)
        assert out["tag"] == "real" and out["pid"] == real.pid
        rows = query(
            engine.db_url, "SELECT status, attempt FROM stoker.task WHERE id = %s", task_id
        )
        assert rows == [{"status": "COMPLETED", "attempt": 0}]
    finally:
        forger.close()


def test_a_heartbeat_for_another_tenants_worker_keeps_nothing_alive(
    engine: Any, tenant: Tenant, tenant_factory: Any, worker_factory: Any
) -> None:
    victim = worker_factory("tests.apps.basic:app", slots=1, name="silent")
    other = tenant_factory(engine)
    before = rejected(engine, "foreign_heartbeat")
    channel = grpc.insecure_channel(engine.grpc_address)
    stub = pb_grpc.EngineStub(channel)
    metadata = (("authorization", f"Bearer {other.token}"),)
    os.kill(victim.pid, signal.SIGSTOP)  # it sends no heartbeats of its own any more
    try:

        def dead_despite_heartbeats() -> bool:
            resp = stub.Heartbeat(
                pb.HeartbeatRequest(worker_id=victim.worker_id), metadata=metadata, timeout=5
            )
            assert not resp.known  # not the caller's worker
            rows = query(
                engine.db_url,
                "SELECT status FROM stoker.worker WHERE external_id = %s",
                victim.worker_id,
            )
            return bool(rows[0]["status"] == "DEAD")

        wait_until(dead_despite_heartbeats, 30, "the silent worker to be declared dead")
        assert rejected(engine, "foreign_heartbeat") > before
    finally:
        os.kill(victim.pid, signal.SIGCONT)
        channel.close()
