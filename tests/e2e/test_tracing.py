"""One trace from the caller through the trigger, the attempt on a real worker process and
its child run, and through an event to the run it starts (stoker.otel.Tracing).

The caller's spans are kept by an in-memory exporter; the worker process writes its spans
to a file (tests/apps/traced.py), read back here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stoker import TaskRunError
from stoker.otel import Tracing
from tests.apps import traced
from tests.harness import REPO, EngineProcess, Tenant, WorkerProcess, wait_until

pytestmark = pytest.mark.timeout(90)


def test_one_trace_from_the_caller_to_the_child_run(
    engine: EngineProcess, tenant: Tenant, tmp_path: Path
) -> None:
    trace_file = tmp_path / "worker-spans.jsonl"
    worker = WorkerProcess(
        "tests.apps.traced:app",
        tenant,
        engine.db_url,
        tmp_path,
        "traced",
        slots=4,
        env={"TRACE_FILE": str(trace_file)},
    )
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    app = traced.declare(tenant.client(interceptors=[Tracing.using(provider)]))
    try:
        worker.start()
        with provider.get_tracer("web").start_as_current_span("web request") as root:
            ref = app.tasks["traced_parent"].run_no_wait({})
            app.events.push("traced:1", {"x": 1})
            failing = app.tasks["traced_fails"].run_no_wait({})
        out = ref.result(timeout=30)
        with pytest.raises(TaskRunError):
            failing.result(timeout=30)
        trace_id = format(root.get_span_context().trace_id, "032x")

        def worker_spans() -> dict[str, dict[str, Any]] | None:
            if not trace_file.exists():
                return None
            spans = [json.loads(line) for line in trace_file.read_text().splitlines()]
            by_name = {s["name"]: s for s in spans}
            wanted = {
                "stoker.run traced_parent",
                "stoker.spawn",
                "stoker.run traced_child",
                "stoker.run traced_on_event",
                "stoker.run traced_fails",
            }
            return by_name if wanted <= set(by_name) else None

        spans = wait_until(worker_spans, 20, "the worker's spans to be exported")
        # The caller's spans, by name and the task they name (two triggers were made).
        mine = {
            (r["name"], r["attributes"].get("stoker.task_name", "")): r
            for r in map(traced.record, memory.get_finished_spans())
        }
        trigger = mine[("stoker.trigger", "traced_parent")]
        push = mine[("stoker.push_event", "")]
        parent, spawn = spans["stoker.run traced_parent"], spans["stoker.spawn"]
        child, on_event = spans["stoker.run traced_child"], spans["stoker.run traced_on_event"]

        # One trace: web request → trigger → parent attempt → spawn → child attempt, and
        # web request → event push → the run the event started.
        every = [*mine.values(), *spans.values()]
        assert {s["trace_id"] for s in every} == {trace_id}
        root_id = format(root.get_span_context().span_id, "016x")
        assert {s["parent_id"] for s in mine.values() if s["name"] != "web request"} == {root_id}
        assert trigger["kind"] == "PRODUCER" and parent["kind"] == "CONSUMER"
        assert parent["parent_id"] == trigger["span_id"]
        assert spawn["parent_id"] == parent["span_id"]
        assert child["parent_id"] == spawn["span_id"]
        assert on_event["parent_id"] == push["span_id"]

        # Attributes: run id, task name, attempt, worker.
        assert trigger["attributes"]["stoker.run_id"] == ref.run_id
        attrs = parent["attributes"]
        assert attrs["stoker.run_id"] == ref.run_id
        assert attrs["stoker.task_name"] == "traced_parent"
        assert attrs["stoker.attempt"] == 0  # attempts count from 0, as ctx.attempt
        assert attrs["stoker.worker_id"]
        assert spawn["attributes"]["stoker.run_id"] == child["attributes"]["stoker.run_id"]
        # The context travels in the run's metadata, as W3C traceparent.
        assert out["child"]["traceparent"].split("-")[1] == trace_id
        # A task that raises: its span says so.
        assert spans["stoker.run traced_fails"]["status"] == "ERROR"
    finally:
        app.close()
        worker.kill()


def test_the_engine_spans_join_the_callers_trace(
    engine: EngineProcess, tenant: Tenant, tmp_path: Path, engine_factory: Any
) -> None:
    """An engine with tracing on (a tracer provider installed at start, exporting to a
    file, as the OpenTelemetry launcher would): caller span → trigger → the engine's span
    of the call, the attempt on the worker, the spawn → the engine's span of the spawn →
    the child's attempt, all one trace; the engine's own batch spans are exported too."""
    engine_file = tmp_path / "engine-spans.jsonl"
    worker_file = tmp_path / "worker-spans.jsonl"
    site = Path(traced.__file__).parent / "otel_site"
    traced_engine = engine_factory(
        engine.db_url,
        env={
            "ENGINE_TRACE_FILE": str(engine_file),
            "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
        },
    )
    there = Tenant(tenant.tenant_id, tenant.token, traced_engine.grpc_address)
    worker = WorkerProcess(
        "tests.apps.traced:app",
        there,
        engine.db_url,
        tmp_path,
        "traced-engine",
        slots=4,
        env={"TRACE_FILE": str(worker_file)},
    )
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    app = traced.declare(there.client(interceptors=[Tracing.using(provider)]))
    try:
        worker.start()
        with provider.get_tracer("web").start_as_current_span("web request") as root:
            ref = app.tasks["traced_parent"].run_no_wait({})
        ref.result(timeout=30)
        trace_id = format(root.get_span_context().trace_id, "032x")

        def read(path: Path) -> list[dict[str, Any]]:
            if not path.exists():
                return []
            return [json.loads(line) for line in path.read_text().splitlines()]

        def engine_spans() -> list[dict[str, Any]] | None:
            spans = [s for s in read(engine_file) if s["trace_id"] == trace_id]
            return spans if len(spans) >= 2 else None

        in_trace = wait_until(engine_spans, 20, "the engine's spans of the trace")
        worker_spans = {s["name"]: s for s in read(worker_file)}
        trigger = next(
            r
            for r in map(traced.record, memory.get_finished_spans())
            if r["name"] == "stoker.trigger"
        )
        by_name = {s["name"]: s for s in in_trace}
        assert set(by_name) == {"stoker.engine.trigger", "stoker.engine.spawn"}
        call, spawned = by_name["stoker.engine.trigger"], by_name["stoker.engine.spawn"]
        assert call["kind"] == "SERVER" and call["service"] == "stoker-engine"
        assert call["parent_id"] == trigger["span_id"]
        assert call["attributes"]["stoker.runs"] == 1
        parent = worker_spans["stoker.run traced_parent"]
        child = worker_spans["stoker.run traced_child"]
        assert spawned["parent_id"] == worker_spans["stoker.spawn"]["span_id"]
        assert parent["parent_id"] == trigger["span_id"]
        assert {trigger["trace_id"], parent["trace_id"], child["trace_id"]} == {trace_id}
        # The engine's batch spans are exported (in traces of their own).
        names = {s["name"] for s in read(engine_file)}
        assert {"stoker.ingest.batch", "stoker.scheduler.round", "stoker.dispatch"} <= names
    finally:
        app.close()
        worker.kill()
