"""Which runs a pushed event starts: its subscribers and their filters.

A task or workflow subscribes to event keys with ``on_events`` patterns
(:mod:`stoker._core.events`), sent with its definition; the subscribers of a tenant are
read from the definitions caches. For each event and each subscriber whose pattern matches
the key, the subscriber's filters decide:

* the filters that apply are those without a scope and those whose scope is the event's;
* with none, the subscriber runs once, unconditionally;
* with some, it runs once if any of them holds (its CEL expression is ``true`` over
  ``input`` — the payload —, ``additional_metadata``, ``scope`` and ``key``), and the first
  that holds (code filters first, then oldest first) gives the run its payload; if none
  holds, the subscriber does not run. An expression that fails on an event counts as not
  holding.

:func:`plan_runs` is pure; the event ingest (:mod:`.workflows`) writes what it plans in the
transaction that stores the events.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stoker._core.cel import compile_expression
from stoker._core.events import (
    EVENT_ID_KEY,
    EVENT_KEY_KEY,
    FILTER_ID_KEY,
    matches,
)
from stoker._core.wire import TaskConfig
from stoker.db.store.events import FilterRow
from stoker.engine.definitions import Workflows

log = logging.getLogger("stoker.engine.events")


@dataclass(frozen=True, slots=True)
class Subscriber:
    """A task (``kind`` "task") or workflow subscribed to event keys."""

    kind: str
    name: str
    patterns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EventView:
    """What filters see of one event."""

    key: str
    scope: str
    payload: Any
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """One run an event starts: the event's index in its batch, the subscriber, and the
    filter that let it through (None: no filter applied)."""

    event: int
    subscriber: Subscriber
    filter: FilterRow | None


def subscribers(tasks: dict[str, TaskConfig], workflows: Workflows) -> list[Subscriber]:
    """Every subscriber of a tenant, tasks first, each in name order."""
    found = [
        Subscriber("task", name, tuple(config.on_events))
        for name, config in sorted(tasks.items())
        if config.on_events
    ]
    found += [
        Subscriber("workflow", name, tuple(spec.on_events))
        for name, (_, spec) in sorted(workflows.items())
        if spec.on_events
    ]
    return found


def subscribed(subs: Sequence[Subscriber], key: str) -> list[Subscriber]:
    """The subscribers with a pattern matching ``key``."""
    return [s for s in subs if any(matches(p, key) for p in s.patterns)]


def _holds(f: FilterRow, event: EventView) -> bool:
    try:
        value = compile_expression(f["expression"]).execute(
            {
                "input": event.payload,
                "additional_metadata": event.metadata,
                "scope": event.scope,
                "key": event.key,
            }
        )
    except Exception as exc:
        log.debug("filter %s failed on event %r: %s", f["external_id"], event.key, exc)
        return False
    return value is True


def plan_runs(
    events: Sequence[EventView],
    matched: Sequence[Sequence[Subscriber]],
    filters: Sequence[FilterRow],
) -> list[PlannedRun]:
    """The runs ``events`` start, given each event's matching subscribers and the filters
    of those subscribers (in the order they apply); see the module docstring."""
    by_owner: dict[tuple[str, str], list[FilterRow]] = {}
    for f in filters:
        owner = ("task", f["task_name"]) if f["task_name"] else ("workflow", f["workflow_name"])
        by_owner.setdefault((owner[0], str(owner[1])), []).append(f)
    planned: list[PlannedRun] = []
    for i, (event, subs) in enumerate(zip(events, matched, strict=True)):
        for s in subs:
            applicable = [
                f
                for f in by_owner.get((s.kind, s.name), ())
                if f["scope"] is None or f["scope"] == event.scope
            ]
            if not applicable:
                planned.append(PlannedRun(i, s, None))
                continue
            chosen = next((f for f in applicable if _holds(f, event)), None)
            if chosen is not None:
                planned.append(PlannedRun(i, s, chosen))
    return planned


def run_metadata(
    metadata: dict[str, Any], event_id: str, key: str, chosen: FilterRow | None
) -> dict[str, Any]:
    """The additional metadata of a run an event starts: the event's, with its id and key
    (and the filter's id when a filter let it through; the filter's payload is kept beside
    the run, in ``run_filter_payload``, and reaches the worker with each assignment)."""
    md = {**metadata, EVENT_ID_KEY: event_id, EVENT_KEY_KEY: key}
    if chosen is not None:
        md[FILTER_ID_KEY] = str(chosen["external_id"])
    return md


__all__ = [
    "EventView",
    "PlannedRun",
    "Subscriber",
    "plan_runs",
    "run_metadata",
    "subscribed",
    "subscribers",
]
