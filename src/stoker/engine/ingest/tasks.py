"""Task runs as ingest writes them: what a trigger carries, the checks every run's payload
passes, and the one function that inserts task rows (:func:`write_task_runs`), used by
every writer in the flush (task triggers, workflow steps, children).

A run is created QUEUED (made ready by ``make_tasks_ready`` in the same statement: its
queue item, or its wait for concurrency admission), PENDING (a workflow step waiting for its
parents) or FAILED (its policy expression failed on its input).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from stoker._core.wire import MAX_PRIORITY, MIN_PRIORITY, TaskConfig, json_problem
from stoker.db import Executor
from stoker.db.store import rate_limits as rate_limit_store
from stoker.db.store import tasks as task_store
from stoker.engine import metrics
from stoker.engine.definitions import RunPolicy
from stoker.errors import InvalidRequestError, PayloadTooLargeError

if TYPE_CHECKING:
    from stoker.engine.signals import Outbox

MAX_RUN_AT_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last datetime


@dataclass(frozen=True, slots=True)
class TriggerInput:
    """One run to create, as received."""

    task_name: str
    input: bytes
    additional_metadata: bytes = b""
    priority: int = 0
    run_at_ms: int = 0
    desired_worker_id: str = ""
    idempotency_key: str = ""
    idempotency_ttl_ms: int = 0


@dataclass(frozen=True, slots=True)
class NewTaskRun:
    """One task row to create, validated, with its policy evaluated. ``pending``: a
    workflow step created waiting for its parents (no queue item or admission yet)."""

    external_id: uuid.UUID
    config: TaskConfig
    item: TriggerInput
    policy: RunPolicy
    desired_worker_id: int | None = None
    pending: bool = False


async def write_task_runs(
    tx: Executor, tenant_id: int, runs: list[NewTaskRun], out: Outbox
) -> bool:
    """Inserts task runs (their dynamic rate limits first) inside ``tx``; True when some
    run now waits for concurrency admission. They are counted in the metrics once ``tx``
    commits (``out`` is its outbox)."""
    params = insert_params(tenant_id, runs)
    dynamic = _dynamic_limits(tenant_id, runs)
    if dynamic.keys:
        await rate_limit_store.ensure_dynamic_rate_limits(tx, dynamic)
    await task_store.insert_tasks.send(tx, params)
    out.after_commit(lambda: metrics.created(tenant_id, params.task_names))
    if metrics.metadata_labels_on():
        labelled = [(r.item.task_name, r.item.additional_metadata) for r in runs]
        out.after_commit(lambda: metrics.created_with_metadata(tenant_id, labelled))
    return _gated(params)


def _gated(params: task_store.InsertTasks) -> bool:
    """Whether some run waits for concurrency admission (the scheduler must look)."""
    return any(
        k is not None and s == "QUEUED"
        for k, s in zip(params.concurrency_keys, params.statuses, strict=True)
    )


def insert_params(tenant_id: int, runs: list[NewTaskRun]) -> task_store.InsertTasks:
    """The ``insert_tasks`` parameters for ``runs``."""
    columns = len(dataclasses.fields(task_store.InsertTasks)) - 1
    p = task_store.InsertTasks(tenant_id, *([] for _ in range(columns)))
    for row in runs:
        item, config, policy = row.item, row.config, row.policy
        p.external_ids.append(row.external_id)
        p.task_names.append(item.task_name)
        p.priorities.append(item.priority or config.priority)
        p.inputs.append(item.input.decode() if item.input else "null")
        p.metadata.append(item.additional_metadata.decode() if item.additional_metadata else "{}")
        p.max_retries.append(config.retries)
        p.backoff_factors.append(config.backoff_factor)
        p.backoff_max_ms.append(int(config.backoff_max_seconds * 1000))
        p.execution_timeouts_ms.append(config.execution_timeout_ms)
        p.schedule_timeouts_ms.append(config.schedule_timeout_ms)
        p.run_at.append(
            datetime.fromtimestamp(item.run_at_ms / 1000, UTC) if item.run_at_ms else None
        )
        p.statuses.append("FAILED" if policy.error else "PENDING" if row.pending else "QUEUED")
        p.errors.append(
            json.dumps({"type": "PolicyError", "message": policy.error, "traceback": ""})
            if policy.error
            else None
        )
        p.rate_limits.append(policy.rate_limits_json)
        p.desired_worker_ids.append(row.desired_worker_id)
        p.concurrency_keys.append(policy.concurrency_keys_json)
    return p


def _dynamic_limits(
    tenant_id: int, runs: list[NewTaskRun]
) -> rate_limit_store.EnsureDynamicRateLimits:
    found: dict[str, tuple[int, int]] = {}
    for row in runs:
        for r in row.policy.rate_limits:
            if "limit" in r:
                found[r["key"]] = (r["limit"], r["window_ms"])
    keys = sorted(found)
    return rate_limit_store.EnsureDynamicRateLimits(
        tenant_id, keys, [found[k][0] for k in keys], [found[k][1] for k in keys]
    )


def check_payload(
    item: TriggerInput,
    max_payload_bytes: int,
    *,
    subject: str | None = None,
    input_name: str = "input",
) -> None:
    """InvalidRequestError / PayloadTooLargeError for an input or metadata that is not
    JSON PostgreSQL can store (:func:`~stoker._core.wire.json_problem`: nesting, NUL,
    lone surrogates), too large, or a priority or start time out of range.

    Messages start with ``subject`` (default: the task name) and call the input
    ``input_name`` (an event's is its ``payload``).
    """
    who = subject or item.task_name
    for what, raw in (
        (input_name, item.input),
        ("additional_metadata", item.additional_metadata),
    ):
        if len(raw) > max_payload_bytes:
            raise PayloadTooLargeError(
                f"{who}: {what} is {len(raw)} bytes, over the limit of {max_payload_bytes} bytes"
            )
        if raw:
            problem = json_problem(raw)
            if problem is not None:
                raise InvalidRequestError(f"{who}: {what} is refused: {problem}")
            if what == "additional_metadata" and not raw.lstrip().startswith(b"{"):
                raise InvalidRequestError(f"{who}: additional_metadata must be an object")
    if item.priority and not MIN_PRIORITY <= item.priority <= MAX_PRIORITY:
        raise InvalidRequestError(
            f"{who}: priority {item.priority} is outside {MIN_PRIORITY}..{MAX_PRIORITY}"
        )
    if not 0 <= item.run_at_ms <= MAX_RUN_AT_MS:
        raise InvalidRequestError(
            f"{who}: run_at_ms {item.run_at_ms} is not a time between 1970 and 9999"
        )
