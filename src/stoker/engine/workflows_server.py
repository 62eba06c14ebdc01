"""The gRPC front of workflows, child runs, events, cancel and replay (``Workflows``).

Authentication and error mapping are those of :class:`~stoker.engine.server.EngineServicer`.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import grpc

from stoker._core.wire import RUN_STATUSES, json_problem, text_problem
from stoker._proto import workflows_pb2 as wpb
from stoker._proto import workflows_pb2_grpc as wpb_grpc
from stoker.engine.auth import TokenAuth
from stoker.engine.dispatcher.served import ServedTasks
from stoker.engine.ingest.requests import RequestKey
from stoker.engine.ingest.workflows import (
    ChildInput,
    EventInput,
    WorkflowIngest,
    WorkflowTriggerInput,
)
from stoker.engine.runs.ops import Outcome, RunFilter, RunOps
from stoker.engine.server import Handlers, request_content
from stoker.errors import InvalidRequestError

log = logging.getLogger("stoker.engine.server")


def _filter(f: wpb.RunFilter, present: bool) -> RunFilter | None:
    if not present:
        return None
    metadata = None
    if f.additional_metadata:
        problem = json_problem(f.additional_metadata)
        if problem is not None:
            raise InvalidRequestError(f"filter additional_metadata is refused: {problem}")
        metadata = json.loads(f.additional_metadata)
        if not isinstance(metadata, dict):
            raise InvalidRequestError("filter additional_metadata must be a JSON object")

    def at(ms: int, what: str) -> datetime | None:
        if not ms:
            return None
        try:
            return datetime.fromtimestamp(ms / 1000, UTC)
        except (ValueError, OverflowError, OSError):
            raise InvalidRequestError(
                f"filter {what} {ms} is not a time between years 1 and 9999 (epoch ms)"
            ) from None

    statuses = [s.upper() for s in f.statuses]
    for s in statuses:
        if s not in RUN_STATUSES:
            raise InvalidRequestError(
                f"filter status {s!r} is not a run status; use one of {', '.join(RUN_STATUSES)}"
            )
    for name in f.names:
        if text_problem(name):
            raise InvalidRequestError(f"filter name {name!r} is refused: it holds NUL")
    return RunFilter(
        names=list(f.names) or None,
        statuses=statuses or None,
        since=at(f.since_ms, "since_ms"),
        until=at(f.until_ms, "until_ms"),
        additional_metadata=metadata,
    )


def _outcomes(items: list[Outcome]) -> list[wpb.RunOutcome]:
    return [
        wpb.RunOutcome(run_id=o.run_id, outcome=o.outcome, status=o.status, message=o.message)
        for o in items
    ]


class WorkflowsServicer(Handlers, wpb_grpc.WorkflowsServicer):
    """Hands each call to the workflow ingest or to cancel/replay."""

    def __init__(
        self, auth: TokenAuth, ingest: WorkflowIngest, ops: RunOps, served: ServedTasks
    ) -> None:
        self._auth = auth
        self._ingest = ingest
        self._ops = ops
        self._served = served

    async def RegisterWorkflows(
        self, request: wpb.RegisterWorkflowsRequest, context: grpc.aio.ServicerContext
    ) -> wpb.RegisterWorkflowsResponse:
        try:
            p = await self._principal(context)
            for w in request.workflows:
                if len(w.task_names) != len(w.task_configs):
                    raise InvalidRequestError(
                        f"workflow {w.name!r} has {len(w.task_names)} task names and "
                        f"{len(w.task_configs)} task configs; they must pair up"
                    )
            await self._ingest.register(
                p.tenant_id,
                [
                    (
                        w.name,
                        w.config,
                        list(zip(w.task_names, w.task_configs, strict=True)),
                    )
                    for w in request.workflows
                ],
            )
        except Exception as exc:
            await self._fail(context, exc)
        return wpb.RegisterWorkflowsResponse()

    async def TriggerWorkflows(
        self, request: wpb.TriggerWorkflowsRequest, context: grpc.aio.ServicerContext
    ) -> wpb.TriggerWorkflowsResponse:
        try:
            p = await self._principal(context)
            ids = await self._ingest.trigger(
                p.tenant_id,
                [
                    WorkflowTriggerInput(
                        i.workflow_name, i.input, i.additional_metadata, i.priority
                    )
                    for i in request.items
                ],
                RequestKey.of(request.request_key, "workflows", request_content(request)),
            )
        except Exception as exc:
            await self._fail(context, exc)
        return wpb.TriggerWorkflowsResponse(
            run_ids=ids, unserved_task_names=await self._unserved_steps(p.tenant_id, request)
        )

    async def _unserved_steps(
        self, tenant_id: int, request: wpb.TriggerWorkflowsRequest
    ) -> list[str]:
        """The triggered workflows' steps that no live worker serves (definitions cached)."""
        try:
            known = await self._ingest.workflows(tenant_id)
        except Exception as exc:  # the runs are stored: the call must not fail now
            log.warning("cannot read workflow definitions: %s", exc)
            return []
        steps = {
            step.task_name
            for name in {i.workflow_name for i in request.items}
            if name in known
            for step in known[name][1].steps
        }
        return await self._served.report(tenant_id, steps)

    async def SpawnChildren(
        self, request: wpb.SpawnChildrenRequest, context: grpc.aio.ServicerContext
    ) -> wpb.SpawnChildrenResponse:
        try:
            p = await self._principal(context)
            result = await self._ingest.spawn(
                p.tenant_id,
                request.parent_task_id,
                [
                    ChildInput(
                        i.task_name,
                        i.workflow_name,
                        i.input,
                        i.additional_metadata,
                        i.priority,
                        i.child_index,
                        i.child_key,
                    )
                    for i in request.items
                ],
                RequestKey.of(request.request_key, "spawn", request_content(request)),
            )
        except Exception as exc:
            await self._fail(context, exc)
        return wpb.SpawnChildrenResponse(
            run_ids=[r for r, _ in result], existing=[e for _, e in result]
        )

    async def PushEvents(
        self, request: wpb.PushEventsRequest, context: grpc.aio.ServicerContext
    ) -> wpb.PushEventsResponse:
        try:
            p = await self._principal(context)
            ids, satisfied = await self._ingest.push_events(
                p.tenant_id,
                [
                    EventInput(e.key, e.payload, e.additional_metadata, e.scope)
                    for e in request.events
                ],
                RequestKey.of(request.request_key, "events", request_content(request)),
            )
        except Exception as exc:
            await self._fail(context, exc)
        return wpb.PushEventsResponse(event_ids=ids, satisfied=satisfied)

    async def CancelRuns(
        self, request: wpb.CancelRunsRequest, context: grpc.aio.ServicerContext
    ) -> wpb.CancelRunsResponse:
        try:
            p = await self._principal(context)
            if text_problem(request.reason):
                raise InvalidRequestError("the cancel reason is refused: it holds NUL")
            outcomes = await self._ops.cancel(
                p.tenant_id,
                list(request.run_ids),
                _filter(request.filter, request.HasField("filter")),
                request.reason,
            )
        except Exception as exc:
            await self._fail(context, exc)
        return wpb.CancelRunsResponse(outcomes=_outcomes(outcomes))

    async def ReplayRuns(
        self, request: wpb.ReplayRunsRequest, context: grpc.aio.ServicerContext
    ) -> wpb.ReplayRunsResponse:
        try:
            p = await self._principal(context)
            outcomes = await self._ops.replay(
                p.tenant_id,
                list(request.run_ids),
                _filter(request.filter, request.HasField("filter")),
            )
        except Exception as exc:
            await self._fail(context, exc)
        return wpb.ReplayRunsResponse(outcomes=_outcomes(outcomes))
