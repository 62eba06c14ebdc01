"""Ingest: accepts task definitions and triggers, and writes runs in batches.

A trigger call is validated at once (known task, payload size, JSON), then parked in a
buffer; the flusher writes everything buffered, from every caller, in one transaction per
tenant every ``flush_interval_ms`` (or as soon as ``flush_max_items`` are waiting) and only
then answers the callers, so an accepted run is durably stored. The scheduler in this
process is then woken directly.

Runs inserted by other means (a client's own transaction, another replica) reach the queue
through the same ``queue_item`` table, which the scheduler also polls, so it never depends
on this buffer.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import ValidationError

from stoker._wire import MAX_PRIORITY, MIN_PRIORITY, TaskConfig
from stoker.db import Executor
from stoker.engine.service import LoopService, Signal
from stoker.errors import InvalidRequestError, PayloadTooLargeError, UnknownTaskError


@dataclass(frozen=True, slots=True)
class UpsertDefsParams:
    tenant_id: int
    names: list[str]
    configs: list[str]


@dataclass(frozen=True, slots=True)
class TenantParams:
    tenant_id: int


@dataclass(frozen=True, slots=True)
class InsertTasksParams:
    tenant_id: int
    external_ids: list[uuid.UUID]
    task_names: list[str]
    priorities: list[int]
    inputs: list[str]
    metadata: list[str]
    max_retries: list[int]
    backoff_factors: list[float | None]
    backoff_max_ms: list[int]
    execution_timeouts_ms: list[int]
    schedule_timeouts_ms: list[int]
    run_at: list[datetime | None]


@dataclass(frozen=True, slots=True)
class TriggerInput:
    """One run to create, as received."""

    task_name: str
    input: bytes
    additional_metadata: bytes = b""
    priority: int = 0
    run_at_ms: int = 0


@dataclass(slots=True)
class _Pending:
    tenant_id: int
    rows: list[tuple[uuid.UUID, str, TaskConfig, TriggerInput]]
    done: asyncio.Future[list[str]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


_DEFS_TTL_S = 5.0


class Ingest(LoopService):
    """Validates triggers and writes them to the queue in batches."""

    name = "ingest"

    def __init__(
        self,
        db: Executor,
        *,
        max_payload_bytes: int,
        flush_interval_ms: float,
        flush_max_items: int,
        on_enqueued: Callable[[set[int]], None],
    ) -> None:
        super().__init__()
        self._db = db
        self._max_payload = max_payload_bytes
        self._interval = flush_interval_ms / 1000
        self._max_items = flush_max_items
        self._on_enqueued = on_enqueued
        self._pending: list[_Pending] = []
        self._pending_items = 0
        self._signal = Signal()
        self._defs: dict[int, tuple[float, dict[str, TaskConfig]]] = {}

    # -- task definitions -------------------------------------------------------------

    async def register_tasks(self, tenant_id: int, defs: list[tuple[str, bytes]]) -> None:
        configs: list[str] = []
        for name, raw in defs:
            if not name or len(name) > 200:
                raise InvalidRequestError(f"task name {name!r} must be 1 to 200 characters")
            try:
                configs.append(TaskConfig.model_validate_json(raw or b"{}").model_dump_json())
            except ValidationError as exc:
                raise InvalidRequestError(
                    f"task {name!r} has an invalid configuration: {exc}"
                ) from None
        await self._db.execute(
            "upsert_task_defs", UpsertDefsParams(tenant_id, [n for n, _ in defs], configs)
        )
        self._defs.pop(tenant_id, None)

    async def task_defs(self, tenant_id: int, *, refresh: bool = False) -> dict[str, TaskConfig]:
        cached = self._defs.get(tenant_id)
        if cached and not refresh and cached[0] > time.monotonic():
            return cached[1]
        rows = await self._db.fetch("get_task_defs", TenantParams(tenant_id))
        defs = {r["name"]: TaskConfig.model_validate(r["config"]) for r in rows}
        self._defs[tenant_id] = (time.monotonic() + _DEFS_TTL_S, defs)
        return defs

    # -- triggers ---------------------------------------------------------------------

    async def trigger(self, tenant_id: int, items: list[TriggerInput]) -> list[str]:
        """Creates the runs and returns their external ids once they are stored."""
        if not items:
            return []
        defs = await self.task_defs(tenant_id)
        if any(i.task_name not in defs for i in items):
            defs = await self.task_defs(tenant_id, refresh=True)
        rows = []
        for item in items:
            config = defs.get(item.task_name)
            if config is None:
                known = ", ".join(sorted(defs)) or "none"
                raise UnknownTaskError(
                    f"no task named {item.task_name!r} is registered; registered tasks: {known}"
                )
            self._check_payload(item)
            rows.append((uuid.uuid4(), item.task_name, config, item))
        pending = _Pending(tenant_id, rows)
        self._pending.append(pending)
        self._pending_items += len(rows)
        if self._pending_items >= self._max_items:
            self._signal.set()
        return await pending.done

    def _check_payload(self, item: TriggerInput) -> None:
        for what, raw in (("input", item.input), ("additional_metadata", item.additional_metadata)):
            if len(raw) > self._max_payload:
                raise PayloadTooLargeError(
                    f"{item.task_name}: {what} is {len(raw)} bytes, over the limit of "
                    f"{self._max_payload} bytes"
                )
            if raw:
                try:
                    value = json.loads(raw)
                except ValueError as exc:
                    raise InvalidRequestError(
                        f"{item.task_name}: {what} is not JSON: {exc}"
                    ) from None
                if what == "additional_metadata" and not isinstance(value, dict):
                    raise InvalidRequestError(
                        f"{item.task_name}: additional_metadata must be an object"
                    )
        if item.priority and not MIN_PRIORITY <= item.priority <= MAX_PRIORITY:
            raise InvalidRequestError(
                f"{item.task_name}: priority {item.priority} is outside "
                f"{MIN_PRIORITY}..{MAX_PRIORITY}"
            )

    async def run(self) -> None:
        while not self.stopping.is_set():
            await self._signal.wait(self._interval)
            if self._pending:
                await self.flush()
        await self.flush()

    async def flush(self) -> None:
        batch, self._pending, self._pending_items = self._pending, [], 0
        by_tenant: dict[int, list[_Pending]] = {}
        for p in batch:
            by_tenant.setdefault(p.tenant_id, []).append(p)
        for tenant_id, group in by_tenant.items():
            try:
                await self._db.execute("insert_tasks", _insert_params(tenant_id, group))
            except Exception as exc:
                for p in group:
                    if not p.done.done():
                        p.done.set_exception(exc)
                continue
            for p in group:
                if not p.done.done():
                    p.done.set_result([str(r[0]) for r in p.rows])
        if by_tenant:
            self._on_enqueued(set(by_tenant))


def _insert_params(tenant_id: int, group: list[_Pending]) -> InsertTasksParams:
    p = InsertTasksParams(tenant_id, [], [], [], [], [], [], [], [], [], [], [])
    for pending in group:
        for external_id, name, config, item in pending.rows:
            p.external_ids.append(external_id)
            p.task_names.append(name)
            p.priorities.append(item.priority or config.priority)
            p.inputs.append(item.input.decode() if item.input else "null")
            p.metadata.append(
                item.additional_metadata.decode() if item.additional_metadata else "{}"
            )
            p.max_retries.append(config.retries)
            p.backoff_factors.append(config.backoff_factor)
            p.backoff_max_ms.append(int(config.backoff_max_seconds * 1000))
            p.execution_timeouts_ms.append(config.execution_timeout_ms)
            p.schedule_timeouts_ms.append(config.schedule_timeout_ms)
            p.run_at.append(
                datetime.fromtimestamp(item.run_at_ms / 1000, UTC) if item.run_at_ms else None
            )
    return p
