"""Durable tasks on the engine side (docs/durable.md): the log a durable attempt reads and
appends to over its worker's stream, and the wake-up hints sent to workers when something
in a log is settled.

* :mod:`~stoker.engine.durable.log` — :class:`~stoker.engine.durable.log.DurableLogs`
  answers a worker's durable requests (open an invocation, re-read, append calls), each in
  one transaction under the log's row lock;
* :mod:`~stoker.engine.durable.children` — :class:`~stoker.engine.durable.children.ChildEnds`
  settles a durable parent's ``child`` entry in the transaction that finished the child;
* :mod:`~stoker.engine.durable.waits` — :class:`~stoker.engine.durable.waits.DurableWaits`
  registers the conditions of ``wait_for_event`` / ``wait_for`` in the condition registry
  and settles the waits that hold (after an event, a sleep, or a lookback);
* :mod:`~stoker.engine.durable.wake` — :class:`~stoker.engine.durable.wake.Wakes` tells
  the workers running tasks whose logs changed, directly when connected here, else through
  the replica holding the stream (``stoker_durable``).

The leader loop that fires due timers is :mod:`stoker.engine.controllers.durable_timers`.

The package imports none of its modules: ingest imports :mod:`~stoker.engine.durable.waits`
and :mod:`~stoker.engine.durable.settled`, and :mod:`~stoker.engine.durable.log` imports
ingest (to spawn children), so each is imported by its own name.
"""
