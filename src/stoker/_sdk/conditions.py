"""Conditions on workflow steps: ``wait_for``, ``skip_if`` and ``cancel_if``.

Each of those options takes a list whose items are ANDed; :func:`or_` makes one item that
holds when any of its conditions does::

    @wf.task(parents=[charge], wait_for=[
        or_(SleepCondition(timedelta(hours=1)), UserEventCondition("payment:settled")),
    ])

CEL expressions are compiled when the condition is built, so a typo fails at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from stoker._core.cel import check_expression
from stoker._core.dag import ConditionSpec
from stoker.config import parse_duration
from stoker.errors import DeclarationError

if TYPE_CHECKING:
    from stoker._sdk.task import Task


@dataclass(frozen=True, init=False)
class SleepCondition:
    """Holds once ``duration`` has passed since the step started waiting (its parents were
    done). The deadline is stored by the engine, so it survives restarts."""

    duration: timedelta

    def __init__(self, duration: str | float | timedelta) -> None:
        delta = parse_duration(duration, "SleepCondition")
        if delta is None or delta.total_seconds() < 0:
            raise DeclarationError("SleepCondition needs a duration >= 0")
        object.__setattr__(self, "duration", delta)

    def spec(self) -> ConditionSpec:
        return ConditionSpec(kind="sleep", seconds=self.duration.total_seconds())


@dataclass(frozen=True, init=False)
class UserEventCondition:
    """Holds once an event with ``event_key`` is pushed (``app.events.push``) after the step
    started waiting, and ``expression`` (CEL, optional) is true for it.

    The expression sees ``input`` (the event's payload), ``additional_metadata`` (the
    event's), ``run_input`` and ``run_metadata`` (the waiting workflow run's).

    In a durable task's ``ctx.wait_for`` (only there), ``scope`` takes only events pushed
    with that scope, and ``lookback`` (a duration, at most 24 h) lets an event pushed up to
    that long before the wait satisfy it — the earliest one the task has not used — as
    ``ctx.wait_for_event`` does. A workflow step's condition is scoped to its workflow run
    and sees only later events, so it refuses both.
    """

    event_key: str
    expression: str
    scope: str | None
    lookback: timedelta | None

    def __init__(
        self,
        event_key: str,
        expression: str = "",
        *,
        scope: str | None = None,
        lookback: str | float | timedelta | None = None,
    ) -> None:
        if not event_key or not isinstance(event_key, str):
            raise DeclarationError("UserEventCondition needs an event_key")
        if expression:
            check_expression(expression, f"UserEventCondition({event_key!r})")
        if scope is not None and (not isinstance(scope, str) or not scope):
            raise DeclarationError(
                f"UserEventCondition({event_key!r}): scope must be a non-empty string, "
                f"got {scope!r}"
            )
        back = parse_duration(lookback, f"UserEventCondition({event_key!r}): lookback")
        if back is not None and back > timedelta(hours=24):
            raise DeclarationError(
                f"UserEventCondition({event_key!r}): lookback {back} is longer than 24 h"
            )
        object.__setattr__(self, "event_key", event_key)
        object.__setattr__(self, "expression", expression)
        object.__setattr__(self, "scope", scope)
        object.__setattr__(self, "lookback", back)

    def spec(self) -> ConditionSpec:
        if self.scope is not None or self.lookback is not None:
            raise DeclarationError(
                f"UserEventCondition({self.event_key!r}): scope and lookback apply to a "
                "durable task's ctx.wait_for only; a workflow step's condition is scoped to "
                "its workflow run and sees only events pushed after it began waiting"
            )
        return ConditionSpec(kind="event", event_key=self.event_key, expression=self.expression)


@dataclass(frozen=True)
class ParentCondition:
    """Holds when CEL ``expression`` is true over ``output``, the output of ``parent`` (a
    step of the same workflow; it must complete, and a skipped parent never satisfies it)."""

    parent: Task[Any, Any]
    expression: str

    def __post_init__(self) -> None:
        check_expression(self.expression, f"ParentCondition on {self.parent!r}")

    def spec(self) -> ConditionSpec:
        step = getattr(self.parent, "step", None) or self.parent.name
        return ConditionSpec(kind="parent", parent=step, expression=self.expression)


Condition = SleepCondition | UserEventCondition | ParentCondition


@dataclass(frozen=True, init=False)
class OrGroup:
    """Conditions of which one must hold (made with :func:`or_`)."""

    conditions: tuple[Condition, ...]

    def __init__(self, *conditions: Condition) -> None:
        if not conditions:
            raise DeclarationError("or_() needs at least one condition")
        for c in conditions:
            if not isinstance(c, SleepCondition | UserEventCondition | ParentCondition):
                raise DeclarationError(f"or_() takes conditions, got {c!r}")
        object.__setattr__(self, "conditions", tuple(conditions))

    def spec(self) -> ConditionSpec:
        return ConditionSpec(kind="or", items=[c.spec() for c in self.conditions])


def or_(*conditions: Condition) -> OrGroup:
    """One item of a condition list that holds when any of ``conditions`` holds."""
    return OrGroup(*conditions)


def condition_specs(items: list[Condition | OrGroup] | None, what: str) -> list[ConditionSpec]:
    """The wire form of a condition list; DeclarationError naming ``what`` on bad items."""
    specs: list[ConditionSpec] = []
    for item in items or []:
        if not isinstance(item, SleepCondition | UserEventCondition | ParentCondition | OrGroup):
            raise DeclarationError(
                f"{what}: expected SleepCondition, UserEventCondition, ParentCondition or "
                f"or_(...), got {item!r}"
            )
        specs.append(item.spec())
    return specs


def parents_in(items: list[Condition | OrGroup] | None) -> list[Task[Any, Any]]:
    """The steps that ParentConditions of a list refer to."""
    found: list[Task[Any, Any]] = []
    for item in items or []:
        for c in item.conditions if isinstance(item, OrGroup) else (item,):
            if isinstance(c, ParentCondition):
                found.append(c.parent)
    return found


__all__ = [
    "Condition",
    "OrGroup",
    "ParentCondition",
    "SleepCondition",
    "UserEventCondition",
    "or_",
]
