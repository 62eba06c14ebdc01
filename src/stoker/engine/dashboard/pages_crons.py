"""The Crons page's data: each cron in words, its next fire times as waits ("in 3 min")
and local times in its zone, and its last fires with their runs.

Crons are read and changed through the engine's :class:`~stoker.engine.crons.CronAdmin`,
the same service the REST API and the SDK call.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stoker._core import cron
from stoker._core.cron import CronError
from stoker.engine.crons import CronView
from stoker.engine.dashboard.pages_words import ago, cron_in_words, until


@dataclass(frozen=True, slots=True)
class Fire:
    """A tick the cron handled."""

    tick: str
    outcome: str
    run_id: uuid.UUID | None
    status: str | None


@dataclass(frozen=True, slots=True)
class CronPage:
    """A cron as the page shows it."""

    name: str
    target_kind: str
    target: str
    expression: str
    timezone: str
    words: str
    enabled: bool
    source: str
    overlap: str
    input: object
    next_fires: list[str]
    last_fires: list[Fire]


def local(at: datetime, zone: str) -> str:
    """``at`` as a wall-clock time in ``zone`` ("Thu 03 Dec 16:30 CET")."""
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        tz = None
    shown = at.astimezone(tz) if tz is not None else at
    return shown.strftime("%a %d %b %H:%M %Z").strip()


def cron_page(view: CronView, now: datetime) -> CronPage:
    """One cron read through CronAdmin, for the page."""
    row = view.row
    try:
        words = cron_in_words(cron.parse(row["expression"], row["timezone"]))
    except CronError:
        words = f"cron {row['expression']}"
    return CronPage(
        name=row["name"],
        target_kind="workflow" if row["workflow_name"] else "task",
        target=row["workflow_name"] or row["task_name"] or "",
        expression=row["expression"],
        timezone=row["timezone"],
        words=words,
        enabled=row["enabled"],
        source=row["source"],
        overlap=row["overlap"],
        input=row["input"],
        next_fires=[
            f"{until(at, now)} ({local(at, row['timezone'])})" for at in view.next_fire_times
        ],
        last_fires=[
            Fire(
                tick=ago(f["tick"], now),
                outcome=f["outcome"],
                run_id=f["run_id"],
                status=f["status"],
            )
            for f in view.last_fires
        ],
    )
