"""Task and workflow definitions of every tenant, and the caches the hot paths read.

Ingest, the workflow ingest, the scheduler and the client service all need to know what a
tenant declared: a task's configuration (retries, timeouts, slot cost, concurrency and
rate limits), a workflow's current version and spec, the concurrency strategies registered
for a task, and which static rate limits exist. :class:`Definitions` is their one owner:
it writes them (:meth:`~Definitions.register_tasks`, :meth:`~Definitions.register_workflows`,
:meth:`~Definitions.put_rate_limit`) and keeps a short-lived per-tenant cache of each.

Caches: every entry lives ``ttl_s`` (5 s), so a definition registered through another
replica is seen within that time; a lookup that misses a name (:meth:`~Definitions.resolve`)
re-reads at once, so a task registered a moment ago is never refused as unknown. A
registration through this replica drops the tenant's entry.

Policy: :meth:`~Definitions.policy` evaluates a new run's concurrency keys and rate-limit
units (:func:`~stoker.engine.definitions.policy.evaluate_policy`) against the strategies
and static keys cached by the last :meth:`~Definitions.resolve` of that task, which is why
a caller resolves its names before asking for policies.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from stoker._core import cron
from stoker._core.cel import compile_expression
from stoker._core.cron import OVERLAPS, CronError
from stoker._core.dag import WorkflowSpec
from stoker._core.events import pattern_problem
from stoker._core.wire import CronSpec, FilterSpec, TaskConfig, text_problem
from stoker.db import Executor
from stoker.db.store import concurrency as concurrency_store
from stoker.db.store import crons as cron_store
from stoker.db.store import dags as dag_store
from stoker.db.store import events as event_store
from stoker.db.store import notify as notify_store
from stoker.db.store import rate_limits as rate_limit_store
from stoker.db.store import tasks as task_store
from stoker.engine.definitions.policy import RunPolicy, Strategy, evaluate_policy
from stoker.errors import InvalidRequestError, UnknownTaskError

DEFAULT_TTL_S = 5.0

CRONS_CHANNEL = "stoker_crons"
"""NOTIFY channel: a tenant's crons or pauses changed (payload ``<tenant>:<engine>``)."""

NEXT_FIRES = 5
"""How many upcoming fire times a cron read shows."""

Workflows = dict[str, tuple[int, WorkflowSpec]]
"""A tenant's workflows: name -> (current version id, spec)."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a set of names resolved to: the tenant's workflows and task configurations."""

    workflows: Workflows
    tasks: dict[str, TaskConfig]


def cron_name(task_name: str, expression: str) -> str:
    """A code cron's name: derived from what declares it, so registering again finds it."""
    return f"{task_name}:{expression}"


async def _replace_code_crons(
    tx: Executor,
    tenant_id: int,
    owners: list[tuple[str, str]],
    specs: list[list[CronSpec]],
) -> bool:
    """Makes the code crons of ``owners`` (kind ``"task"`` or ``"workflow"``, name) those of
    their new definitions: a cron removed from the code is deleted, a new one gets its next
    tick, an unchanged one keeps its next tick."""
    now = datetime.now(UTC)
    rows = cron_store.UpsertCodeCrons(tenant_id, [], [], [], [], [], [], [])
    policies = cron_store.SetCodeCronPolicies(tenant_id, [], [], [], [])
    for (kind, name), crons in zip(owners, specs, strict=True):
        for spec in crons:
            try:
                parsed = cron.parse(spec.expression, spec.timezone)
            except CronError as exc:
                raise InvalidRequestError(f"{kind} {name!r}: {exc}") from None
            try:
                json.loads(spec.input_json)
            except ValueError:
                raise InvalidRequestError(
                    f"{kind} {name!r}: cron {spec.expression!r} has an input that is not JSON"
                ) from None
            rows.names.append(cron_name(name, spec.expression))
            rows.task_names.append(name if kind == "task" else None)
            rows.workflow_names.append(name if kind == "workflow" else None)
            rows.expressions.append(spec.expression)
            rows.timezones.append(parsed.timezone)
            rows.inputs.append(spec.input_json)
            rows.next_fire_at.append(parsed.next_after(now))
            if spec.overlap is not None:
                _check_policies(kind, name, spec)
                policies.names.append(rows.names[-1])
                policies.overlaps.append(spec.overlap)
                policies.windows.append(spec.catch_up_window_s)
                policies.maxes.append(spec.catch_up_max)
    deleted = await cron_store.delete_code_crons(
        tx,
        cron_store.DeleteCodeCrons(
            tenant_id,
            [n for k, n in owners if k == "task"],
            [n for k, n in owners if k == "workflow"],
            rows.names,
        ),
    )
    if rows.names:
        await cron_store.upsert_code_crons(tx, rows)
    if policies.names:
        await cron_store.set_code_cron_policies(tx, policies)
    return bool(deleted or rows.names)


def _check_policies(kind: str, name: str, spec: CronSpec) -> None:
    """A code cron's declared policies, as ``app.crons.create`` checks them."""
    what = f"{kind} {name!r}: cron {spec.expression!r}"
    if spec.overlap not in OVERLAPS:
        raise InvalidRequestError(
            f"{what}: overlap {spec.overlap!r} is not one of {', '.join(OVERLAPS)}"
        )
    if (spec.catch_up_window_s > 0) != (spec.catch_up_max > 0):
        raise InvalidRequestError(
            f"{what}: catch-up needs both a window and a max (or neither: catch-up none)"
        )


def check_subscriptions(what: str, patterns: list[str], filters: list[FilterSpec]) -> None:
    """InvalidRequestError for an ``on_events`` pattern or a default filter that is not
    valid (checked at registration, so nothing of the registration is stored)."""
    for pattern in patterns:
        problem = pattern_problem(pattern)
        if problem is not None:
            raise InvalidRequestError(f"{what}: on_events: {problem}")
    for f in filters:
        try:
            compile_expression(f.expression)
        except (ValueError, RuntimeError) as exc:
            raise InvalidRequestError(
                f"{what}: default filter {f.expression!r} is not valid CEL: {exc}"
            ) from None
        if f.scope is not None and (not f.scope or text_problem(f.scope)):
            raise InvalidRequestError(f"{what}: a default filter's scope must be non-empty text")


async def _replace_code_filters(
    tx: Executor,
    tenant_id: int,
    owners: list[tuple[str, str]],
    specs: list[list[FilterSpec]],
) -> None:
    """Makes the code filters (``default_filters``) of ``owners`` those of their new
    definitions."""
    rows = event_store.InsertCodeFilters(tenant_id, [], [], [], [], [])
    for (kind, name), filters in zip(owners, specs, strict=True):
        for f in filters:
            rows.task_names.append(name if kind == "task" else None)
            rows.workflow_names.append(name if kind == "workflow" else None)
            rows.scopes.append(f.scope)
            rows.expressions.append(f.expression)
            rows.payloads.append(json.dumps(f.payload))
    await event_store.delete_code_filters(
        tx,
        event_store.DeleteCodeFilters(
            tenant_id,
            [n for k, n in owners if k == "task"],
            [n for k, n in owners if k == "workflow"],
        ),
    )
    if rows.expressions:
        await event_store.insert_code_filters(tx, rows)


def upcoming(row: cron_store.CronRow, n: int) -> list[datetime]:
    """A cron's next ``n`` fire times: its stored next tick, then the ones after it."""
    first = row["next_fire_at"]
    if first is None or not row["enabled"]:
        return []
    try:
        parsed = cron.parse(row["expression"], row["timezone"])
    except CronError:
        return [first]
    ticks = [first]
    while len(ticks) < n:
        following = parsed.next_after(ticks[-1])
        if following is None:
            break
        ticks.append(following)
    return ticks


class Definitions:
    """Owns task and workflow definitions, concurrency strategies and static rate-limit
    keys per tenant; see the module docstring.

    ``on_limits_changed(tenant_id)`` is called after a rate limit was created or changed
    (the scheduler retries runs it deferred for that limit); ``on_crons_changed(tenant_id)``
    after a registration created, changed or removed code crons (which is also announced
    to the other replicas on ``stoker_crons``)."""

    def __init__(
        self,
        db: Executor,
        *,
        on_limits_changed: Callable[[int], None],
        on_crons_changed: Callable[[int], None] = lambda _: None,
        engine_id: str = "",
        ttl_s: float = DEFAULT_TTL_S,
    ) -> None:
        self._db = db
        self._on_limits_changed = on_limits_changed
        self._on_crons_changed = on_crons_changed
        self._engine_id = engine_id
        self._ttl = ttl_s
        self._tasks: dict[int, tuple[float, dict[str, TaskConfig]]] = {}
        self._strategies: dict[int, dict[str, list[Strategy]]] = {}
        self._static_limits: dict[int, tuple[float, set[str]]] = {}
        self._workflows: dict[int, tuple[float, Workflows]] = {}
        self._paused: dict[int, tuple[float, frozenset[str]]] = {}

    # -- writing ------------------------------------------------------------------------

    async def register_tasks(self, tenant_id: int, defs: Sequence[tuple[str, bytes]]) -> None:
        """Stores task definitions (name, config JSON) and their concurrency strategies."""
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
                config = TaskConfig.model_validate_json(raw or b"{}")
            except ValidationError as exc:
                raise InvalidRequestError(
                    f"task {name!r} has an invalid configuration: {exc}"
                ) from None
            check_subscriptions(f"task {name!r}", config.on_events, config.default_filters)
            configs.append(config.model_dump_json())
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
            parsed = [TaskConfig.model_validate_json(c) for c in configs]
            crons = await _replace_code_crons(
                tx, tenant_id, [("task", n) for n, _ in defs], [c.crons for c in parsed]
            )
            await _replace_code_filters(
                tx, tenant_id, [("task", n) for n, _ in defs], [c.default_filters for c in parsed]
            )
            if crons:
                await self._announce_crons(tx, tenant_id)
        self._tasks.pop(tenant_id, None)
        if crons:
            self._on_crons_changed(tenant_id)

    async def register_workflows(
        self, tenant_id: int, workflows: Sequence[tuple[str, bytes, list[tuple[str, bytes]]]]
    ) -> None:
        """Stores workflows (name, spec JSON, their steps' task definitions); a changed
        spec becomes the workflow's new current version."""
        tasks = [t for _, _, defs in workflows for t in defs]
        if tasks:
            await self.register_tasks(tenant_id, tasks)
        async with self._db.transaction() as tx:
            owners: list[tuple[str, str]] = []
            specs: list[list[CronSpec]] = []
            for name, raw, _ in workflows:
                if not name or len(name) > 200 or text_problem(name):
                    raise InvalidRequestError(
                        f"workflow name {name!r} must be 1 to 200 characters, without NUL"
                    )
                try:
                    spec = WorkflowSpec.model_validate_json(raw)
                except ValidationError as exc:
                    raise InvalidRequestError(
                        f"workflow {name!r} has an invalid definition: {exc}"
                    ) from None
                check_subscriptions(f"workflow {name!r}", spec.on_events, spec.default_filters)
                config = spec.model_dump_json()
                await dag_store.register_workflow(
                    tx, dag_store.RegisterWorkflow(tenant_id, name, spec.hash(), config)
                )
                owners.append(("workflow", name))
                specs.append(spec.crons)
            crons = await _replace_code_crons(tx, tenant_id, owners, specs)
            await _replace_code_filters(
                tx,
                tenant_id,
                owners,
                [WorkflowSpec.model_validate_json(raw).default_filters for _, raw, _ in workflows],
            )
            if crons:
                await self._announce_crons(tx, tenant_id)
        self._workflows.pop(tenant_id, None)
        if crons:
            self._on_crons_changed(tenant_id)

    async def _announce_crons(self, tx: Executor, tenant_id: int) -> None:
        """Tells the other replicas (their crons controller) that code crons changed."""
        await notify_store.notify(
            tx, notify_store.Notify(CRONS_CHANNEL, f"{tenant_id}:{self._engine_id}")
        )

    async def crons(self, tenant_id: int, name: str | None = None) -> list[cron_store.CronRow]:
        """The tenant's crons as stored, or the one named (read each time: ``next_fire_at``
        moves)."""
        return await cron_store.list_crons(self._db, cron_store.ListCrons(tenant_id, name))

    def forget(self, tenant_id: int) -> None:
        """Drops the tenant's cached definitions and pauses (they changed elsewhere)."""
        self._tasks.pop(tenant_id, None)
        self._workflows.pop(tenant_id, None)
        self._paused.pop(tenant_id, None)

    async def paused_queues(self, tenant_id: int) -> frozenset[str]:
        """The task names whose runs the scheduler leaves queued: paused tasks and the
        steps of paused workflows (cached like the definitions; a pause through another
        replica drops the cache through its notification)."""
        cached = self._paused.get(tenant_id)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        rows = await cron_store.list_paused(self._db, cron_store.ListPaused(tenant_id))
        names = {r["name"] for r in rows if r["kind"] == "task"}
        if any(r["kind"] == "workflow" for r in rows):
            flows = await self.workflows(tenant_id)
            for r in rows:
                if r["kind"] == "workflow" and r["name"] in flows:
                    names.update(s.task_name for s in flows[r["name"]][1].steps)
        found = frozenset(names)
        self._paused[tenant_id] = (time.monotonic() + self._ttl, found)
        return found

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
        self._on_limits_changed(tenant_id)

    def limits_changed(self, tenant_id: int) -> None:
        """Tells the scheduler that a tenant's limits have room (a limit was reset)."""
        self._on_limits_changed(tenant_id)

    # -- reading ------------------------------------------------------------------------

    async def tasks(self, tenant_id: int, *, refresh: bool = False) -> dict[str, TaskConfig]:
        """The tenant's task configurations by name (cached; ``refresh`` re-reads)."""
        cached = self._tasks.get(tenant_id)
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
        self._tasks[tenant_id] = (time.monotonic() + self._ttl, defs)
        return defs

    async def workflows(self, tenant_id: int, *, refresh: bool = False) -> Workflows:
        """The tenant's workflows: name -> (current version id, spec) (cached)."""
        cached = self._workflows.get(tenant_id)
        if cached and not refresh and cached[0] > time.monotonic():
            return cached[1]
        rows = await dag_store.current_workflows(self._db, dag_store.CurrentWorkflows(tenant_id))
        found = {
            str(r["name"]): (int(r["version_id"]), WorkflowSpec.model_validate(r["config"]))
            for r in rows
        }
        self._workflows[tenant_id] = (time.monotonic() + self._ttl, found)
        return found

    async def resolve(
        self,
        tenant_id: int,
        task_names: Iterable[str] = (),
        workflow_names: Iterable[str] = (),
    ) -> Resolved:
        """The definitions of the named tasks and workflows (and of the workflows' steps),
        re-read once when one is not cached; UnknownTaskError for the first name (in the
        order given, workflows first) that is not registered. Also refreshes the static
        rate-limit keys the tasks name, so :meth:`policy` sees a limit created a moment
        ago."""
        wanted_workflows = list(dict.fromkeys(workflow_names))
        workflows: Workflows = {}
        if wanted_workflows:
            workflows = await self.workflows(tenant_id)
            if not set(wanted_workflows) <= workflows.keys():
                workflows = await self.workflows(tenant_id, refresh=True)
            for name in wanted_workflows:
                if name not in workflows:
                    known = ", ".join(sorted(workflows)) or "none"
                    raise UnknownTaskError(
                        f"no workflow named {name!r} is registered; registered workflows: {known}"
                    )
        steps = [s.task_name for n in wanted_workflows for s in workflows[n][1].steps]
        wanted = list(dict.fromkeys([*task_names, *steps]))
        defs = await self.tasks(tenant_id)
        if not set(wanted) <= defs.keys():
            defs = await self.tasks(tenant_id, refresh=True)
        for name in wanted:
            if name not in defs:
                known = ", ".join(sorted(defs)) or "none"
                raise UnknownTaskError(
                    f"no task named {name!r} is registered; registered tasks: {known}"
                )
        await self._static_keys_for(tenant_id, wanted, defs)
        return Resolved(workflows, defs)

    async def _static_keys_for(
        self, tenant_id: int, task_names: Iterable[str], defs: dict[str, TaskConfig]
    ) -> set[str]:
        """The tenant's static rate-limit keys, re-read when the tasks name one not cached."""
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
        self._static_limits[tenant_id] = (time.monotonic() + self._ttl, keys)
        return keys

    # -- policy -------------------------------------------------------------------------

    def policy(
        self, tenant_id: int, task_name: str, config: TaskConfig, raw: bytes, metadata: bytes
    ) -> RunPolicy:
        """A new run's concurrency keys and rate-limit units (or the error that fails it),
        from the caches the last :meth:`resolve` of the task filled."""
        if not config.concurrency and not config.rate_limits:
            return RunPolicy()
        strategies = self._strategies.get(tenant_id, {}).get(task_name, [])
        cached = self._static_limits.get(tenant_id)
        static_keys = cached[1] if cached else set()
        return evaluate_policy(task_name, config, strategies, raw, metadata, static_keys)
