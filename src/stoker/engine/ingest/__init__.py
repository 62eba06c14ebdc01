"""Ingest: accepts task definitions and triggers, and writes runs in batches.

A trigger call is validated at once (known task, payload size, JSON), then parked in a
buffer; the flusher writes everything buffered, from every caller, in one transaction per
tenant (group commit: what arrives while a flush runs is the next batch; an optional
``flush_interval_ms`` lingers for more, ``flush_max_items`` caps it), and only then answers
the callers, so an accepted run is durably stored. The scheduler in this
process is then woken directly.

Runs inserted by other means (a client's own transaction, another replica) reach the queue
through the same ``queue_item`` table, which the scheduler also polls, so it never depends
on this buffer.

The seam for other kinds of runs (workflow runs, in :mod:`stoker.engine.ingest.workflows`):
they are validated by their own ingest with :meth:`Ingest.check_payload`,
:meth:`Ingest.policy` and :meth:`Ingest.static_keys_for`, and then parked in the same buffer
with :meth:`Ingest.submit` and a :data:`BatchWriter`, which the flusher calls once per
tenant with every caller's items, inside the same transaction as the task triggers. Task
rows are written by :func:`write_task_runs` whoever makes them, and
the flush's :class:`~stoker.engine.signals.Outbox` (handed to every writer) says which
runs were queued once the transaction commits.

Idempotency: a call may carry a request key (:mod:`stoker.engine.ingest.requests`). The
flush records the keys of every call it writes in the same transaction as their runs
(:func:`~stoker.engine.ingest.requests.claim`), before writing them; a call whose key is
recorded already (committed by an earlier flush or another replica, or earlier in the same
batch) writes nothing and answers with the first call's ids, and one whose key was used
with other content is refused with InvalidRequestError.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from stoker._core.wire import MAX_PRIORITY, MIN_PRIORITY, TaskConfig, json_problem, text_problem
from stoker.db import Executor, NoParams
from stoker.db.store import concurrency as concurrency_store
from stoker.db.store import queue as queue_store
from stoker.db.store import rate_limits as rate_limit_store
from stoker.db.store import tasks as task_store
from stoker.db.store import workers as worker_store
from stoker.engine import faults
from stoker.engine.ingest import requests
from stoker.engine.ingest.policy import RunPolicy, Strategy, evaluate_policy
from stoker.engine.ingest.requests import RequestKey
from stoker.engine.service import LoopService
from stoker.engine.signals import Outbox, Signals
from stoker.errors import InvalidRequestError, PayloadTooLargeError, UnknownTaskError

log = logging.getLogger("stoker.engine.ingest")


@dataclass(frozen=True, slots=True)
class TriggerInput:
    """One run to create, as received."""

    task_name: str
    input: bytes
    additional_metadata: bytes = b""
    priority: int = 0
    run_at_ms: int = 0
    desired_worker_id: str = ""


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


BatchWriter = Callable[[Executor, Outbox, int, list[Any]], Awaitable[None]]
"""Writes one tenant's parked items of one kind inside the flush's transaction, telling
what it queued through the transaction's outbox."""


@dataclass(slots=True)
class _Pending:
    tenant_id: int
    rows: list[NewTaskRun]
    ids: list[str]
    request: RequestKey | None = None
    writer: BatchWriter | None = None
    items: list[Any] = field(default_factory=list)
    done: asyncio.Future[list[str]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


_DEFS_TTL_S = 5.0
MAX_RUN_AT_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last datetime
# After this many runs enqueued since the last time (and at most every few seconds), the
# queue's statistics are refreshed so that claims keep their index plan (analyze_queue).
ANALYZE_AFTER_INSERTS = 10_000
_ANALYZE_EVERY_S = 5.0


class Ingest(LoopService):
    """Validates triggers and writes them to the queue in batches."""

    name = "ingest"

    def __init__(
        self,
        db: Executor,
        signals: Signals,
        *,
        max_payload_bytes: int,
        flush_interval_ms: float,
        flush_max_items: int,
    ) -> None:
        super().__init__()
        self._db = db
        self._run_signals = signals
        self._max_payload = max_payload_bytes
        self._interval = flush_interval_ms / 1000
        self._max_items = flush_max_items
        self._pending: list[_Pending] = []
        self._pending_items = 0
        self._work = self.signal()
        self._full = self.signal()
        self._defs: dict[int, tuple[float, dict[str, TaskConfig]]] = {}
        self._strategies: dict[int, dict[str, list[Strategy]]] = {}
        self._static_limits: dict[int, tuple[float, set[str]]] = {}
        self._inserted = 0
        self._analyzed_at = 0.0
        self._analyze: asyncio.Task[None] | None = None

    # -- task definitions -------------------------------------------------------------

    async def register_tasks(self, tenant_id: int, defs: list[tuple[str, bytes]]) -> None:
        configs: list[str] = []
        seen: set[str] = set()
        for name, raw in defs:
            if name in seen:
                raise InvalidRequestError(f"task {name!r} is declared twice in one registration")
            seen.add(name)
            if not name or len(name) > 200 or text_problem(name):
                raise InvalidRequestError(
                    f"task name {name!r} must be 1 to 200 characters, without NUL"
                )
            try:
                configs.append(TaskConfig.model_validate_json(raw or b"{}").model_dump_json())
            except ValidationError as exc:
                raise InvalidRequestError(
                    f"task {name!r} has an invalid configuration: {exc}"
                ) from None
        async with self._db.transaction() as tx:
            await task_store.upsert_task_defs(
                tx, task_store.UpsertTaskDefs(tenant_id, [n for n, _ in defs], configs)
            )
            strategies = concurrency_store.UpsertConcurrencyStrategies(
                tenant_id, [], [], [], [], []
            )
            for name, config_json in zip([n for n, _ in defs], configs, strict=True):
                for idx, c in enumerate(TaskConfig.model_validate_json(config_json).concurrency):
                    strategies.scopes.append(name)
                    strategies.idx.append(idx)
                    strategies.expressions.append(c.expression)
                    strategies.max_runs.append(c.max_runs)
                    strategies.limit_strategies.append(c.limit_strategy.value)
            if strategies.scopes:
                await concurrency_store.upsert_concurrency_strategies(tx, strategies)
        self._defs.pop(tenant_id, None)

    async def put_rate_limit(self, tenant_id: int, key: str, limit: int, window_ms: int) -> None:
        """Creates or updates a static rate limit."""
        if not key or len(key) > 200 or text_problem(key):
            raise InvalidRequestError(
                f"rate limit key {key!r} must be 1 to 200 characters, without NUL"
            )
        if limit < 1 or window_ms < 1:
            raise InvalidRequestError("a rate limit needs limit >= 1 and a positive duration")
        await rate_limit_store.put_rate_limit(
            self._db, rate_limit_store.PutRateLimit(tenant_id, key, limit, window_ms)
        )
        self._static_limits.pop(tenant_id, None)
        self._run_signals.capacity(tenant_id)

    async def static_keys_for(
        self, tenant_id: int, task_names: set[str], defs: dict[str, TaskConfig]
    ) -> set[str]:
        """The tenant's static rate-limit keys, re-read when the tasks name one not cached
        (so :meth:`policy` sees a limit created a moment ago)."""
        wanted = {
            r.static_key
            for name in task_names
            for r in defs[name].rate_limits
            if r.static_key is not None
        }
        if not wanted:
            return set()
        keys = await self._static_keys(tenant_id, refresh=False)
        return keys if wanted <= keys else await self._static_keys(tenant_id, refresh=True)

    async def _static_keys(self, tenant_id: int, refresh: bool) -> set[str]:
        cached = self._static_limits.get(tenant_id)
        if cached and not refresh and cached[0] > time.monotonic():
            return cached[1]
        rows = await rate_limit_store.static_rate_limit_keys(
            self._db, rate_limit_store.StaticRateLimitKeys(tenant_id)
        )
        keys = {str(r["key"]) for r in rows}
        self._static_limits[tenant_id] = (time.monotonic() + _DEFS_TTL_S, keys)
        return keys

    async def task_defs(self, tenant_id: int, *, refresh: bool = False) -> dict[str, TaskConfig]:
        cached = self._defs.get(tenant_id)
        if cached and not refresh and cached[0] > time.monotonic():
            return cached[1]
        rows = await task_store.get_task_defs(self._db, task_store.GetTaskDefs(tenant_id))
        defs = {r["name"]: TaskConfig.model_validate(r["config"]) for r in rows}
        strategies: dict[str, list[Strategy]] = {}
        for r in await concurrency_store.get_concurrency_strategies(
            self._db, concurrency_store.GetConcurrencyStrategies(tenant_id)
        ):
            strategies.setdefault(r["scope"], []).append(Strategy(int(r["id"]), int(r["idx"])))
        self._strategies[tenant_id] = strategies
        self._defs[tenant_id] = (time.monotonic() + _DEFS_TTL_S, defs)
        return defs

    def policy(
        self, tenant_id: int, task_name: str, config: TaskConfig, raw: bytes, metadata: bytes
    ) -> RunPolicy:
        """A new run's concurrency keys and rate-limit units (or the error that fails it),
        from the caches :meth:`task_defs` and :meth:`static_keys_for` filled."""
        if not config.concurrency and not config.rate_limits:
            return RunPolicy()
        strategies = self._strategies.get(tenant_id, {}).get(task_name, [])
        cached = self._static_limits.get(tenant_id)
        static_keys = cached[1] if cached else set()
        return evaluate_policy(task_name, config, strategies, raw, metadata, static_keys)

    # -- triggers ---------------------------------------------------------------------

    async def trigger(
        self, tenant_id: int, items: list[TriggerInput], request: RequestKey | None = None
    ) -> list[str]:
        """Creates the runs and returns their external ids once they are stored (a retry
        of a call with the same ``request`` key: the first call's ids, nothing created)."""
        if not items:
            return []
        defs = await self.task_defs(tenant_id)
        if any(i.task_name not in defs for i in items):
            defs = await self.task_defs(tenant_id, refresh=True)
        for item in items:
            if item.task_name not in defs:
                known = ", ".join(sorted(defs)) or "none"
                raise UnknownTaskError(
                    f"no task named {item.task_name!r} is registered; registered tasks: {known}"
                )
            self.check_payload(item)
        workers = await self._desired_workers(tenant_id, items)
        await self.static_keys_for(tenant_id, {i.task_name for i in items}, defs)
        rows = [
            NewTaskRun(
                uuid.uuid4(),
                defs[item.task_name],
                item,
                self.policy(
                    tenant_id,
                    item.task_name,
                    defs[item.task_name],
                    item.input,
                    item.additional_metadata,
                ),
                workers.get(item.desired_worker_id),
            )
            for item in items
        ]
        ids = [str(r.external_id) for r in rows]
        return await self._park(_Pending(tenant_id, rows, ids, request), len(rows))

    async def submit(
        self,
        tenant_id: int,
        writer: BatchWriter,
        items: list[Any],
        ids: list[str],
        request: RequestKey | None = None,
    ) -> list[str]:
        """Parks validated items of another kind (e.g. workflow runs) for the next flush,
        which writes every caller's items of this tenant with one ``writer`` call in its
        transaction; returns ``ids`` once they are stored (or, for a retry of a call with
        the same ``request`` key, the first call's ids, and writes nothing)."""
        return await self._park(_Pending(tenant_id, [], ids, request, writer, items), len(items))

    async def _park(self, pending: _Pending, n: int) -> list[str]:
        self._pending.append(pending)
        self._pending_items += n
        self._work.set()
        if self._pending_items >= self._max_items:
            self._full.set()
        return await pending.done

    async def _desired_workers(self, tenant_id: int, items: list[TriggerInput]) -> dict[str, int]:
        """Internal ids of the workers the runs name; InvalidRequestError for unknown ones."""
        wanted = {i.desired_worker_id for i in items if i.desired_worker_id}
        if not wanted:
            return {}
        try:
            ids = [uuid.UUID(w) for w in wanted]
        except ValueError:
            raise InvalidRequestError(
                f"desired_worker_id must be worker ids, got {wanted}"
            ) from None
        rows = await worker_store.worker_ids_by_external(
            self._db, worker_store.WorkerIdsByExternal(tenant_id, ids)
        )
        found = {str(r["external_id"]): int(r["id"]) for r in rows}
        missing = wanted - set(found)
        if missing:
            raise InvalidRequestError(f"no worker with id {', '.join(sorted(missing))}")
        return found

    def check_payload(
        self, item: TriggerInput, *, subject: str | None = None, input_name: str = "input"
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
            if len(raw) > self._max_payload:
                raise PayloadTooLargeError(
                    f"{who}: {what} is {len(raw)} bytes, over the limit of "
                    f"{self._max_payload} bytes"
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

    async def run(self) -> None:
        while not self.stopping.is_set():
            # Sleep until a trigger arrives; optionally let the batch fill for
            # flush_interval_ms. With 0 (the default) this is group commit: what arrives
            # while a flush runs forms the next batch, so batches grow with load only.
            if not self._pending:
                await self._work.wait()
            if self._interval and self._pending and self._pending_items < self._max_items:
                await self._full.wait(self._interval)
            if self._pending:
                await self.flush()
        await self.flush()
        if self._analyze is not None:
            await asyncio.gather(self._analyze, return_exceptions=True)

    async def flush(self) -> None:
        batch, self._pending, self._pending_items = self._pending, [], 0
        by_tenant: dict[int, list[_Pending]] = {}
        for p in batch:
            by_tenant.setdefault(p.tenant_id, []).append(p)
        for tenant_id, group in by_tenant.items():
            # One transaction for every caller of the tenant; if one caller's runs make it
            # fail, the callers are split apart so that only that caller gets the error
            # (faults.isolate). An outage fails the callers not yet written as
            # unavailable: nothing of theirs was stored, so their retry is safe.
            result = await faults.isolate(
                group,
                functools.partial(self._write, tenant_id),
                what=f"writing the triggers of tenant {tenant_id}",
            )
            for p, exc in result.failed:
                log.error("writing %d triggers failed: %s", len(p.rows) + len(p.items), exc)
                if not p.done.done():
                    p.done.set_exception(faults.for_caller(exc))
            if result.outage is not None:
                log.error("writing triggers failed, the database is unavailable: %s", result.outage)
                for p in result.unwritten:
                    if not p.done.done():
                        p.done.set_exception(faults.unavailable(result.outage))
            for part, replays in result.written:
                for p, replay in zip(part, replays, strict=True):
                    if p.done.done():
                        continue
                    if isinstance(replay, Exception):
                        p.done.set_exception(replay)
                    else:
                        p.done.set_result(p.ids if replay is None else replay.run_ids)
        self._inserted += sum(len(p.rows) + len(p.items) for p in batch)
        self._maybe_analyze()

    async def _write(
        self, tenant_id: int, group: Sequence[_Pending]
    ) -> list[requests.Answer | InvalidRequestError | None]:
        """Writes parked items of one tenant in one transaction (its outbox says what was
        queued); per caller the answer of a retried call (None for the callers whose runs
        were written)."""
        async with self._run_signals.transaction(self._db) as (tx, out):
            # Keys first: a retried call is answered, not written (requests.py).
            replays = await requests.claim(
                tx, tenant_id, [requests.Call(p.request, p.ids) for p in group]
            )
            todo = [p for p, r in zip(group, replays, strict=True) if r is None]
            rows = [r for p in todo for r in p.rows]
            writers: dict[BatchWriter, list[Any]] = {}
            for p in todo:
                if p.writer is not None:
                    writers.setdefault(p.writer, []).extend(p.items)
            if rows:
                out.queued(tenant_id, gated=await write_task_runs(tx, tenant_id, rows))
            for writer, items in writers.items():
                await writer(tx, out, tenant_id, items)
        return replays

    def _maybe_analyze(self) -> None:
        """Starts a background ANALYZE of the queue after a bulk enqueue."""
        now = time.monotonic()
        if (
            self._inserted < ANALYZE_AFTER_INSERTS
            or now - self._analyzed_at < _ANALYZE_EVERY_S
            or (self._analyze is not None and not self._analyze.done())
        ):
            return
        self._inserted, self._analyzed_at = 0, now
        self._analyze = asyncio.create_task(self._run_analyze(), name="stoker-analyze-queue")

    async def _run_analyze(self) -> None:
        try:
            await queue_store.analyze_queue(self._db, NoParams())
        except Exception:
            log.exception("analyzing the queue failed")


async def write_task_runs(tx: Executor, tenant_id: int, runs: list[NewTaskRun]) -> bool:
    """Inserts task runs (their dynamic rate limits first) inside ``tx``; True when some
    run now waits for concurrency admission."""
    params = insert_params(tenant_id, runs)
    dynamic = _dynamic_limits(tenant_id, runs)
    if dynamic.keys:
        await rate_limit_store.ensure_dynamic_rate_limits(tx, dynamic)
    await task_store.insert_tasks(tx, params)
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
