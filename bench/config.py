"""Profiles (how big each scenario is) and the context every scenario runs with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.pg import Server
from bench.systems import Env


@dataclass(frozen=True)
class Profile:
    """Sizes and durations of the scenarios."""

    name: str
    drain_tasks: int
    steady_rates: tuple[int, ...]
    steady_seconds: float
    search_rates: tuple[int, ...]
    """Rates tried, in order, for the highest rate held (empty: no search)."""
    search_seconds: float
    backlog_base: int
    backlog_depth: int
    cost_tasks: int
    default_scenarios: tuple[str, ...]


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick",
        drain_tasks=5_000,
        steady_rates=(100,),
        steady_seconds=10.0,
        search_rates=(),
        search_seconds=5.0,
        backlog_base=2_000,
        backlog_depth=50_000,
        cost_tasks=2_000,
        default_scenarios=(
            "drain",
            "steady",
            "cost",
            "idle",
            "policy",
            "dag",
            "fanout",
            "schedules",
            "tx_enqueue",
            "durable",
            "soak",
        ),
    ),
    "full": Profile(
        name="full",
        drain_tasks=100_000,
        steady_rates=(100, 1_000),
        steady_seconds=30.0,
        search_rates=(2_000, 4_000, 8_000, 16_000),
        search_seconds=10.0,
        backlog_base=20_000,
        backlog_depth=1_000_000,
        cost_tasks=20_000,
        default_scenarios=(
            "drain",
            "steady",
            "cost",
            "idle",
            "backlog",
            "policy",
            "dag",
            "fanout",
            "schedules",
            "tx_enqueue",
            "durable",
            "soak",
        ),
    ),
}


@dataclass
class Context:
    """Everything a scenario needs besides the system under test."""

    profile: Profile
    label: str
    """The profile's name as reported: the profile, or "fast" on non-durable settings."""
    server: Server
    env: Env
    out_dir: Path
    console: Console
    overrides: dict[str, Any] = field(default_factory=dict)

    def size(self, key: str) -> Any:
        """A profile value, unless the command line overrode it."""
        return self.overrides.get(key, getattr(self.profile, key))

    def scratch(self, system: str, what: str) -> Path:
        """A fresh directory for one measurement's recorder files."""
        base = self.env.work_dir / system
        base.mkdir(parents=True, exist_ok=True)
        index = sum(1 for p in base.iterdir() if p.name.startswith(what))
        path = base / f"{what}-{index}"
        path.mkdir()
        return path
