"""OpenTelemetry tracing for apps and workers: one interceptor, :class:`Tracing`.

``Stoker(interceptors=[Tracing])`` (``pip install stoker[otel]``) is all it takes; the spans
go to the global tracer provider (or the one given), so nothing is exported until the
application configures an exporter, as OpenTelemetry intends. Because every call to the
engine and every attempt a worker runs pass through the interceptor chain
(:mod:`stoker._sdk.calls`), this module is the only place tracing touches:

* **producer spans** around the calls that create runs — ``stoker.trigger`` (tasks),
  ``stoker.trigger_workflow``, ``stoker.spawn`` (children, from inside a task),
  ``stoker.push_event`` and ``stoker.schedule`` — each with the task names, the number of
  runs and, once the engine answered, their run ids (up to :data:`MAX_RUN_IDS`);
* **W3C trace context** written into each new run's (or event's, or scheduled run's)
  additional metadata under ``traceparent`` (and ``tracestate``/``baggage`` when set), by
  the globally configured propagator. The engine stores it with the run and copies event
  metadata into the runs an event starts, so the context travels wherever the run goes;
* **consumer spans** ``stoker.run <task>`` around each attempt a worker runs, children of
  the context found in the run's metadata, with the run id, task name, attempt, retry
  count and worker id as attributes; an exception the task raises is recorded on the span
  and sets its status to error. The task function runs inside that span, so whatever it
  traces (and the children it spawns) lands in the same trace: one trace shows web
  request → trigger → attempt → child runs.

The engine adds spans of its own (ingest batches, scheduler rounds, event flushes:
:mod:`stoker.engine.tracing`), exported only if the engine process configures an exporter.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, TracerProvider
from opentelemetry.util.types import AttributeValue

from stoker._proto import engine_pb2 as pb
from stoker._proto import schedules_pb2 as spb
from stoker._proto import workflows_pb2 as wpb
from stoker._sdk.calls import Interceptor
from stoker._sdk.context import Context

MAX_RUN_IDS = 100
"""A producer span lists the run ids it created up to this many (a bulk trigger of 10,000
runs would make a span too large to export); ``stoker.runs`` always has the count."""

_SYSTEM = "stoker"


class _Carries(Protocol):
    """A request item that starts a run: it carries metadata as JSON bytes."""

    additional_metadata: bytes


def current_carrier() -> dict[str, str]:
    """The current trace context as W3C headers (empty: no span to propagate)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def with_trace_context(raw: bytes, carrier: dict[str, str] | None = None) -> bytes:
    """``raw`` (a JSON object, or empty) with the current trace context (or ``carrier``)
    added; unchanged when there is no span to propagate or the metadata is not an object."""
    if carrier is None:
        carrier = current_carrier()
    if not carrier:
        return raw
    meta = json.loads(raw) if raw else {}
    if not isinstance(meta, dict):
        return raw
    meta.update(carrier)
    return json.dumps(meta, separators=(",", ":")).encode()


def _names(values: Sequence[str]) -> dict[str, Any]:
    distinct = sorted(set(values))
    if len(distinct) == 1:
        return {"stoker.task_name": distinct[0], "messaging.destination.name": distinct[0]}
    return {"stoker.task_names": distinct[:MAX_RUN_IDS]}


def _ids(span: Span, ids: Sequence[str]) -> None:
    if len(ids) == 1:
        span.set_attribute("stoker.run_id", ids[0])
    elif ids:
        span.set_attribute("stoker.run_ids", list(ids[:MAX_RUN_IDS]))


class Tracing(Interceptor):
    """Producer spans for the calls that create runs, consumer spans for the attempts a
    worker runs, and W3C trace context carried in the runs' metadata between them."""

    def __init__(self, next: Interceptor, tracer_provider: TracerProvider | None = None) -> None:
        super().__init__(next)
        from stoker import __version__

        self._tracer = trace.get_tracer("stoker", __version__, tracer_provider=tracer_provider)

    @classmethod
    def using(cls, tracer_provider: TracerProvider) -> Callable[[Interceptor], Tracing]:
        """An interceptor factory whose spans go to ``tracer_provider`` rather than the
        global one: ``Stoker(interceptors=[Tracing.using(provider)])``."""
        return lambda next: cls(next, tracer_provider)

    @contextmanager
    def _produce(
        self, name: str, items: Sequence[_Carries], names: Sequence[str]
    ) -> Iterator[Span]:
        attributes = {
            "messaging.system": _SYSTEM,
            "messaging.operation.type": "send",
            "stoker.runs": len(items),
            **_names(names),
        }
        with self._tracer.start_as_current_span(
            name, kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            # One context for the whole call; items with the same metadata (a run_many
            # of one kind) get the same bytes, worked out once.
            carrier = current_carrier()
            done: dict[bytes, bytes] = {}
            for item in items:
                raw = item.additional_metadata
                out = done.get(raw)
                if out is None:
                    out = done[raw] = with_trace_context(raw, carrier)
                item.additional_metadata = out
            yield span

    # -- producers ----------------------------------------------------------------------

    def trigger(self, request: pb.TriggerRequest) -> pb.TriggerResponse:
        names = [i.task_name for i in request.items]
        with self._produce("stoker.trigger", request.items, names) as span:
            resp = self.next.trigger(request)
            _ids(span, resp.run_ids)
            return resp

    async def aio_trigger(self, request: pb.TriggerRequest) -> pb.TriggerResponse:
        names = [i.task_name for i in request.items]
        with self._produce("stoker.trigger", request.items, names) as span:
            resp = await self.next.aio_trigger(request)
            _ids(span, resp.run_ids)
            return resp

    def trigger_workflows(
        self, request: wpb.TriggerWorkflowsRequest
    ) -> wpb.TriggerWorkflowsResponse:
        names = [i.workflow_name for i in request.items]
        with self._produce("stoker.trigger_workflow", request.items, names) as span:
            resp = self.next.trigger_workflows(request)
            _ids(span, resp.run_ids)
            return resp

    async def aio_trigger_workflows(
        self, request: wpb.TriggerWorkflowsRequest
    ) -> wpb.TriggerWorkflowsResponse:
        names = [i.workflow_name for i in request.items]
        with self._produce("stoker.trigger_workflow", request.items, names) as span:
            resp = await self.next.aio_trigger_workflows(request)
            _ids(span, resp.run_ids)
            return resp

    def spawn_children(self, request: wpb.SpawnChildrenRequest) -> wpb.SpawnChildrenResponse:
        names = [i.task_name or i.workflow_name for i in request.items]
        with self._produce("stoker.spawn", request.items, names) as span:
            resp = self.next.spawn_children(request)
            _ids(span, resp.run_ids)
            return resp

    async def aio_spawn_children(
        self, request: wpb.SpawnChildrenRequest
    ) -> wpb.SpawnChildrenResponse:
        names = [i.task_name or i.workflow_name for i in request.items]
        with self._produce("stoker.spawn", request.items, names) as span:
            resp = await self.next.aio_spawn_children(request)
            _ids(span, resp.run_ids)
            return resp

    def push_events(self, request: wpb.PushEventsRequest) -> wpb.PushEventsResponse:
        keys = [e.key for e in request.events]
        with self._produce("stoker.push_event", request.events, []) as span:
            span.set_attribute("stoker.event_keys", sorted(set(keys))[:MAX_RUN_IDS])
            resp = self.next.push_events(request)
            _ids(span, [r for e in resp.events for r in e.run_ids])
            return resp

    async def aio_push_events(self, request: wpb.PushEventsRequest) -> wpb.PushEventsResponse:
        keys = [e.key for e in request.events]
        with self._produce("stoker.push_event", request.events, []) as span:
            span.set_attribute("stoker.event_keys", sorted(set(keys))[:MAX_RUN_IDS])
            resp = await self.next.aio_push_events(request)
            _ids(span, [r for e in resp.events for r in e.run_ids])
            return resp

    def create_schedules(self, request: spb.CreateSchedulesRequest) -> spb.CreateSchedulesResponse:
        names = [i.task_name or i.workflow_name for i in request.items]
        with self._produce("stoker.schedule", request.items, names):
            return self.next.create_schedules(request)

    async def aio_create_schedules(
        self, request: spb.CreateSchedulesRequest
    ) -> spb.CreateSchedulesResponse:
        names = [i.task_name or i.workflow_name for i in request.items]
        with self._produce("stoker.schedule", request.items, names):
            return await self.next.aio_create_schedules(request)

    # -- consumer -----------------------------------------------------------------------

    async def aio_execute(self, ctx: Context, run: Callable[[], Awaitable[Any]]) -> Any:
        meta = ctx.additional_metadata
        parent = propagate.extract(meta if isinstance(meta, dict) else {})
        # Four attributes, no more: the SDK validates each one, which is most of what a
        # span costs a short task (the bench scenario ``tracing``).
        attributes: dict[str, AttributeValue] = {
            "stoker.run_id": ctx.run_id,
            "stoker.task_name": ctx.task_name,
            "stoker.attempt": ctx.attempt,
            "stoker.worker_id": ctx.worker_id,
        }
        with self._tracer.start_as_current_span(
            f"stoker.run {ctx.task_name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        ):
            return await self.next.aio_execute(ctx, run)
