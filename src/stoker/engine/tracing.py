"""The engine's own OpenTelemetry spans: ingest batches, scheduler rounds, dispatch.

``stoker.ingest.batch`` (one tenant's triggers written in one transaction),
``stoker.scheduler.round`` (one tenant's round: claim, place, assign),
``stoker.dispatch`` (assignments pushed to workers) and ``stoker.dispatch.flush`` (the
workers' events written). They carry the tenant id and how many items they handled.

They go to the global tracer provider, which does nothing until the engine process
configures one: run the engine under OpenTelemetry's launcher (``opentelemetry-instrument
stoker engine``, from the ``opentelemetry-distro`` package, configured by the usual
``OTEL_*`` variables). Without the ``opentelemetry-api`` package every span here is a null
context. Runs are not parents of these spans (a batch holds runs of many traces): the
spans of one run are the SDK's (:mod:`stoker._sdk.tracing`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

try:
    from opentelemetry import trace
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
