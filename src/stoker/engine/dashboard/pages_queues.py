"""The Queues page's data: what waits for a worker, for how long, and why.

An attempt waits in ``queue_item`` (one queue per task name) until the scheduler assigns it.
The page splits each queue's depth by priority and names why the attempts are not moving:

* **no eligible worker**: no live worker serves the task (all of the queue waits);
* **paused**: the task is paused (all of the queue waits);
* **rate limit**: deferred until a rate limit the run names has room;
* **deferred**: placed later for another reason (a retry's backoff, a placement retry).

Runs held back by a concurrency key are not queued yet: they wait for a slot of their key
(``concurrency_slot``), listed per task and key with how many runs of the key hold slots.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from stoker.db import Executor
from stoker.db.store import dashboard_pages as store
from stoker.engine.dashboard.pages_words import ago

MAX_KEYS = 100

REASONS = ("no eligible worker", "paused", "rate limit", "deferred", "concurrency key")
"""The reasons a run waits, in the order the page shows them."""


@dataclass(frozen=True, slots=True)
class QueueRow:
    """Waiting attempts of one task at one priority."""

    task_name: str
    priority: int
    depth: int
    ready: int
    oldest: str
    blocked: dict[str, int]


@dataclass(frozen=True, slots=True)
class KeyWait:
    """Runs of one task waiting for a slot of one concurrency key."""

    task_name: str
    expression: str
    key: str
    max_runs: int
    waiting: int
    holding: int
    oldest: str


@dataclass(slots=True)
class QueuesView:
    """The whole page."""

    queues: list[QueueRow] = field(default_factory=list)
    keys: list[KeyWait] = field(default_factory=list)
    totals: Counter[str] = field(default_factory=Counter)
    """Blocked runs per reason, over every queue and key."""
    depth: int = 0


async def queues(db: Executor, tenant_id: int) -> QueuesView:
    """The tenant's queues and concurrency waits."""
    view = QueuesView()
    for q in await store.dash_queue_depths(db, store.DashTenant(tenant_id)):
        blocked: dict[str, int] = {}
        if not q["served"]:
            blocked["no eligible worker"] = q["depth"]
        elif q["paused"]:
            blocked["paused"] = q["depth"]
        else:
            if q["rate_limited"]:
                blocked["rate limit"] = q["rate_limited"]
            if q["deferred"]:
                blocked["deferred"] = q["deferred"]
        oldest = q["oldest_created_at"]
        view.queues.append(
            QueueRow(
                task_name=q["queue"],
                priority=q["priority"],
                depth=q["depth"],
                ready=q["depth"] - sum(blocked.values()),
                oldest=ago(oldest, q["db_now"]) if oldest else "",
                blocked=blocked,
            )
        )
        view.totals.update(blocked)
        view.depth += q["depth"]
    rows = await store.dash_concurrency_waiting(db, store.DashLimited(tenant_id, MAX_KEYS))
    for k in rows:
        view.keys.append(
            KeyWait(
                task_name=k["task_name"],
                expression=k["expression"],
                key=k["key"],
                max_runs=k["max_runs"],
                waiting=k["waiting"],
                holding=k["holding"],
                oldest=ago(k["oldest_at"], k["db_now"]),
            )
        )
        view.totals["concurrency key"] += k["waiting"]
    return view
