"""Hatchet's workflow declarations, triggers and run results, mapped onto Stoker's own
definitions registry, ingest and run reads.

Every Hatchet task is registered as a Stoker task named by its Hatchet action id,
``<workflow name, lower case>:<task name>``: the name the Hatchet worker registers for, so
the scheduler places its runs on Hatchet workers as on Stoker ones, and Stoker's SDK, REST
API and dashboard see the runs under that name. A Hatchet workflow of one task (what
``@hatchet.task()`` declares) is just that task; one of several tasks (a DAG) is also a
Stoker workflow of the lower-case name whose steps are its tasks, named by their readable
ids, with their parents. A trigger by workflow name resolves to the workflow, else the
task. What a declaration asks for that this mapping does not carry yet is refused with
``UNIMPLEMENTED`` naming it.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from stoker._core.dag import StepSpec, WorkflowSpec
from stoker._core.wire import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    ConcurrencyExpression,
    ConcurrencyLimitStrategy,
    RateLimit,
    RateLimitDuration,
    TaskConfig,
)
from stoker.db import Executor
from stoker.db.store import read as read_store
from stoker.engine.definitions import Definitions
from stoker.engine.hatchet import contracts as hc
from stoker.engine.hatchet.handlers import Caller, HatchetAuth, HatchetServicer, hatchet_rpc
from stoker.engine.ingest import Ingest, TriggerInput
from stoker.engine.ingest.workflows import ChildInput, WorkflowIngest, WorkflowTriggerInput
from stoker.engine.runs.listing import get_run
from stoker.engine.schedules import ScheduleInput, Schedules
from stoker.errors import InvalidRequestError, NotFoundError, UnsupportedFeatureError

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_NAMESPACE = uuid.UUID("6f1c2a9e-3b1d-4c57-9a3e-0d6b8f2e7c41")


def duration_ms(expr: str, what: str) -> int:
    """A Hatchet duration expression (``30s``, ``5m``, ``1h``, ``1d``) in milliseconds."""
    found = _DURATION.match(expr.strip())
    if found is None:
        raise InvalidRequestError(f"{what} {expr!r} is not a duration such as 30s, 5m or 1h")
    return int(found.group(1)) * _UNIT_MS[found.group(2)]


def _unsupported(feature: str) -> UnsupportedFeatureError:
    return UnsupportedFeatureError(
        f"Stoker's Hatchet front door does not support {feature} yet; docs/hatchet.md lists "
        "what it supports"
    )


def _refuse(checks: list[tuple[bool, str]]) -> None:
    for present, feature in checks:
        if present:
            raise _unsupported(feature)


def _task_options(req: Any, task: Any) -> TaskConfig:
    """The Stoker configuration of one Hatchet task (``CreateTaskOpts``) of ``req``."""
    _refuse(
        [
            (bool(task.worker_labels), "desired worker labels"),
            (task.is_durable, "durable tasks"),
            (task.HasField("batch"), "batch tasks"),
            (
                task.HasField("conditions") and bool(task.conditions.ListFields()),
                "task conditions",
            ),
            (
                any(k != "default" or v != 1 for k, v in task.slot_requests.items()),
                "slot requests",
            ),
        ]
    )
    options: dict[str, Any] = {
        "retries": task.retries,
        "concurrency": [_concurrency(c) for c in task.concurrency],
        "rate_limits": [_rate_limit(r) for r in task.rate_limits],
    }
    if task.HasField("backoff_factor"):
        options["backoff_factor"] = task.backoff_factor
    if task.HasField("backoff_max_seconds"):
        options["backoff_max_seconds"] = task.backoff_max_seconds
    if task.timeout:
        options["execution_timeout_ms"] = duration_ms(task.timeout, "timeout")
    if task.schedule_timeout:
        options["schedule_timeout_ms"] = duration_ms(task.schedule_timeout, "schedule_timeout")
    if req.HasField("default_priority") and req.default_priority:
        if not MIN_PRIORITY <= req.default_priority <= MAX_PRIORITY:
            raise InvalidRequestError(
                f"default_priority {req.default_priority} is outside {MIN_PRIORITY}..{MAX_PRIORITY}"
            )
        options["priority"] = req.default_priority
    return TaskConfig.model_validate(options)


_STRATEGIES = {s.value for s in ConcurrencyLimitStrategy}


def _concurrency(c: Any) -> ConcurrencyExpression:
    """A Hatchet task's concurrency limit as Stoker's (the same CEL, keys and strategies)."""
    strategy = hc.v1_workflows.ConcurrencyLimitStrategy.Name(c.limit_strategy)
    _refuse(
        [
            (c.is_tenant_scoped, "tenant-scoped concurrency"),
            (bool(c.max_runs_expression), "concurrency max_runs expressions"),
            (strategy not in _STRATEGIES, f"the {strategy} concurrency strategy"),
        ]
    )
    return ConcurrencyExpression(
        expression=c.expression,
        max_runs=c.max_runs if c.HasField("max_runs") else 1,
        limit_strategy=ConcurrencyLimitStrategy(strategy),
    )


WINDOW_MS = {"SECOND": 1_000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}
"""Hatchet's rate-limit windows that Stoker's dynamic limits have too (a static limit,
``PutRateLimit``, also takes WEEK: any window length is Stoker's)."""


def _rate_limit(r: Any) -> RateLimit:
    """A Hatchet task's rate limit as Stoker's: a static key (made with ``PutRateLimit``) or
    a dynamic CEL key with its limit and window; units an int or a CEL expression."""
    units: int | str = 1
    if r.HasField("units_expr"):
        units = r.units_expr
    elif r.HasField("units"):
        units = r.units
    if not r.HasField("key_expr"):
        return RateLimit(static_key=r.key, units=units)
    window = hc.workflows.RateLimitDuration.Name(r.duration)
    _refuse(
        [
            (not r.HasField("limit_values_expr"), "dynamic rate limits without a limit"),
            (window not in WINDOW_MS, f"dynamic rate limits per {window.lower()}"),
        ]
    )
    return RateLimit(
        dynamic_key=r.key_expr,
        units=units,
        limit=r.limit_values_expr,
        duration=RateLimitDuration(window.lower()),
    )


@dataclass(frozen=True, slots=True)
class Declared:
    """What a Hatchet ``CreateWorkflowVersionRequest`` declares in Stoker's terms: one task
    (``workflow`` None), or a Stoker workflow whose steps are the Hatchet tasks."""

    tasks: list[tuple[str, TaskConfig]]
    workflow: WorkflowSpec | None = None


def declaration(req: Any) -> Declared:
    """Stoker's definitions for a Hatchet declaration; UnsupportedFeatureError naming the
    first feature of it that the front door does not carry yet."""
    _refuse(
        [
            (not req.tasks, "workflows without tasks"),
            (bool(req.cron_triggers), "cron triggers (on_crons)"),
            (req.HasField("concurrency") or bool(req.concurrency_arr), "workflow concurrency"),
            (req.HasField("sticky"), "sticky assignment"),
            (bool(req.default_filters), "default event filters"),
            (req.HasField("idempotency"), "idempotency keys"),
        ]
    )
    handlers = [req.on_failure_task] if req.HasField("on_failure_task") else []
    tasks = [(t.action, _task_options(req, t)) for t in [*req.tasks, *handlers]]
    schema = None
    if req.input_json_schema:
        try:
            schema = json.loads(req.input_json_schema)
        except ValueError:
            raise InvalidRequestError("input_json_schema is not JSON") from None
    events = list(req.event_triggers)
    if len(req.tasks) == 1 and not req.tasks[0].parents and not handlers:
        name, config = tasks[0]
        extra = {"on_events": events, "input_schema": schema}
        return Declared([(name, config.model_copy(update=extra))])
    steps = [
        StepSpec(name=t.readable_id, task_name=t.action, parents=list(t.parents)) for t in req.tasks
    ] + [StepSpec(name=t.readable_id, task_name=t.action, role="on_failure") for t in handlers]
    return Declared(tasks, WorkflowSpec(steps=steps, on_events=events))


def readable_id(task_name: str) -> str:
    """The Hatchet task name (readable id) of a Stoker task named by an action id."""
    return task_name.partition(":")[2] or task_name


class Targets:
    """What a Hatchet workflow name triggers: a Stoker workflow of that name (a Hatchet
    workflow of several tasks), else the one Stoker task named by its action id."""

    def __init__(self, definitions: Definitions) -> None:
        self._definitions = definitions
        # The action a one-task workflow's latest declaration here named (a renamed task
        # leaves its older definition behind, so the prefix alone may be ambiguous).
        self._latest: dict[tuple[int, str], str] = {}

    def declared(self, tenant_id: int, workflow: str, action: str) -> None:
        self._latest[(tenant_id, workflow.lower())] = action

    async def target(self, tenant_id: int, workflow: str) -> tuple[str, str]:
        """``("workflow", name)`` or ``("task", name)``; NotFoundError naming the
        registered ones."""
        key = workflow.lower()
        latest = self._latest.get((tenant_id, key))
        for refresh in (False, True):
            if key in await self._definitions.workflows(tenant_id, refresh=refresh):
                return "workflow", key
            tasks = await self._definitions.tasks(tenant_id, refresh=refresh)
            if latest is not None and latest in tasks:
                return "task", latest
            found = sorted(n for n in tasks if n.partition(":")[0] == key and ":" in n)
            if len(found) == 1:
                return "task", found[0]
            if len(found) > 1:
                raise InvalidRequestError(
                    f"workflow {workflow!r} names several tasks ({', '.join(found[:5])}) "
                    "and no workflow"
                )
        known = sorted({n.partition(":")[0] for n in tasks if ":" in n})
        raise NotFoundError(
            f"workflow {workflow!r} is not registered; registered Hatchet workflows: "
            + (", ".join(known[:20]) or "none")
        )


def _check_trigger(req: Any) -> None:
    if req.parent_id and not req.parent_task_run_external_id:
        raise _unsupported("child runs of a workflow run rather than of a task")
    if req.desired_worker_labels:
        raise _unsupported("desired worker labels on a run")


class WorkflowsV0(HatchetServicer):
    """Hatchet's v0 ``WorkflowService``: the triggers the SDK sends (single, bulk and
    scheduled) and static rate limits."""

    def __init__(
        self,
        auth: HatchetAuth,
        ingest: Ingest,
        workflows: WorkflowIngest,
        targets: Targets,
        definitions: Definitions,
        db: Executor,
        schedules: Schedules,
    ) -> None:
        super().__init__(auth)
        self._schedules = schedules
        self._db = db
        self._definitions = definitions
        self._ingest = ingest
        self._workflows = workflows
        self._targets = targets

    async def _trigger(self, caller: Caller, requests: list[Any]) -> list[str]:
        tasks: list[tuple[int, TriggerInput]] = []
        flows: list[tuple[int, WorkflowTriggerInput]] = []
        children: dict[str, list[tuple[int, ChildInput]]] = {}
        for i, r in enumerate(requests):
            _check_trigger(r)
            kind, name = await self._targets.target(caller.tenant_id, r.name)
            data = (r.input or "{}").encode()
            metadata = (r.additional_metadata or "").encode()
            priority = r.priority if r.HasField("priority") else 0
            if r.parent_task_run_external_id:
                child = ChildInput(
                    name if kind == "task" else "",
                    name if kind == "workflow" else "",
                    data,
                    metadata,
                    priority,
                    r.child_index if r.HasField("child_index") else 0,
                    r.child_key if r.HasField("child_key") else "",
                )
                children.setdefault(r.parent_task_run_external_id, []).append((i, child))
            elif kind == "workflow":
                flows.append((i, WorkflowTriggerInput(name, data, metadata, priority)))
            else:
                item = TriggerInput(name, data, metadata, priority, 0, r.desired_worker_id or "")
                tasks.append((i, item))
        ids = [""] * len(requests)
        if tasks:
            made = await self._ingest.trigger(caller.tenant_id, [t for _, t in tasks])
            for (i, _), run_id in zip(tasks, made, strict=True):
                ids[i] = run_id
        if flows:
            made = await self._workflows.trigger(caller.tenant_id, [f for _, f in flows])
            for (i, _), run_id in zip(flows, made, strict=True):
                ids[i] = run_id
        for parent, items in children.items():
            # Hatchet names the parent by its task run; Stoker's spawn by its task's id.
            # A child of the same index or key that exists already is returned, not made.
            row = await get_run(self._db, caller.tenant_id, parent)
            spawned = await self._workflows.spawn(
                caller.tenant_id, int(row["id"]), [c for _, c in items]
            )
            for (i, _), (run_id, _existed) in zip(items, spawned, strict=True):
                ids[i] = run_id
        return ids

    @hatchet_rpc
    async def TriggerWorkflow(self, request: Any, caller: Caller) -> Any:
        ids = await self._trigger(caller, [request])
        return hc.workflows.TriggerWorkflowResponse(workflow_run_id=ids[0])

    @hatchet_rpc
    async def BulkTriggerWorkflow(self, request: Any, caller: Caller) -> Any:
        ids = await self._trigger(caller, list(request.workflows))
        return hc.workflows.BulkTriggerWorkflowResponse(workflow_run_ids=ids)

    @hatchet_rpc
    async def ScheduleWorkflow(self, request: Any, caller: Caller) -> Any:
        """``schedule(run_at, input)``: Stoker scheduled runs (one per time), which the
        leader fires through ingest when they fall due."""
        if request.parent_id or request.parent_task_run_external_id:
            raise _unsupported("scheduled child runs")
        kind, name = await self._targets.target(caller.tenant_id, request.name)
        items = [
            ScheduleInput(
                name if kind == "task" else "",
                name if kind == "workflow" else "",
                (request.input or "{}").encode(),
                (request.additional_metadata or "").encode(),
                request.priority if request.HasField("priority") else 0,
                int(ts.ToMilliseconds()),
            )
            for ts in request.schedules
        ]
        rows = await self._schedules.create(caller.tenant_id, items, strict=True)
        workflow_id = uuid.uuid5(_NAMESPACE, f"{caller.tenant_id}:{request.name.lower()}")
        answer = hc.workflows.WorkflowVersion(id=str(workflow_id), workflow_id=str(workflow_id))
        for row in rows:
            scheduled = answer.scheduled_workflows.add(id=str(row["external_id"]))
            scheduled.trigger_at.FromDatetime(row["run_at"])
        return answer

    @hatchet_rpc
    async def PutRateLimit(self, request: Any, caller: Caller) -> Any:
        """``hatchet.rate_limits.put``: a static rate limit, Stoker's of the same key."""
        window = hc.workflows.RateLimitDuration.Name(request.duration)
        window_ms = {**WINDOW_MS, "WEEK": 7 * 86_400_000}.get(window)
        if window_ms is None:
            raise _unsupported(f"rate limits per {window.lower()}")
        await self._definitions.put_rate_limit(
            caller.tenant_id, request.key, request.limit, window_ms
        )
        return hc.workflows.PutRateLimitResponse()


_STATUS = {
    "PENDING": "QUEUED",
    "QUEUED": "QUEUED",
    "ASSIGNED": "RUNNING",
    "RUNNING": "RUNNING",
    "EVICTED": "EVICTED",
    "COMPLETED": "COMPLETED",
    "FAILED": "FAILED",
    "CANCELLED": "CANCELLED",
}


def error_text(error: Any) -> str:
    """A stored run error as Hatchet's SDK parses one (``Type: message`` then the trace)."""
    if not isinstance(error, dict):
        return ""
    head = f"{error.get('type') or 'Exception'}: {error.get('message') or ''}"
    trace = str(error.get("traceback") or "")
    return f"{head}\n{trace}" if trace else head


def _json_bytes(value: Any) -> bytes:
    return b"" if value is None else json.dumps(value).encode()


@dataclass(frozen=True, slots=True)
class TaskRun:
    """One task of a run as Hatchet reports it."""

    readable_id: str
    external_id: str
    status: str
    output: Any
    error: str


@dataclass(frozen=True, slots=True)
class RunDetails:
    """A run as Hatchet reports it: a single task's run, or a workflow run and its steps."""

    status: str
    input: Any
    additional_metadata: Any
    tasks: list[TaskRun]

    @property
    def done(self) -> bool:
        return self.status in ("COMPLETED", "FAILED", "CANCELLED")


async def run_details(db: Executor, tenant_id: int, run_id: str) -> RunDetails:
    """The task run or workflow run ``run_id`` of the tenant; NotFoundError otherwise."""
    try:
        rid = uuid.UUID(run_id)
    except ValueError:
        raise NotFoundError(f"{run_id!r} is not a run id") from None
    flow = await read_store.api_get_workflow_run(db, read_store.ApiGetWorkflowRun(tenant_id, rid))
    if flow is None:
        row = await get_run(db, tenant_id, rid)
        task = TaskRun(
            readable_id(str(row["task_name"])),
            str(row["external_id"]),
            str(row["status"]),
            row["output"],
            error_text(row["error"]),
        )
        return RunDetails(str(row["status"]), row["input"], row["additional_metadata"], [task])
    steps = await read_store.api_workflow_steps(
        db, read_store.ApiWorkflowSteps(tenant_id, int(flow["id"]))
    )
    return RunDetails(
        str(flow["status"]),
        flow["input"],
        flow["additional_metadata"],
        [
            TaskRun(
                str(r["step"]),
                str(r["external_id"]),
                str(r["status"]),
                r["output"],
                error_text(r["error"]),
            )
            for r in steps
            if not r["skipped"]  # an on_failure step of a run that did not fail, say
        ],
    )


class AdminV1(HatchetServicer):
    """Hatchet's v1 ``AdminService``: workflow declarations and run details."""

    def __init__(
        self, auth: HatchetAuth, db: Executor, definitions: Definitions, targets: Targets
    ) -> None:
        super().__init__(auth)
        self._db = db
        self._definitions = definitions
        self._targets = targets

    @hatchet_rpc
    async def PutWorkflow(self, request: Any, caller: Caller) -> Any:
        declared = declaration(request)
        defs = [(n, c.model_dump_json(exclude_defaults=True).encode()) for n, c in declared.tasks]
        if declared.workflow is None:
            await self._definitions.register_tasks(caller.tenant_id, defs)
            self._targets.declared(caller.tenant_id, request.name, declared.tasks[0][0])
            version = declared.tasks[0][1].model_dump_json()
        else:
            spec = declared.workflow.model_dump_json().encode()
            await self._definitions.register_workflows(
                caller.tenant_id, [(request.name.lower(), spec, defs)]
            )
            version = declared.workflow.hash()
        workflow_id = uuid.uuid5(_NAMESPACE, f"{caller.tenant_id}:{request.name.lower()}")
        return hc.v1_workflows.CreateWorkflowVersionResponse(
            id=str(uuid.uuid5(workflow_id, version)), workflow_id=str(workflow_id)
        )

    @hatchet_rpc
    async def GetRunDetails(self, request: Any, caller: Caller) -> Any:
        run = await run_details(self._db, caller.tenant_id, request.external_id)
        return hc.v1_workflows.GetRunDetailsResponse(
            input=_json_bytes(run.input),
            status=getattr(hc.v1_workflows, _STATUS[run.status]),
            task_runs={
                t.readable_id: hc.v1_workflows.TaskRunDetail(
                    external_id=t.external_id,
                    status=getattr(hc.v1_workflows, _STATUS[t.status]),
                    error=t.error,
                    output=_json_bytes(t.output),
                    readable_id=t.readable_id,
                )
                for t in run.tasks
            },
            done=run.done,
            additional_metadata=_json_bytes(run.additional_metadata),
        )
