"""The engine's own OpenTelemetry spans: ingest batches, scheduler rounds, dispatch.

``stoker.ingest.batch`` (one tenant's triggers written in one transaction),
``stoker.scheduler.round`` (one tenant's round: claim, place, assign),
``stoker.dispatch`` (assignments pushed to workers) and ``stoker.dispatch.flush`` (the
workers' events written). They carry the tenant id and how many items they handled.

One more span belongs to a run's trace: ``stoker.engine.<call>`` (server kind) around a
trigger, spawn, event push or workflow trigger call the engine serves, a child of the
trace context the caller's Tracing interceptor wrote into the first run's metadata
(``traceparent``), with the tenant id and the number of items. So one trace shows web
request → ``stoker.trigger`` → ``stoker.engine.trigger`` (and the attempt, a sibling under
the trigger). The metadata is read for it only while a tracer provider is configured.

They go to the global tracer provider, which does nothing until the engine process
configures one: run the engine under OpenTelemetry's launcher (``opentelemetry-instrument
stoker engine``, from the ``opentelemetry-distro`` package, configured by the usual
``OTEL_*`` variables). Without the ``opentelemetry-api`` package every span here is a null
context. Runs are not parents of these spans (a batch holds runs of many traces): the
spans of one run are the SDK's (:mod:`stoker._sdk.tracing`).
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager, nullcontext
from typing import Any

try:
    from opentelemetry import propagate, trace
except ImportError:  # pragma: no cover - the API comes with the server extra's FastAPI
    _tracer: Any = None
else:
    _tracer = trace.get_tracer("stoker.engine")


def span(name: str, **attributes: int | str) -> AbstractContextManager[Any]:
    """A span named ``name`` with ``stoker.<key>`` attributes (a null context without the
    OpenTelemetry API)."""
    if _tracer is None:
        return nullcontext()
    made: AbstractContextManager[Any] = _tracer.start_as_current_span(
        name, attributes={f"stoker.{k}": v for k, v in attributes.items()}
    )
    return made


def _configured() -> bool:
    """Whether the process has a tracer provider of its own (not the API's default)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def call_span(call: str, metadata: bytes, **attributes: int | str) -> AbstractContextManager[Any]:
    """The span ``stoker.engine.<call>`` of a call that creates runs, in the trace of the
    context ``metadata`` (the first run's additional metadata, JSON) carries; a null
    context when nothing is traced or the metadata carries no context."""
    if _tracer is None or b"traceparent" not in metadata or not _configured():
        return nullcontext()
    try:
        carrier = json.loads(metadata)
    except ValueError:
        return nullcontext()
    if not isinstance(carrier, dict):
        return nullcontext()
    parent = propagate.extract({k: v for k, v in carrier.items() if isinstance(v, str)})
    made: AbstractContextManager[Any] = _tracer.start_as_current_span(
        f"stoker.engine.{call}",
        context=parent,
        kind=trace.SpanKind.SERVER,
        attributes={f"stoker.{k}": v for k, v in attributes.items()},
    )
    return made
