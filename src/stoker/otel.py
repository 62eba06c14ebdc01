"""OpenTelemetry tracing for Stoker apps and workers (``pip install stoker[otel]``).

::

    from stoker import Stoker
    from stoker.otel import Tracing

    app = Stoker(interceptors=[Tracing])

Triggers, child spawns, event pushes and schedules get producer spans, each attempt a
worker runs gets a consumer span, and the W3C trace context travels with every run, so one
trace shows the caller, the trigger, the attempt and its child runs. Spans go to the global
tracer provider (``Tracing.using(provider)`` for another): nothing is exported until the
application configures an exporter. See :mod:`stoker._sdk.tracing` for the details.
"""

from __future__ import annotations

from stoker._sdk.tracing import MAX_RUN_IDS, Tracing, with_trace_context

__all__ = ["MAX_RUN_IDS", "Tracing", "with_trace_context"]
