"""What tenants declared: task and workflow definitions, concurrency strategies, static
rate limits, and the evaluation of a new run's policy against them.

:class:`Definitions` (in :mod:`.registry`) writes and caches them; the scheduler, ingest,
the workflow ingest and the client service depend on it, never on each other for
definitions. :mod:`.policy` is the pure evaluation of concurrency keys and rate-limit
units over a run's input.
"""

from stoker.engine.definitions.policy import RunPolicy, Strategy, evaluate_policy
from stoker.engine.definitions.registry import Definitions, Resolved, Workflows

__all__ = ["Definitions", "Resolved", "RunPolicy", "Strategy", "Workflows", "evaluate_policy"]
