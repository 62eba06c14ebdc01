"""Hatchet's ``EventsService`` mapped onto Stoker's event ingest.

``hatchet.event.push`` and ``bulk_push`` go through
:meth:`WorkflowIngest.push_events <stoker.engine.ingest.workflows.WorkflowIngest.push_events>`,
the one entry point of events: the event is stored, starts the runs of the tasks subscribed
to its key (a Hatchet task's ``on_events``, or a Stoker task's), and satisfies the waits
of Stoker workflows, in one transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from stoker._core.wire import MAX_PRIORITY, MIN_PRIORITY
from stoker.engine.hatchet import contracts as hc
from stoker.engine.hatchet.handlers import Caller, HatchetAuth, HatchetServicer, hatchet_rpc
from stoker.engine.ingest.workflows import EventInput, WorkflowIngest
from stoker.errors import InvalidRequestError


def _event(request: Any) -> EventInput:
    priority = request.priority
    if priority and not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidRequestError(f"priority {priority} is outside {MIN_PRIORITY}..{MAX_PRIORITY}")
    return EventInput(
        request.key,
        (request.payload or "{}").encode(),
        (request.additional_metadata or "").encode(),
        request.scope,
        priority,
    )


class EventsV0(HatchetServicer):
    """Hatchet's ``EventsService``: push and bulk push."""

    def __init__(self, auth: HatchetAuth, workflows: WorkflowIngest) -> None:
        super().__init__(auth)
        self._workflows = workflows

    async def _push(self, caller: Caller, requests: list[Any]) -> list[Any]:
        pushed = await self._workflows.push_events(caller.tenant_id, [_event(r) for r in requests])
        now = datetime.now(UTC)
        answers = []
        for request, stored in zip(requests, pushed.events, strict=True):
            event = hc.events.Event(
                tenant_id=caller.claims.sub,
                event_id=stored.event_id,
                key=request.key,
                payload=request.payload,
                additional_metadata=request.additional_metadata or None,
                scope=request.scope or None,
            )
            event.event_timestamp.FromDatetime(now)
            answers.append(event)
        return answers

    @hatchet_rpc
    async def Push(self, request: Any, caller: Caller) -> Any:
        return (await self._push(caller, [request]))[0]

    @hatchet_rpc
    async def BulkPush(self, request: Any, caller: Caller) -> Any:
        return hc.events.Events(events=await self._push(caller, list(request.events)))
