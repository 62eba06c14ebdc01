"""Scenarios: what is measured. Each one runs per system, then reports across systems.

A scenario registers itself with :func:`register`; the command line picks them by name.
Scenarios for Stoker's orchestration features (dag, fanout, policy) set
``stoker_only=True`` and are skipped for the peers, which have no such features.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench.config import Context
from bench.systems import System

Result = dict[str, Any]
"""One system's measurements; keys starting with ``_`` are kept out of the JSON."""


@dataclass(frozen=True)
class Scenario:
    """A named measurement with a per-system run and a cross-system report."""

    name: str
    description: str
    run: Callable[[System, Context], Awaitable[Result]]
    report: Callable[[dict[str, Result], Context], None]
    stoker_only: bool = False
    order: int = 100
    """Position in a run; lower runs first."""


_REGISTRY: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    """Adds a scenario to the suite (in registration order)."""
    if scenario.name in _REGISTRY:
        raise ValueError(f"scenario {scenario.name!r} is registered twice")
    _REGISTRY[scenario.name] = scenario
    return scenario


def registry() -> dict[str, Scenario]:
    """Every registered scenario by name, in the order they run."""
    # Importing the modules registers them.
    from bench.scenarios import (  # noqa: F401
        backlog,
        chaos,
        cost,
        dashboard,
        drain,
        durable,
        durable_events,
        events,
        executors,
        idle,
        metrics,
        observe,
        policy,
        push,
        results,
        schedules,
        soak,
        steady,
        tracing,
        tx_enqueue,
        workflows,
    )

    return {s.name: s for s in sorted(_REGISTRY.values(), key=lambda s: s.order)}
