"""What tenants declared: task and workflow definitions, concurrency strategies, static
rate limits, crons declared on tasks, and the evaluation of a new run's policy against them.

:class:`Definitions` (in :mod:`.registry`) writes and caches them; the scheduler, ingest,
the workflow ingest and the client service depend on it, never on each other for
definitions. :mod:`.policy` is the pure evaluation of concurrency keys and rate-limit
units over a run's input.
"""

from stoker.engine.definitions.policy import RunPolicy, Strategy, evaluate_policy
from stoker.engine.definitions.registry import (
    CRONS_CHANNEL,
    NEXT_FIRES,
    Definitions,
    Resolved,
    Workflows,
    cron_name,
    upcoming,
)

__all__ = [
    "CRONS_CHANNEL",
    "NEXT_FIRES",
    "Definitions",
    "Resolved",
    "RunPolicy",
    "Strategy",
    "Workflows",
    "cron_name",
    "evaluate_policy",
    "upcoming",
]
