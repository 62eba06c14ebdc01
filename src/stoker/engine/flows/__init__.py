"""Flows: workflow logic that runs inline, inside the transactions of other services.

Nothing here is a loop or a controller. The dispatcher's flush, the ending of attempts,
the workflow ingest and cancel/replay call into these modules with the transaction they
hold, so a step's end and its consequences commit together:

* :mod:`~stoker.engine.flows.progression` — DAG progression: what happens in a workflow
  run when one of its steps ends (plan in memory, apply in a few batched statements);
* :mod:`~stoker.engine.flows.conditions` — the registry of what waiting steps wait for
  (``task_wait``): registering sleeps and events, firing due sleeps.

The leader loop that fires sleeps on time is :mod:`stoker.engine.controllers.sweeper`.
"""
