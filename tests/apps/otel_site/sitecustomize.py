"""Turns OpenTelemetry on in a process started with this folder on PYTHONPATH (what
``opentelemetry-instrument`` does with its own sitecustomize): a tracer provider that
writes each span, as it ends, as one JSON line to ``ENGINE_TRACE_FILE``. The tracing tests
start an engine this way."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence


def _install(path: str) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    lock = threading.Lock()

    class FileExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            with lock, open(path, "a") as f:
                for span in spans:
                    assert span.context is not None
                    f.write(
                        json.dumps(
                            {
                                "name": span.name,
                                "trace_id": format(span.context.trace_id, "032x"),
                                "span_id": format(span.context.span_id, "016x"),
                                "parent_id": (
                                    format(span.parent.span_id, "016x") if span.parent else None
                                ),
                                "kind": span.kind.name,
                                "attributes": dict(span.attributes or {}),
                                "service": span.resource.attributes.get("service.name"),
                            }
                        )
                        + "\n"
                    )
            return SpanExportResult.SUCCESS

    provider = TracerProvider(resource=Resource.create({"service.name": "stoker-engine"}))
    provider.add_span_processor(SimpleSpanProcessor(FileExporter()))
    trace.set_tracer_provider(provider)


if os.environ.get("ENGINE_TRACE_FILE"):
    _install(os.environ["ENGINE_TRACE_FILE"])
