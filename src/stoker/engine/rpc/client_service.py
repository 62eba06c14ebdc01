"""What an SDK client calls: definitions, triggers and results of tasks (the client half of
the ``Engine`` service), and the whole ``Workflows`` service: workflow runs, child runs,
events, cancel and replay.

Each handler turns its request into the inputs of the service that does the work (ingest,
the workflow ingest, the run watcher, cancel/replay) and its answer into the response.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message

from stoker._core.wire import RUN_STATUSES, json_problem, text_problem
from stoker._proto import engine_pb2 as pb
from stoker._proto import workflows_pb2 as wpb
from stoker.engine import tracing
from stoker.engine.auth import Principal, TokenAuth
from stoker.engine.crons import CronAdmin, CronFields, CronView
from stoker.engine.definitions import Definitions
from stoker.engine.dispatcher.served import ServedTasks
from stoker.engine.ingest import Ingest, TriggerInput
from stoker.engine.ingest.requests import RequestKey
from stoker.engine.ingest.workflows import (
    ChildInput,
    EventInput,
    WorkflowIngest,
    WorkflowTriggerInput,
)
from stoker.engine.rpc.handlers import Servicer, rpc
from stoker.engine.runs.ops import Outcome, RunFilter, RunOps
from stoker.engine.runs.watcher import RunWatcher
from stoker.errors import InvalidRequestError, NotFoundError

log = logging.getLogger("stoker.engine.server")

MAX_AWAIT_MS = 60_000


class ClientService(Servicer):
    """Hands each client call to ingest, the workflow ingest, the run watcher or
    cancel/replay; tells a trigger's caller which of its tasks no live worker serves."""

    def __init__(
        self,
        auth: TokenAuth,
        definitions: Definitions,
        ingest: Ingest,
        workflows: WorkflowIngest,
        watcher: RunWatcher,
        ops: RunOps,
        served: ServedTasks,
        crons: CronAdmin,
    ) -> None:
        super().__init__(auth)
        self._crons = crons
        self._definitions = definitions
        self._ingest = ingest
        self._workflows = workflows
        self._watcher = watcher
        self._ops = ops
        self._served = served

    # --- tasks (the Engine service) ---------------------------------------------------

    @rpc
    async def RegisterTasks(
        self, request: pb.RegisterTasksRequest, caller: Principal
    ) -> pb.RegisterTasksResponse:
        await self._definitions.register_tasks(
            caller.tenant_id, [(t.name, t.config) for t in request.tasks]
        )
        return pb.RegisterTasksResponse()

    @rpc
    async def Trigger(self, request: pb.TriggerRequest, caller: Principal) -> pb.TriggerResponse:
        items = [
            TriggerInput(
                i.task_name,
                i.input,
                i.additional_metadata,
                i.priority,
                i.run_at_ms,
                i.desired_worker_id,
                i.idempotency_key,
                i.idempotency_ttl_ms,
            )
            for i in request.items
        ]
        key = RequestKey.of(request.request_key, "trigger", request_content(request))
        first = items[0].additional_metadata if items else b""
        with tracing.call_span("trigger", first, tenant_id=caller.tenant_id, runs=len(items)):
            ids = await self._ingest.trigger(caller.tenant_id, items, key)
        unserved = await self._served.report(caller.tenant_id, {i.task_name for i in items})
        return pb.TriggerResponse(
            run_ids=ids, unserved_task_names=unserved, deduplicated=ids.deduplicated
        )

    @rpc
    async def AwaitRuns(
        self, request: pb.AwaitRunsRequest, caller: Principal
    ) -> pb.AwaitRunsResponse:
        run_ids = list(request.run_ids)
        # Results of finished runs: one read of the live tables, ids kept as text.
        if all(map(CANONICAL_UUID.fullmatch, run_ids)) and run_ids:
            rows = await self._watcher.finished_now(caller.tenant_id, run_ids)
            if rows:
                return results_response(rows, request.compact, [])
        try:
            ids = [uuid.UUID(r) for r in run_ids]
        except ValueError:
            raise NotFoundError(f"not a run id: {run_ids[:5]}") from None
        timeout = min(max(request.timeout_ms, 0), MAX_AWAIT_MS) / 1000
        unknown: list[uuid.UUID] = []
        waited = await self._watcher.wait(caller.tenant_id, ids, timeout, unknown)
        return results_response(waited, request.compact, unknown)

    @rpc
    async def PutRateLimit(
        self, request: pb.PutRateLimitRequest, caller: Principal
    ) -> pb.PutRateLimitResponse:
        await self._definitions.put_rate_limit(
            caller.tenant_id, request.key, request.limit, request.duration_ms
        )
        return pb.PutRateLimitResponse()

    @rpc
    async def ListCrons(
        self, request: pb.ListCronsRequest, caller: Principal
    ) -> pb.ListCronsResponse:
        views = await self._crons.list(caller.tenant_id, request.name or None)
        return pb.ListCronsResponse(crons=[cron_info(v) for v in views])

    @rpc
    async def CreateCron(self, request: pb.CreateCronRequest, caller: Principal) -> pb.CronResponse:
        view = await self._crons.create(
            caller.tenant_id,
            request.name,
            request.task_name,
            request.workflow_name,
            cron_fields(request.settings),
        )
        return pb.CronResponse(cron=cron_info(view))

    @rpc
    async def UpdateCron(self, request: pb.UpdateCronRequest, caller: Principal) -> pb.CronResponse:
        view = await self._crons.update(
            caller.tenant_id, request.name, cron_fields(request.settings)
        )
        return pb.CronResponse(cron=cron_info(view))

    @rpc
    async def DeleteCron(
        self, request: pb.DeleteCronRequest, caller: Principal
    ) -> pb.DeleteCronResponse:
        await self._crons.delete(caller.tenant_id, request.name)
        return pb.DeleteCronResponse()

    @rpc
    async def TriggerCron(
        self, request: pb.TriggerCronRequest, caller: Principal
    ) -> pb.TriggerCronResponse:
        fired = await self._crons.trigger_now(caller.tenant_id, request.name, force=request.force)
        return pb.TriggerCronResponse(run_id=fired.run_id, tick_ms=_ms(fired.tick))

    @rpc
    async def BackfillCron(
        self, request: pb.BackfillCronRequest, caller: Principal
    ) -> pb.BackfillCronResponse:
        fired = await self._crons.backfill(
            caller.tenant_id,
            request.name,
            _time(request.start_ms, "start_ms"),
            _time(request.end_ms, "end_ms"),
        )
        return pb.BackfillCronResponse(
            fires=[
                pb.CronFire(
                    tick_ms=_ms(f.tick), run_id=f.run_id, outcome="backfill", existing=f.existing
                )
                for f in fired
            ]
        )

    @rpc
    async def Pause(self, request: pb.PauseRequest, caller: Principal) -> pb.PauseResponse:
        dropped = await self._crons.pause(
            caller.tenant_id, _kind(request.kind), request.name, drop=request.drop
        )
        return pb.PauseResponse(dropped=dropped)

    @rpc
    async def Resume(self, request: pb.ResumeRequest, caller: Principal) -> pb.ResumeResponse:
        await self._crons.resume(caller.tenant_id, _kind(request.kind), request.name)
        return pb.ResumeResponse()

    @rpc
    async def ListPaused(
        self, request: pb.ListPausedRequest, caller: Principal
    ) -> pb.ListPausedResponse:
        rows = await self._crons.paused(caller.tenant_id)
        return pb.ListPausedResponse(
            paused=[
                pb.PausedInfo(
                    kind=r["kind"],
                    name=r["name"],
                    drop=r["drop_runs"],
                    paused_at_ms=_ms(r["paused_at"]),
                )
                for r in rows
            ]
        )

    # --- workflows, children, events, cancel and replay (the Workflows service) -------

    @rpc
    async def RegisterWorkflows(
        self, request: wpb.RegisterWorkflowsRequest, caller: Principal
    ) -> wpb.RegisterWorkflowsResponse:
        for w in request.workflows:
            if len(w.task_names) != len(w.task_configs):
                raise InvalidRequestError(
                    f"workflow {w.name!r} has {len(w.task_names)} task names and "
                    f"{len(w.task_configs)} task configs; they must pair up"
                )
        await self._definitions.register_workflows(
            caller.tenant_id,
            [
                (w.name, w.config, list(zip(w.task_names, w.task_configs, strict=True)))
                for w in request.workflows
            ],
        )
        return wpb.RegisterWorkflowsResponse()

    @rpc
    async def TriggerWorkflows(
        self, request: wpb.TriggerWorkflowsRequest, caller: Principal
    ) -> wpb.TriggerWorkflowsResponse:
        ids = await self._workflows.trigger(
            caller.tenant_id,
            [
                WorkflowTriggerInput(
                    i.workflow_name,
                    i.input,
                    i.additional_metadata,
                    i.priority,
                    i.idempotency_key,
                    i.idempotency_ttl_ms,
                )
                for i in request.items
            ],
            RequestKey.of(request.request_key, "workflows", request_content(request)),
        )
        return wpb.TriggerWorkflowsResponse(
            run_ids=ids,
            unserved_task_names=await self._unserved_steps(caller.tenant_id, request),
            deduplicated=ids.deduplicated,
        )

    async def _unserved_steps(
        self, tenant_id: int, request: wpb.TriggerWorkflowsRequest
    ) -> list[str]:
        """The triggered workflows' steps that no live worker serves (definitions cached)."""
        try:
            known = await self._definitions.workflows(tenant_id)
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

    @rpc
    async def SpawnChildren(
        self, request: wpb.SpawnChildrenRequest, caller: Principal
    ) -> wpb.SpawnChildrenResponse:
        first = request.items[0].additional_metadata if request.items else b""
        with tracing.call_span("spawn", first, tenant_id=caller.tenant_id, runs=len(request.items)):
            result = await self._workflows.spawn(
                caller.tenant_id,
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
                        i.sticky,
                    )
                    for i in request.items
                ],
                RequestKey.of(request.request_key, "spawn", request_content(request)),
            )
        return wpb.SpawnChildrenResponse(
            run_ids=[r for r, _ in result], existing=[e for _, e in result]
        )

    @rpc
    async def PushEvents(
        self, request: wpb.PushEventsRequest, caller: Principal
    ) -> wpb.PushEventsResponse:
        first = request.events[0].additional_metadata if request.events else b""
        n = len(request.events)
        with tracing.call_span("push_events", first, tenant_id=caller.tenant_id, events=n):
            pushed = await self._workflows.push_events(
                caller.tenant_id,
                [
                    EventInput(e.key, e.payload, e.additional_metadata, e.scope, e.priority)
                    for e in request.events
                ],
                RequestKey.of(request.request_key, "events", request_content(request)),
            )
        return wpb.PushEventsResponse(
            event_ids=[e.event_id for e in pushed.events],
            satisfied=pushed.satisfied,
            events=[
                wpb.PushedEvent(event_id=e.event_id, run_ids=e.run_ids, satisfied=e.satisfied)
                for e in pushed.events
            ],
        )

    @rpc
    async def CancelRuns(
        self, request: wpb.CancelRunsRequest, caller: Principal
    ) -> wpb.CancelRunsResponse:
        if text_problem(request.reason):
            raise InvalidRequestError("the cancel reason is refused: it holds NUL")
        outcomes = await self._ops.cancel(
            caller.tenant_id,
            list(request.run_ids),
            run_filter(request.filter, request.HasField("filter")),
            request.reason,
        )
        return wpb.CancelRunsResponse(outcomes=_outcomes(outcomes))

    @rpc
    async def ReplayRuns(
        self, request: wpb.ReplayRunsRequest, caller: Principal
    ) -> wpb.ReplayRunsResponse:
        outcomes = await self._ops.replay(
            caller.tenant_id,
            list(request.run_ids),
            run_filter(request.filter, request.HasField("filter")),
        )
        return wpb.ReplayRunsResponse(outcomes=_outcomes(outcomes))

    @rpc
    async def ResetRun(
        self, request: wpb.ResetRunRequest, caller: Principal
    ) -> wpb.ResetRunResponse:
        if text_problem(request.reason):
            raise InvalidRequestError("the reset reason is refused: it holds NUL")
        done = await self._ops.reset(
            caller.tenant_id, request.run_id, request.position, request.reason
        )
        return wpb.ResetRunResponse(
            run_id=done.run_id,
            position=done.position,
            branch=done.branch,
            invocation=done.invocation,
            dropped=done.dropped,
            status=done.status,
        )


def request_content(request: Message) -> bytes:
    """What a request key's fingerprint covers: the request as parsed, serialized the same
    way whatever client sent it."""
    return request.SerializeToString(deterministic=True)


CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""A run id as the engine writes it (``str(uuid)``); others are parsed (and normalized)."""

RESULTS_BUDGET_BYTES = 32 * 1024 * 1024
"""Outputs carried by one ``AwaitRuns`` answer at most (always at least one run): the client
asks again for the rest, and its receive limit (payload limit + 64 MiB) is never reached."""


def results_response(
    rows: Sequence[Mapping[str, Any]], compact: bool, unknown: Sequence[uuid.UUID]
) -> pb.AwaitRunsResponse:
    """The answer of ``AwaitRuns``: finished runs, as many as fit the budget. ``compact``
    (the client asked so): completed runs as parallel lists of ids and outputs, which
    protobuf builds and reads without a message per run (35 ms → 0.5 ms for 10,000)."""
    resp = pb.AwaitRunsResponse(unknown_run_ids=[str(u) for u in unknown])
    budget = RESULTS_BUDGET_BYTES
    if compact:
        ids: list[str] = []
        outputs: list[bytes] = []
        for row in rows:
            output = row["output"]
            budget -= len(output or "")
            if budget < 0 and (ids or resp.results):
                break
            if row["status"] == "COMPLETED":
                ids.append(str(row["external_id"]))
                outputs.append(output.encode() if output is not None else b"")
            else:
                resp.results.append(_result(row))
        resp.completed_run_ids.extend(ids)
        resp.completed_outputs.extend(outputs)
        return resp
    for row in rows:
        budget -= len(row["output"] or "")
        if budget < 0 and resp.results:
            break
        resp.results.append(_result(row))
    return resp


def _result(row: Mapping[str, object]) -> pb.RunResult:
    error = row.get("error")
    res = pb.RunResult(run_id=str(row["external_id"]), status=str(row["status"]))
    if row.get("output") is not None:
        res.output = str(row["output"]).encode()
    if isinstance(error, dict):
        res.error.CopyFrom(
            pb.RunError(
                type=str(error.get("type", "")),
                message=str(error.get("message", "")),
                traceback=str(error.get("traceback", "")),
            )
        )
    return res


def run_filter(f: wpb.RunFilter, present: bool) -> RunFilter | None:
    """The runs a cancel or replay by filter selects; InvalidRequestError for a filter no
    run could match for a reason the caller should hear (not a status, NUL, bad times)."""
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


def _time(ms: int, what: str) -> datetime:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        raise InvalidRequestError(f"{what} {ms} is not a time in epoch milliseconds") from None


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _kind(kind: str) -> str:
    if kind not in ("task", "workflow"):
        raise InvalidRequestError(f"pause kind {kind!r} is neither 'task' nor 'workflow'")
    return kind


def cron_fields(s: pb.CronSettings) -> CronFields:
    """The settings present in a request (absent ones are None)."""
    return CronFields(
        expression=s.expression if s.HasField("expression") else None,
        timezone=s.timezone if s.HasField("timezone") else None,
        input=s.input if s.HasField("input") else None,
        additional_metadata=(s.additional_metadata if s.HasField("additional_metadata") else None),
        priority=s.priority if s.HasField("priority") else None,
        overlap=s.overlap if s.HasField("overlap") else None,
        catch_up_window_s=s.catch_up_window_s if s.HasField("catch_up_window_s") else None,
        catch_up_max=s.catch_up_max if s.HasField("catch_up_max") else None,
        enabled=s.enabled if s.HasField("enabled") else None,
    )


def cron_info(v: CronView) -> pb.CronInfo:
    """A cron on the wire."""
    r = v.row
    return pb.CronInfo(
        name=r["name"],
        task_name=r["task_name"] or "",
        workflow_name=r["workflow_name"] or "",
        expression=r["expression"],
        timezone=r["timezone"],
        enabled=r["enabled"],
        source=r["source"],
        input=json.dumps(r["input"]).encode(),
        additional_metadata=json.dumps(r["additional_metadata"]).encode(),
        priority=r["priority"],
        overlap=r["overlap"],
        catch_up_window_s=r["catch_up_window_s"],
        catch_up_max=r["catch_up_max"],
        next_fire_at_ms=[_ms(t) for t in v.next_fire_times],
        last_runs=[
            pb.CronFire(
                tick_ms=_ms(f["tick"]),
                run_id=str(f["run_id"]) if f["run_id"] else "",
                outcome=f["outcome"],
                status=f["status"] or "",
            )
            for f in v.last_fires
        ],
        created_at_ms=_ms(r["created_at"]),
        updated_at_ms=_ms(r["updated_at"]),
        buffered_tick_ms=_ms(r["buffered_tick"]) if r["buffered_tick"] else 0,
    )
