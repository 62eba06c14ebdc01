"""Fuzzing both ports of a real engine: the REST API and the gRPC services.

* REST: schemathesis generates requests from the engine's own ``/openapi.json`` (a bounded
  number per operation) with a valid token; no answer may be a server error (5xx).
* gRPC: random bytes, truncated and oversized messages, unknown methods, and random but
  well-formed protobufs (built from the generated classes' descriptors) on every method of
  every service the engine serves (Engine, Workflows, Events, Schedules, Webhooks, Observe,
  Admin, Push), with and without a token, plus raw HTTP/2 garbage and cut-off frames on the
  socket. Server-streaming calls run under a short client deadline (DEADLINE_EXCEEDED is
  their expected end). The engine must stay up and keep answering (``/healthz``, a real
  trigger, a task a worker runs), a message that parses must never meet an unhandled error
  (UNKNOWN/INTERNAL), and its resident memory must stay under a bound.

The engine is this module's own process on its own database, so what the fuzzing leaves
behind cannot leak into other tests, and its memory is its alone.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
import pytest
from google.protobuf import descriptor as pd
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, Phase, given, settings

from stoker._proto import (
    admin_pb2,
    engine_pb2,
    events_pb2,
    observe_pb2,
    push_pb2,
    schedules_pb2,
    webhooks_pb2,
    workflows_pb2,
)
from tests.conftest import make_tenant
from tests.harness import (
    EngineProcess,
    Tenant,
    WorkerProcess,
    create_database,
    drop_database,
    with_database,
)

schemathesis = pytest.importorskip("schemathesis", reason="the dev extra is not installed")

pytestmark = pytest.mark.timeout(240)

SEED = 20261202
EXAMPLES = 60
"""Generated requests per REST operation."""
ROUNDS = 150
"""Random well-formed messages per gRPC method of the worker and workflow services."""
OTHER_ROUNDS = 40
"""Random well-formed messages per unary method of the other services (admin, observe,
schedules, webhooks, push), which would otherwise double the test's time."""
STREAM_ROUNDS = 40
"""Random well-formed messages per server-streaming method, sent at once."""
STREAM_DEADLINE = 1.5
"""The client's own deadline on a server-streaming call (a watch never ends by itself):
DEADLINE_EXCEEDED on it is the expected end, not an error of the engine."""
RSS_GROWTH_LIMIT_MB = 200.0
"""How much the engine's RSS may grow over the whole gRPC fuzz (buffers, caches)."""
INTERNAL = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


@pytest.fixture(scope="module")
def fuzz_engine(
    pg_url: str, engine_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    name = create_database(pg_url, engine_template)
    proc = EngineProcess(with_database(pg_url, name), tmp_path_factory.mktemp("fuzz")).start()
    try:
        yield proc
    finally:
        proc.stop()
        drop_database(pg_url, name)


@pytest.fixture(scope="module")
def fuzz_tenant(fuzz_engine: EngineProcess) -> Tenant:
    return make_tenant(fuzz_engine)


def rss_mb(engine: EngineProcess) -> float:
    assert engine.proc is not None
    return float(psutil.Process(engine.proc.pid).memory_info().rss) / 2**20


def assert_alive(engine: EngineProcess, tenant: Tenant) -> None:
    """The engine process runs, /healthz answers 200 and a real trigger is stored."""
    assert engine.proc is not None and engine.proc.poll() is None, engine.log_path.read_text()
    with urllib.request.urlopen(engine.http_url + "/healthz", timeout=5) as resp:
        assert resp.status == 200
    from stoker import Stoker
    from tests.apps import basic

    app = basic.declare(Stoker(address=tenant.address, token=tenant.token, connect_timeout=10))
    try:
        ref = app.tasks["greet"].run_no_wait(basic.Greet(name="after fuzz"))
        assert ref.run_id
    finally:
        app.close()


def assert_a_task_runs(engine: EngineProcess, tenant: Tenant, log_dir: Path) -> None:
    """A worker registers and a run of a task the fuzzing never names completes."""
    from stoker import Stoker
    from tests.apps import basic

    worker = WorkerProcess("tests.apps.basic:app", tenant, engine.db_url, log_dir, "fuzz").start()
    app = basic.declare(Stoker(address=tenant.address, token=tenant.token, connect_timeout=10))
    try:
        ref = app.tasks["sync_greet"].run_no_wait(basic.Greet(name="after fuzz"))
        assert ref.result(timeout=60) == basic.Greeting(message="hi after fuzz", length=10)
    finally:
        app.close()
        worker.kill()


def a_run_id(tenant: Tenant) -> str:
    """The id of a stored run of the tenant (queued: no worker serves its task)."""
    from stoker import Stoker
    from tests.apps import basic

    app = basic.declare(Stoker(address=tenant.address, token=tenant.token, connect_timeout=10))
    try:
        return app.tasks["greet"].run_no_wait(basic.Greet(name="fuzz target")).run_id
    finally:
        app.close()


# -- REST: schemathesis over the OpenAPI schema ----------------------------------------


def test_rest_api_never_answers_a_server_error(
    fuzz_engine: EngineProcess, fuzz_tenant: Tenant
) -> None:
    """Every operation of /openapi.json, EXAMPLES generated requests each, no 5xx.

    Server-Sent Events operations answer a stream that lasts until the client leaves (a
    filtered run watch never ends by itself), which a generated request would wait on until
    its timeout; they are left to :func:`test_event_streams_refuse_bad_input`."""
    schema = schemathesis.openapi.from_url(fuzz_engine.http_url + "/openapi.json")
    headers = {"authorization": f"Bearer {fuzz_tenant.token}"}
    server_errors: list[str] = []
    statuses: Counter[int] = Counter()
    operations = 0

    for result in schema.get_all_operations():
        operation = result.ok()
        if "text/event-stream" in json.dumps(operation.definition.raw):
            continue
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            response = case.call(base_url=fuzz_engine.http_url, headers=headers, timeout=10)
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                server_errors.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:200]}\n  {case.as_curl_command()}"
                )

        check()
    assert operations >= 5, "the OpenAPI schema lists fewer operations than the API has"
    assert not server_errors, "server errors:\n" + "\n".join(server_errors[:10])
    # The token was accepted: the fuzzing reached the handlers, not only the auth check.
    assert statuses[200] >= operations, statuses
    print(f"{operations} operations, answers by status: {dict(sorted(statuses.items()))}")
    assert_alive(fuzz_engine, fuzz_tenant)


def test_event_streams_refuse_bad_input(fuzz_engine: EngineProcess, fuzz_tenant: Tenant) -> None:
    """The Server-Sent Events routes answer bad input with a 4xx before streaming, and a
    watch that starts streaming is released when the client goes."""
    headers = {"authorization": f"Bearer {fuzz_tenant.token}"}
    unknown = "00000000-0000-4000-8000-000000000000"
    bad = {
        f"/api/v1/runs/{unknown}/stream": 404,
        f"/api/v1/runs/{unknown}/events": 404,
        "/api/v1/runs/not-a-uuid/stream": 422,
        "/api/v1/runs/not-a-uuid/events": 422,
        f"/api/v1/runs/{unknown}/stream?attempt=-1": 422,
        "/api/v1/run-events?metadata=%7Bnot%20json": 422,
        "/api/v1/run-events?metadata=%5B1%5D": 422,
        "/api/v1/run-events?task_name=": 422,
    }
    with httpx.Client(base_url=fuzz_engine.http_url, headers=headers, timeout=10) as http:
        for path, expected in bad.items():
            assert http.get(path).status_code == expected, path
    assert httpx.get(f"{fuzz_engine.http_url}/api/v1/runs/{unknown}/stream").status_code == 401
    with httpx.Client(base_url=fuzz_engine.http_url, headers=headers, timeout=10) as http:
        with http.stream("GET", "/api/v1/run-events?task_name=fuzz") as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
    assert_alive(fuzz_engine, fuzz_tenant)


# -- gRPC -----------------------------------------------------------------------------

SERVICES = [
    engine_pb2.DESCRIPTOR.services_by_name["Engine"],
    workflows_pb2.DESCRIPTOR.services_by_name["Workflows"],
    events_pb2.DESCRIPTOR.services_by_name["Events"],
    schedules_pb2.DESCRIPTOR.services_by_name["Schedules"],
    webhooks_pb2.DESCRIPTOR.services_by_name["Webhooks"],
    observe_pb2.DESCRIPTOR.services_by_name["Observe"],
    admin_pb2.DESCRIPTOR.services_by_name["Admin"],
    push_pb2.DESCRIPTOR.services_by_name["Push"],
]
"""Every service the engine's gRPC port serves (:func:`stoker.engine.rpc.serve`)."""
FULL_ROUNDS_SERVICES = {"stoker.v1.Engine", "stoker.v1.Workflows", "stoker.v1.Events"}


def message_class(descriptor: pd.Descriptor) -> type[Message]:
    """The generated class of any message type, whichever .proto file declares it (a
    worker message carries types of several files)."""
    return GetMessageClass(descriptor)


STRINGS = [
    "",
    "greet",
    "cancel",
    "replay",
    "x" * 300,
    "\x00",
    "ü🔥",
    "../../etc",
    "' OR 1=1 --",
    "*",
    "a" * 5000,
]
JSON_BYTES = [
    b"",
    b"null",
    b"{}",
    b"[]",
    b'"\\u0000"',
    b'{"a": "\\ud800"}',
    b"[" * 5000 + b"]" * 5000,
    b'{"name": "x"}',
    b"\xff\xfe",
    b"1e999999",
    b'{"a": ' * 200 + b"1" + b"}" * 200,
]
INTS = [0, 1, -1, 2**31 - 1, -(2**31), 7, 1000]
LONGS = [0, 1, -1, 2**63 - 1, -(2**63), 1_000_000]


IDS = ["", "not-a-uuid", "00000000-0000-0000-0000-000000000000"]


def random_message(
    cls: type[Message], rnd: random.Random, depth: int = 0, ids: Sequence[str] = IDS
) -> Message:
    """A well-formed message of ``cls`` with hostile field values; an id field holds one of
    ``ids``."""
    msg = cls()
    for fd in cls.DESCRIPTOR.fields:
        if rnd.random() < 0.3:
            continue
        count = rnd.choice([1, 1, 2, 3]) if fd.is_repeated else 1
        values = [_value(fd, rnd, depth, ids) for _ in range(count)]
        values = [v for v in values if v is not None]
        if not values:
            continue
        if fd.is_repeated:
            field = getattr(msg, fd.name)
            if fd.type == pd.FieldDescriptor.TYPE_MESSAGE:
                for v in values:
                    field.add().CopyFrom(v)
            else:
                field.extend(values)
        elif fd.type == pd.FieldDescriptor.TYPE_MESSAGE:
            getattr(msg, fd.name).CopyFrom(values[0])
        else:
            setattr(msg, fd.name, values[0])
    return msg


def _value(fd: pd.FieldDescriptor, rnd: random.Random, depth: int, ids: Sequence[str]) -> Any:
    t = fd.type
    if t == pd.FieldDescriptor.TYPE_MESSAGE:
        if depth > 3:
            return None
        return random_message(message_class(fd.message_type), rnd, depth + 1, ids)
    if t == pd.FieldDescriptor.TYPE_STRING:
        if fd.name.endswith("_id") or fd.name.endswith("_ids"):
            return rnd.choice(ids)
        return rnd.choice(STRINGS)
    if t == pd.FieldDescriptor.TYPE_BYTES:
        return rnd.choice(JSON_BYTES)
    if t == pd.FieldDescriptor.TYPE_BOOL:
        return rnd.random() < 0.5
    if t == pd.FieldDescriptor.TYPE_ENUM:
        return rnd.choice([v.number for v in fd.enum_type.values] + [99])
    if t in (pd.FieldDescriptor.TYPE_INT64, pd.FieldDescriptor.TYPE_SINT64):
        return rnd.choice(LONGS)
    if t in (pd.FieldDescriptor.TYPE_INT32, pd.FieldDescriptor.TYPE_SINT32):
        return rnd.choice(INTS)
    if t in (pd.FieldDescriptor.TYPE_UINT32, pd.FieldDescriptor.TYPE_UINT64):
        return rnd.choice([0, 1, 2**31])
    if t in (pd.FieldDescriptor.TYPE_DOUBLE, pd.FieldDescriptor.TYPE_FLOAT):
        return rnd.choice([0.0, -1.0, 1e300, float("nan")])
    return None


def _methods() -> list[tuple[str, pd.MethodDescriptor]]:
    return [(f"/{s.full_name}/{m.name}", m) for s in SERVICES for m in s.methods]


def _call(
    channel: grpc.Channel,
    path: str,
    method: pd.MethodDescriptor,
    payloads: list[bytes],
    metadata: tuple[tuple[str, str], ...],
) -> grpc.StatusCode:
    """Sends raw payloads to ``path``; the status it ended with (OK on success)."""
    return _call_details(channel, path, method, payloads, metadata)[0]


def _call_details(
    channel: grpc.Channel,
    path: str,
    method: pd.MethodDescriptor,
    payloads: list[bytes],
    metadata: tuple[tuple[str, str], ...],
) -> tuple[grpc.StatusCode, str]:
    """The status a call of raw payloads ended with, and its details."""
    try:
        if method.client_streaming:
            call = channel.stream_stream(path)(iter(payloads), metadata=metadata, timeout=1)
            for _ in call:
                pass
        elif method.server_streaming:
            stream = channel.unary_stream(path)(
                payloads[0], metadata=metadata, timeout=STREAM_DEADLINE
            )
            for _ in stream:
                pass
        else:
            channel.unary_unary(path)(payloads[0], metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        return exc.code(), str(exc.details() or "")
    return grpc.StatusCode.OK, ""


def test_grpc_random_bytes_truncated_and_unknown_methods(
    fuzz_engine: EngineProcess, fuzz_tenant: Tenant
) -> None:
    rnd = random.Random(SEED)
    auth = (("authorization", f"Bearer {fuzz_tenant.token}"),)
    before = rss_mb(fuzz_engine)
    with grpc.insecure_channel(fuzz_engine.grpc_address) as channel:
        for path, method in _methods():
            valid = random_message(message_class(method.input_type), rnd).SerializeToString()
            for metadata in (auth, ()):
                payloads = [
                    rnd.randbytes(rnd.choice([1, 7, 64, 4096])),
                    b"\xff" * 32,
                    valid[: max(0, len(valid) // 2)],  # a message cut off half way
                    valid + b"\x0a\xff\xff\xff\x0f",  # then a field claiming 4 GB
                ]
                for payload in payloads:
                    _call(channel, path, method, [payload], metadata)
        for path in ("/stoker.v1.Engine/Nope", "/nope.Service/Trigger", "/", "/x/y/z"):
            code = _call(channel, path, _methods()[0][1], [b""], auth)
            assert code == grpc.StatusCode.UNIMPLEMENTED, (path, code)
    assert_alive(fuzz_engine, fuzz_tenant)
    assert rss_mb(fuzz_engine) - before < RSS_GROWTH_LIMIT_MB


def _stream_batch(
    channel: grpc.Channel,
    path: str,
    payloads: list[bytes],
    metadata: tuple[tuple[str, str], ...],
) -> list[tuple[grpc.StatusCode, str]]:
    """Server-streaming calls of each payload, all open at once (so their deadlines run
    together), each read to its end; the status and details each ended with."""
    method = channel.unary_stream(path)
    calls = [method(p, metadata=metadata, timeout=STREAM_DEADLINE) for p in payloads]
    ends: list[tuple[grpc.StatusCode, str]] = []
    for call in calls:
        try:
            for _ in call:
                pass
        except grpc.RpcError as exc:
            ends.append((exc.code(), str(exc.details() or "")))
        else:
            ends.append((grpc.StatusCode.OK, ""))
    return ends


def _rounds(path: str, method: pd.MethodDescriptor) -> int:
    if method.server_streaming and not method.client_streaming:
        return STREAM_ROUNDS
    return ROUNDS if path.split("/")[1] in FULL_ROUNDS_SERVICES else OTHER_ROUNDS


def test_grpc_well_formed_random_messages_meet_no_unhandled_error(
    fuzz_engine: EngineProcess, fuzz_tenant: Tenant, tmp_path: Path
) -> None:
    """Every method of every service: random well-formed messages with a token, their id
    fields sometimes naming a real run. A call may be refused (INVALID_ARGUMENT, NOT_FOUND,
    ...), and a server stream may run until the client's deadline, but none may end
    UNKNOWN/INTERNAL; afterwards a worker still runs a task."""
    rnd = random.Random(SEED + 1)
    ids = [*IDS, a_run_id(fuzz_tenant)]
    auth = (("authorization", f"Bearer {fuzz_tenant.token}"),)
    before = rss_mb(fuzz_engine)
    unhandled: set[str] = set()
    statuses: dict[str, Counter[str]] = {}
    methods = _methods()
    with grpc.insecure_channel(fuzz_engine.grpc_address) as channel:
        for path, method in methods:
            if method.server_streaming and not method.client_streaming:
                cls = message_class(method.input_type)
                payloads = [
                    random_message(cls, rnd).SerializeToString() for _ in range(STREAM_ROUNDS)
                ]
                for code, details in _stream_batch(channel, path, payloads, auth):
                    statuses.setdefault(path, Counter())[code.name] += 1
                    if code in INTERNAL:
                        unhandled.add(f"{path} -> {code.name}: {details[:160]}")
        for round_ in range(ROUNDS):
            for path, method in methods:
                if method.server_streaming and not method.client_streaming:
                    continue
                if round_ >= _rounds(path, method):
                    continue
                cls = message_class(method.input_type)
                if method.client_streaming:
                    msgs = [random_message(cls, rnd, ids=ids) for _ in range(rnd.randint(1, 4))]
                else:
                    msgs = [random_message(cls, rnd, ids=ids)]
                payloads = [m.SerializeToString() for m in msgs]
                code, details = _call_details(channel, path, method, payloads, auth)
                statuses.setdefault(path, Counter())[code.name] += 1
                if code in INTERNAL:
                    unhandled.add(f"{path} -> {code.name}: {details[:160]}")
    for path, counts in sorted(statuses.items()):
        print(path, dict(sorted(counts.items())))
    # Every method of every service was called, and the token was accepted.
    assert set(statuses) == {path for path, _ in methods}
    assert not any(set(c) == {"UNAUTHENTICATED"} for c in statuses.values()), statuses
    assert_alive(fuzz_engine, fuzz_tenant)
    assert rss_mb(fuzz_engine) - before < RSS_GROWTH_LIMIT_MB
    assert not unhandled, "unhandled errors:\n" + "\n".join(sorted(unhandled))
    assert_a_task_runs(fuzz_engine, fuzz_tenant, tmp_path)


def test_admin_refuses_times_and_filters_out_of_range(
    fuzz_engine: EngineProcess, fuzz_tenant: Tenant
) -> None:
    """Admin's ListRuns and StartBulkOperation answer INVALID_ARGUMENT (not INTERNAL) for
    a time no datetime holds and for a filter that is not a JSON object or names no
    status, as the Workflows service does for the same filter."""
    auth = (("authorization", f"Bearer {fuzz_tenant.token}"),)
    bad_filters = [
        workflows_pb2.RunFilter(since_ms=2**63 - 1),
        workflows_pb2.RunFilter(until_ms=-(2**63)),
        workflows_pb2.RunFilter(additional_metadata=b"\xff\xfe"),
        workflows_pb2.RunFilter(additional_metadata=b"{not json"),
        workflows_pb2.RunFilter(additional_metadata=b"[" * 5000 + b"]" * 5000),
        workflows_pb2.RunFilter(statuses=["sleeping"]),
    ]
    with grpc.insecure_channel(fuzz_engine.grpc_address) as channel:
        list_runs = channel.unary_unary(
            "/stoker.v1.Admin/ListRuns",
            request_serializer=admin_pb2.ListRunsRequest.SerializeToString,
            response_deserializer=admin_pb2.ListRunsResponse.FromString,
        )
        start = channel.unary_unary(
            "/stoker.v1.Admin/StartBulkOperation",
            request_serializer=admin_pb2.StartBulkOperationRequest.SerializeToString,
            response_deserializer=admin_pb2.BulkOperationInfo.FromString,
        )
        calls: list[tuple[Any, Message]] = [
            (list_runs, admin_pb2.ListRunsRequest(since_ms=2**63 - 1)),
            (list_runs, admin_pb2.ListRunsRequest(until_ms=-(2**63))),
        ]
        calls += [
            (start, admin_pb2.StartBulkOperationRequest(action="cancel", filter=f))
            for f in bad_filters
        ]
        for call, request in calls:
            with pytest.raises(grpc.RpcError) as refused:
                call(request, metadata=auth, timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
                request,
                refused.value.details(),
            )
        # A time in range is still a filter.
        page = list_runs(admin_pb2.ListRunsRequest(since_ms=1, limit=1), metadata=auth, timeout=10)
        assert isinstance(page, admin_pb2.ListRunsResponse)


class PeakRss:
    """Samples the engine's RSS in a thread every 20 ms; ``peak`` is the highest seen."""

    def __init__(self, engine: EngineProcess) -> None:
        assert engine.proc is not None
        self._proc = psutil.Process(engine.proc.pid)
        self.start_mb = self._proc.memory_info().rss / 2**20
        self.peak_mb = self.start_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_grpc_oversized_messages_are_refused_and_memory_stays_bounded(
    fuzz_engine: EngineProcess, fuzz_tenant: Tenant
) -> None:
    """Callers without a valid token cannot make the engine hold big messages: four 60 MB
    triggers at once (under the transport's own cap) are refused without the memory."""
    big = engine_pb2.TriggerRequest(
        items=[engine_pb2.TriggerItem(task_name="greet", input=b'"' + b"x" * (60 << 20) + b'"')]
    ).SerializeToString()
    codes: set[grpc.StatusCode] = set()
    with (
        grpc.insecure_channel(
            fuzz_engine.grpc_address, options=[("grpc.max_send_message_length", 256 << 20)]
        ) as channel,
        PeakRss(fuzz_engine) as rss,
    ):
        trigger = channel.unary_unary("/stoker.v1.Engine/Trigger")
        for metadata in ((), (("authorization", "Bearer stk_forged"),)):
            calls = [trigger.future(big, metadata=metadata, timeout=60) for _ in range(4)]
            for call in calls:
                try:
                    call.result()
                    codes.add(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    codes.add(exc.code())
    assert codes <= {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    growth = rss.peak_mb - rss.start_mb
    assert growth < RSS_GROWTH_LIMIT_MB, (
        f"the engine's RSS rose {growth:.0f} MB while refusing unauthenticated messages"
    )
    assert_alive(fuzz_engine, fuzz_tenant)


def _frame(kind: int, flags: int, stream: int, payload: bytes, claimed: int | None = None) -> bytes:
    length = len(payload) if claimed is None else claimed
    return (
        struct.pack(">I", length)[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload
    )


def test_raw_http2_garbage_and_cut_off_frames_leave_the_engine_up(
    fuzz_engine: EngineProcess, fuzz_tenant: Tenant
) -> None:
    rnd = random.Random(SEED + 2)
    host, port = fuzz_engine.grpc_address.split(":")
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    settings_frame = _frame(0x4, 0, 0, b"")
    attempts = [
        preface,  # then silence and a close
        preface + settings_frame + _frame(0x1, 0x4, 1, rnd.randbytes(40)),  # HEADERS, bad HPACK
        preface + settings_frame + _frame(0x0, 0, 1, b"\x00\x00\x10\x00\x00", claimed=16384),
        preface + settings_frame + _frame(0x9, 0, 1, rnd.randbytes(100)),  # stray CONTINUATION
        preface + _frame(0x4, 0, 0, b"\x00\x04\xff\xff\xff\xff"),  # window size out of range
        preface + rnd.randbytes(2048),
        rnd.randbytes(512),
    ]
    for blob in attempts:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(blob)
            sock.settimeout(1)
            try:
                sock.recv(4096)
            except OSError:
                pass
    assert_alive(fuzz_engine, fuzz_tenant)


def test_a_garbled_worker_stream_does_not_poison_the_engine(
    fuzz_engine: EngineProcess, fuzz_tenant: Tenant
) -> None:
    """Random worker messages after a valid registration: events for unknown attempts,
    bad labels, enum values out of range; then a real trigger still goes through."""
    rnd = random.Random(SEED + 3)
    auth = (("authorization", f"Bearer {fuzz_tenant.token}"),)
    register = engine_pb2.WorkerMessage(
        register=engine_pb2.WorkerRegistration(
            worker_id="6f1c1f8e-0000-4000-8000-000000000001", name="fuzz", slots=1
        )
    )
    with grpc.insecure_channel(fuzz_engine.grpc_address) as channel:
        for round_ in range(6):
            msgs = [random_message(engine_pb2.WorkerMessage, rnd) for _ in range(rnd.randint(1, 8))]
            if round_ % 2 == 0:  # every other stream registers first, the rest never do
                msgs.insert(0, register)
            _call(
                channel,
                "/stoker.v1.Engine/Connect",
                engine_pb2.DESCRIPTOR.services_by_name["Engine"].methods_by_name["Connect"],
                [m.SerializeToString() for m in msgs],
                auth,
            )
    assert_alive(fuzz_engine, fuzz_tenant)
