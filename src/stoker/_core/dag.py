"""The shape of a workflow as the SDK registers it and the engine runs it, and the pure
decision of what a waiting step does next.

A workflow version is a list of :class:`StepSpec`; each step names its parents and its
three condition lists. A condition list is an AND of items, an item being one condition or
an ``or`` group of conditions. :func:`decide` is shared by the engine's DAG controller and
the tests: given the step's parents' outcomes and the state of its sleep/event waits, it
says whether the step is cancelled, skipped, queued, or keeps waiting.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from stoker._core.cel import compile_expression
from stoker._core.wire import CronSpec, FilterSpec

Role = Literal["step", "on_failure", "on_success"]


class ConditionSpec(BaseModel):
    """One condition (or an ``or`` group of them) as it travels in a workflow's config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["sleep", "event", "parent", "or"]
    seconds: float = 0.0
    event_key: str = ""
    expression: str = ""
    parent: str = ""
    items: list[ConditionSpec] = Field(default_factory=list)


class StepSpec(BaseModel):
    """One step of a workflow: the task that runs it, its parents and conditions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    task_name: str
    role: Role = "step"
    parents: list[str] = Field(default_factory=list)
    wait_for: list[ConditionSpec] = Field(default_factory=list)
    skip_if: list[ConditionSpec] = Field(default_factory=list)
    cancel_if: list[ConditionSpec] = Field(default_factory=list)


class WorkflowSpec(BaseModel):
    """A workflow version: its steps in declaration order (parents before children)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: list[StepSpec]
    crons: list[CronSpec] = []
    """Crons declared on the workflow (``app.workflow(name, on_crons=...)``); not part of
    the version: a changed cron is not a new version of the workflow."""
    on_events: list[str] = []
    """Event key patterns that start a run of the workflow (not part of the version)."""
    default_filters: list[FilterSpec] = []
    """Filters declared on the workflow (not part of the version)."""

    def step(self, name: str) -> StepSpec:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def regular(self) -> list[StepSpec]:
        return [s for s in self.steps if s.role == "step"]

    def hash(self) -> str:
        import hashlib

        raw = json.dumps(
            self.model_dump(mode="json", exclude={"crons", "on_events", "default_filters"}),
            sort_keys=True,
        ).encode()
        return hashlib.sha256(raw).hexdigest()[:32]


GROUPS = ("cancel_if", "skip_if", "wait_for")


def waits_of(step: StepSpec) -> Iterator[tuple[str, ConditionSpec]]:
    """The sleep and event conditions of a step, with their paths (``"wait_for.1.0"``)."""
    for group in GROUPS:
        for i, item in enumerate(getattr(step, group)):
            if item.kind == "or":
                for j, sub in enumerate(item.items):
                    if sub.kind in ("sleep", "event"):
                        yield f"{group}.{i}.{j}", sub
            elif item.kind in ("sleep", "event"):
                yield f"{group}.{i}", item


@dataclass(frozen=True, slots=True)
class ParentState:
    """A parent step's outcome as a condition sees it."""

    status: str
    skipped: bool = False
    output: Any = None


@dataclass(slots=True)
class Decision:
    """What happens to a step whose parents are all final."""

    action: Literal["cancel", "skip", "queue", "wait"]
    reason: str = ""
    errors: list[str] = field(default_factory=list)


def _parent_condition(
    cond: ConditionSpec, parents: Mapping[str, ParentState], errors: list[str]
) -> bool:
    state = parents.get(cond.parent)
    if state is None or state.status != "COMPLETED" or state.skipped:
        return False
    try:
        value = compile_expression(cond.expression).execute({"output": state.output})
    except Exception as exc:
        errors.append(
            f"parent condition {cond.expression!r} on {cond.parent!r} failed: "
            f"{type(exc).__name__}: {exc}"
        )
        return False
    return value is True


def _holds(
    path: str,
    cond: ConditionSpec,
    parents: Mapping[str, ParentState],
    satisfied: Mapping[str, bool],
    errors: list[str],
) -> bool:
    if cond.kind == "parent":
        return _parent_condition(cond, parents, errors)
    return satisfied.get(path, False)


def group_holds(
    group: str,
    items: list[ConditionSpec],
    parents: Mapping[str, ParentState],
    satisfied: Mapping[str, bool],
    errors: list[str],
) -> bool:
    """Whether an AND-of-ORs list holds (an empty list holds)."""
    for i, item in enumerate(items):
        if item.kind == "or":
            ok = any(
                _holds(f"{group}.{i}.{j}", sub, parents, satisfied, errors)
                for j, sub in enumerate(item.items)
            )
        else:
            ok = _holds(f"{group}.{i}", item, parents, satisfied, errors)
        if not ok:
            return False
    return True


def decide(
    step: StepSpec, parents: Mapping[str, ParentState], satisfied: Mapping[str, bool]
) -> Decision:
    """The fate of a regular step whose parents are all final.

    A failed or cancelled parent cancels the step (and so, in turn, everything downstream);
    a skipped parent does not. Then ``cancel_if``, ``skip_if`` and ``wait_for`` are tried in
    that order; ``satisfied`` maps the paths of sleep/event conditions to whether they hold.
    """
    for name in step.parents:
        p = parents[name]
        if p.status in ("FAILED", "CANCELLED"):
            verb = "failed" if p.status == "FAILED" else "was cancelled"
            return Decision("cancel", f"parent step {name!r} {verb}")
    errors: list[str] = []
    if step.cancel_if and group_holds("cancel_if", step.cancel_if, parents, satisfied, errors):
        return Decision("cancel", "a cancel_if condition holds", errors)
    if step.skip_if and group_holds("skip_if", step.skip_if, parents, satisfied, errors):
        return Decision("skip", "a skip_if condition holds", errors)
    if group_holds("wait_for", step.wait_for, parents, satisfied, errors):
        return Decision("queue", "", errors)
    return Decision("wait", "", errors)
