"""The Tasks and workflows page's data: definitions (a workflow's steps and parents,
triggers, policies), runs of the last day with the success rate, pauses and the input
schema a trigger form is built from.

A task's definition is what its workers registered (``task_def.config``, a
:class:`~stoker._core.wire.TaskConfig`); a workflow's is the version new runs use
(:class:`~stoker._core.dag.WorkflowSpec`), and its input schema is that of its root
steps, which receive the workflow's input.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from markupsafe import Markup
from pydantic import ValidationError

from stoker._core import cron
from stoker._core.cron import CronError
from stoker._core.dag import WorkflowSpec
from stoker._core.wire import TaskConfig
from stoker.db import Executor
from stoker.db.store import dashboard_pages as store
from stoker.engine.dashboard import dag
from stoker.engine.dashboard.pages_words import cron_in_words, duration

WINDOW = timedelta(days=1)
"""How far back the run counts and success rate of one task or workflow look."""

LIST_WINDOW = timedelta(hours=1)
"""How far back the list of every task and workflow counts runs. Counting a day of every
task reads every run of the day (0.5 s at 250,000 runs, under load); an hour reads a 24th
of it, and one task's day goes through its own index (70 ms)."""

Kind = Literal["task", "workflow"]


@dataclass(frozen=True, slots=True)
class RunCounts:
    """Runs created in the window, by status."""

    by_status: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def finished(self) -> int:
        return sum(n for s, n in self.by_status.items() if s in ("COMPLETED", "FAILED"))

    @property
    def success_rate(self) -> str:
        """Completed over completed + failed, as a percentage ("" with none finished)."""
        done = self.finished
        if not done:
            return ""
        return f"{100 * self.by_status.get('COMPLETED', 0) / done:.0f}%"


@dataclass(frozen=True, slots=True)
class Step:
    """A workflow step: its name, the task it runs, its parents and conditions in words."""

    name: str
    task_name: str
    role: str
    parents: list[str]
    conditions: list[str]


@dataclass(frozen=True, slots=True)
class Definition:
    """A task or workflow as the page shows it."""

    kind: Kind
    name: str
    updated_at: datetime
    paused: bool
    drop_runs: bool
    counts: RunCounts
    triggers: list[str]
    policies: list[str]
    steps: list[Step]
    input_schema: dict[str, Any] | None
    config: Any


def _cron_words(expression: str, zone: str | None) -> str:
    try:
        return cron_in_words(cron.parse(expression, zone))
    except CronError:
        return f"cron {expression}"


def _task_policies(c: TaskConfig) -> list[str]:
    out = [
        f"retries: {c.retries}"
        + (
            f" (backoff factor {c.backoff_factor:g}, at most {c.backoff_max_seconds:g} s)"
            if c.backoff_factor
            else ""
        ),
        "execution timeout: "
        + (
            duration(timedelta(milliseconds=c.execution_timeout_ms))
            if c.execution_timeout_ms
            else "none"
        ),
        "schedule timeout: "
        + (
            duration(timedelta(milliseconds=c.schedule_timeout_ms))
            if c.schedule_timeout_ms
            else "none"
        ),
        f"priority: {c.priority}",
    ]
    if c.slot_cost != 1:
        out.append(f"slot cost: {c.slot_cost}")
    if c.durable:
        out.append("durable")
    for k in c.concurrency:
        out.append(
            f"concurrency: at most {k.max_runs} per {k.expression} ({k.limit_strategy.value})"
        )
    for r in c.rate_limits:
        key = r.static_key or f"{r.dynamic_key} (dynamic)"
        out.append(f"rate limit: {key}, {r.units} unit(s) per run")
    for label, want in c.desired_worker_labels.items():
        out.append(f"worker label {label}: {want.model_dump(exclude_defaults=True)}")
    if c.sticky is not None:
        out.append(f"sticky: {c.sticky.value}")
    if c.idempotency is not None:
        out.append(f"idempotency key: {c.idempotency.expression or 'given per call'}")
    return out


def _triggers(crons: list[Any], events: list[str]) -> list[str]:
    out = [f"{_cron_words(c.expression, c.timezone)} (cron {c.expression})" for c in crons]
    out += [f"event {e}" for e in events]
    return out


def _condition_words(spec: Any) -> str:
    if spec.kind == "sleep":
        return f"after {duration(timedelta(seconds=spec.seconds))}"
    if spec.kind == "event":
        return f"event {spec.event_key}" + (f" where {spec.expression}" if spec.expression else "")
    if spec.kind == "parent":
        return f"{spec.parent}'s output: {spec.expression}"
    return "(" + " or ".join(_condition_words(i) for i in spec.items) + ")"


def _steps(spec: WorkflowSpec) -> list[Step]:
    steps = []
    for s in spec.steps:
        conditions = [f"waits for {_condition_words(c)}" for c in s.wait_for]
        conditions += [f"skipped if {_condition_words(c)}" for c in s.skip_if]
        conditions += [f"cancelled if {_condition_words(c)}" for c in s.cancel_if]
        steps.append(Step(s.name, s.task_name, s.role, list(s.parents), conditions))
    return steps


async def _counts(
    db: Executor, tenant_id: int, kind: Kind, name: str | None, now: datetime
) -> dict[str, RunCounts]:
    window = WINDOW if name is not None else LIST_WINDOW
    params = store.DashRunCounts(tenant_id, now - window, name)
    read = store.dash_task_run_counts if kind == "task" else store.dash_workflow_run_counts
    by: dict[str, dict[str, int]] = defaultdict(dict)
    for row in await read(db, params):
        by[row["name"]][row["status"]] = row["runs"]
    return {n: RunCounts(dict(s)) for n, s in by.items()}


def _task(row: store.DefRow, counts: RunCounts) -> Definition:
    try:
        c = TaskConfig.model_validate(row["config"])
    except ValidationError:
        c = TaskConfig()
    return Definition(
        kind="task",
        name=row["name"],
        updated_at=row["updated_at"],
        paused=row["paused_at"] is not None,
        drop_runs=row["drop_runs"],
        counts=counts,
        triggers=_triggers(c.crons, c.on_events),
        policies=_task_policies(c),
        steps=[],
        input_schema=c.input_schema,
        config=row["config"],
    )


def _workflow(row: store.DefRow, counts: RunCounts, schemas: dict[str, Any]) -> Definition:
    try:
        spec: WorkflowSpec | None = WorkflowSpec.model_validate(row["config"])
    except ValidationError:
        spec = None
    steps = _steps(spec) if spec else []
    roots = [s.task_name for s in steps if s.role == "step" and not s.parents]
    schema = next((schemas[t] for t in roots if schemas.get(t)), None)
    return Definition(
        kind="workflow",
        name=row["name"],
        updated_at=row["updated_at"],
        paused=row["paused_at"] is not None,
        drop_runs=row["drop_runs"],
        counts=counts,
        triggers=_triggers(spec.crons, spec.on_events) if spec else [],
        policies=[],
        steps=steps,
        input_schema=schema,
        config=row["config"],
    )


async def definitions(
    db: Executor,
    tenant_id: int,
    now: datetime,
    *,
    kind: Kind | None = None,
    name: str | None = None,
) -> list[Definition]:
    """The tenant's workflows then tasks (only ``kind``/``name`` when given), with their
    runs of the last :data:`WINDOW` (one named) or :data:`LIST_WINDOW` (all). Workflow
    steps are left out of the task list: they are shown in their workflow."""
    out: list[Definition] = []
    task_rows = await store.dash_task_defs(db, store.DashDefs(tenant_id, None))
    schemas = {r["name"]: (r["config"] or {}).get("input_schema") for r in task_rows}
    step_tasks: set[str] = set()
    if kind in (None, "workflow"):
        counts = await _counts(db, tenant_id, "workflow", name, now)
        for row in await store.dash_workflow_defs(db, store.DashDefs(tenant_id, name)):
            d = _workflow(row, counts.get(row["name"], RunCounts()), schemas)
            step_tasks.update(s.task_name for s in d.steps)
            out.append(d)
    if kind in (None, "task"):
        counts = await _counts(db, tenant_id, "task", name, now)
        for row in task_rows:
            if (name is not None and row["name"] != name) or (
                kind is None and row["name"] in step_tasks
            ):
                continue
            out.append(_task(row, counts.get(row["name"], RunCounts())))
    return out


def shape(d: Definition) -> Markup | None:
    """A workflow's shape as a picture (the run page's layout, with no statuses): steps in
    layers by their parents, condition edges dashed and labelled; None for a task."""
    if d.kind != "workflow":
        return None
    try:
        spec = WorkflowSpec.model_validate(d.config)
    except ValidationError:
        return None
    nodes = [
        dag.Node(
            name=s.name,
            task_name=s.task_name,
            status="",
            role=s.role,
            parents=list(s.parents),
            conditions={"wait_for": s.wait_for, "skip_if": s.skip_if, "cancel_if": s.cancel_if},
        )
        for s in spec.steps
    ]
    picture = dag.draw(nodes, selected=None, link="#step-{step}", child_link="")
    # The run page's picture names a run's steps; this one is the workflow's definition.
    return Markup(str(picture).replace("The run's steps", "The workflow's steps", 1))
