"""Tasks traced with OpenTelemetry (``stoker.otel.Tracing``): a parent that runs a child, a
sync task, and a task started by an event.

The worker process exports its spans, as they end, to the JSON-lines file named by
``TRACE_FILE``; the test reads them back beside the spans its own process recorded.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from stoker import Context, Stoker
from stoker.otel import Tracing


def record(span: ReadableSpan) -> dict[str, Any]:
    """What the test compares of a span."""
    assert span.context is not None
    return {
        "name": span.name,
        "trace_id": format(span.context.trace_id, "032x"),
        "span_id": format(span.context.span_id, "016x"),
        "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
        "kind": span.kind.name,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
    }


class FileExporter(SpanExporter):
    """Appends each finished span to a file, one JSON object a line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock, open(self.path, "a") as f:
            for span in spans:
                f.write(json.dumps(record(span)) + "\n")
        return SpanExportResult.SUCCESS


provider = TracerProvider()
if os.environ.get("TRACE_FILE"):
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(os.environ["TRACE_FILE"])))


def declare(app: Stoker) -> Stoker:
    @app.task()
    def traced_child(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {"n": input["n"], "traceparent": ctx.additional_metadata.get("traceparent")}

    @app.task()
    async def traced_parent(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        child = await traced_child.aio_run({"n": 1})
        return {"child": child}

    @app.task(on_events=["traced:*"])
    async def traced_on_event(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {"got": input}

    @app.task(retries=0)
    async def traced_fails(input: dict[str, Any], ctx: Context) -> None:
        raise ValueError("traced failure")

    return app


app = declare(Stoker(interceptors=[Tracing.using(provider)]))
