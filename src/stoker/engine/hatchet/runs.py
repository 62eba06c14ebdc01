"""Hatchet's workflow declarations, triggers and run results, mapped onto Stoker's own
definitions registry, ingest and run reads.

A Hatchet workflow of one task (what ``@hatchet.task()`` declares) is registered as a
Stoker task named by the task's Hatchet action id, ``<workflow name, lower case>:<task
name>``: the name the Hatchet worker registers for, so the scheduler places its runs on
Hatchet workers as on Stoker ones, and Stoker's SDK, REST API and dashboard see the runs
under that name. A trigger by workflow name resolves to that task. What a declaration asks
for that this mapping does not carry yet is refused with ``UNIMPLEMENTED`` naming it.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from stoker._core.wire import MAX_PRIORITY, MIN_PRIORITY, TaskConfig
from stoker.db import Executor
from stoker.engine.definitions import Definitions
from stoker.engine.hatchet import contracts as hc
from stoker.engine.hatchet.handlers import Caller, HatchetAuth, HatchetServicer, hatchet_rpc
from stoker.engine.ingest import Ingest, TriggerInput
from stoker.engine.runs.listing import get_run
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


def task_config(req: Any) -> tuple[str, TaskConfig]:
    """The Stoker task a Hatchet ``CreateWorkflowVersionRequest`` declares: its name (the
    action id) and configuration; UnsupportedFeatureError naming the first feature of the
    declaration that the front door does not carry yet."""
    if len(req.tasks) != 1:
        raise _unsupported(f"workflows of {len(req.tasks)} tasks (DAG workflows)")
    task = req.tasks[0]
    refused = [
        (bool(task.parents), "DAG parents"),
        (bool(req.cron_triggers), "cron triggers (on_crons)"),
        (req.HasField("on_failure_task"), "on_failure tasks"),
        (req.HasField("concurrency") or bool(req.concurrency_arr), "workflow concurrency"),
        (bool(task.concurrency), "task concurrency"),
        (bool(task.rate_limits), "rate limits"),
        (bool(task.worker_labels), "desired worker labels"),
        (req.HasField("sticky"), "sticky assignment"),
        (bool(req.default_filters), "default event filters"),
        (req.HasField("idempotency"), "idempotency keys"),
        (task.is_durable, "durable tasks"),
        (task.HasField("batch"), "batch tasks"),
        (task.HasField("conditions") and bool(task.conditions.ListFields()), "task conditions"),
        (any(k != "default" or v != 1 for k, v in task.slot_requests.items()), "slot requests"),
    ]
    for present, feature in refused:
        if present:
            raise _unsupported(feature)
    options: dict[str, Any] = {"retries": task.retries, "on_events": list(req.event_triggers)}
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
    if req.input_json_schema:
        try:
            options["input_schema"] = json.loads(req.input_json_schema)
        except ValueError:
            raise InvalidRequestError("input_json_schema is not JSON") from None
    return task.action, TaskConfig.model_validate(options)


def readable_id(task_name: str) -> str:
    """The Hatchet task name (readable id) of a Stoker task named by an action id."""
    return task_name.partition(":")[2] or task_name


class Targets:
    """Which Stoker task a Hatchet workflow name triggers, read from the definitions."""

    def __init__(self, definitions: Definitions) -> None:
        self._definitions = definitions
        # The action a workflow's latest declaration here named (a renamed task leaves its
        # older definition behind, so the prefix alone may be ambiguous).
        self._latest: dict[tuple[int, str], str] = {}

    def declared(self, tenant_id: int, workflow: str, action: str) -> None:
        self._latest[(tenant_id, workflow.lower())] = action

    async def task_of(self, tenant_id: int, workflow: str) -> str:
        """The Stoker task of ``workflow``; NotFoundError naming the registered ones."""
        key = workflow.lower()
        latest = self._latest.get((tenant_id, key))
        for refresh in (False, True):
            tasks = await self._definitions.tasks(tenant_id, refresh=refresh)
            if latest is not None and latest in tasks:
                return latest
            found = sorted(n for n in tasks if n.partition(":")[0] == key and ":" in n)
            if len(found) == 1:
                return found[0]
            if len(found) > 1:
                raise InvalidRequestError(
                    f"workflow {workflow!r} names several tasks ({', '.join(found[:5])}); "
                    "Stoker's Hatchet front door runs workflows of one task"
                )
        known = sorted({n.partition(":")[0] for n in tasks if ":" in n})
        raise NotFoundError(
            f"workflow {workflow!r} is not registered; registered Hatchet workflows: "
            + (", ".join(known[:20]) or "none")
        )


def _trigger_input(req: Any, task_name: str) -> TriggerInput:
    """A Stoker trigger of ``task_name`` from a Hatchet ``TriggerWorkflowRequest``."""
    if req.parent_id or req.parent_task_run_external_id:
        raise _unsupported("child runs spawned from a task")
    if req.desired_worker_labels:
        raise _unsupported("desired worker labels on a run")
    return TriggerInput(
        task_name,
        (req.input or "{}").encode(),
        (req.additional_metadata or "").encode(),
        req.priority if req.HasField("priority") else 0,
        0,
        req.desired_worker_id or "",
    )


class WorkflowsV0(HatchetServicer):
    """Hatchet's v0 ``WorkflowService``: the triggers the SDK sends (single and bulk)."""

    def __init__(self, auth: HatchetAuth, ingest: Ingest, targets: Targets) -> None:
        super().__init__(auth)
        self._ingest = ingest
        self._targets = targets

    async def _trigger(self, caller: Caller, requests: list[Any]) -> list[str]:
        items = [
            _trigger_input(r, await self._targets.task_of(caller.tenant_id, r.name))
            for r in requests
        ]
        return list(await self._ingest.trigger(caller.tenant_id, items))

    @hatchet_rpc
    async def TriggerWorkflow(self, request: Any, caller: Caller) -> Any:
        ids = await self._trigger(caller, [request])
        return hc.workflows.TriggerWorkflowResponse(workflow_run_id=ids[0])

    @hatchet_rpc
    async def BulkTriggerWorkflow(self, request: Any, caller: Caller) -> Any:
        ids = await self._trigger(caller, list(request.workflows))
        return hc.workflows.BulkTriggerWorkflowResponse(workflow_run_ids=ids)


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
        name, config = task_config(request)
        await self._definitions.register_tasks(
            caller.tenant_id, [(name, config.model_dump_json(exclude_defaults=True).encode())]
        )
        self._targets.declared(caller.tenant_id, request.name, name)
        workflow_id = uuid.uuid5(_NAMESPACE, f"{caller.tenant_id}:{request.name.lower()}")
        return hc.v1_workflows.CreateWorkflowVersionResponse(
            id=str(uuid.uuid5(workflow_id, config.model_dump_json())),
            workflow_id=str(workflow_id),
        )

    @hatchet_rpc
    async def GetRunDetails(self, request: Any, caller: Caller) -> Any:
        row = await get_run(self._db, caller.tenant_id, request.external_id)
        status = getattr(hc.v1_workflows, _STATUS[str(row["status"])])
        done = str(row["status"]) in ("COMPLETED", "FAILED", "CANCELLED")
        detail = hc.v1_workflows.TaskRunDetail(
            external_id=str(row["external_id"]),
            status=status,
            error=error_text(row["error"]),
            output=_json_bytes(row["output"]),
            readable_id=readable_id(str(row["task_name"])),
        )
        return hc.v1_workflows.GetRunDetailsResponse(
            input=_json_bytes(row["input"]),
            status=status,
            task_runs={detail.readable_id: detail},
            done=done,
            additional_metadata=_json_bytes(row["additional_metadata"]),
        )
