"""Controllers: the engine's leader loops, one per module.

Each is a :class:`~stoker.engine.service.LoopService` that runs its rounds only while this
replica holds the leader lease, so one replica at a time does the upkeep:

* :mod:`~stoker.engine.controllers.leadership` — the leader lease itself; its
  :class:`~stoker.engine.controllers.leadership.Leadership` is handed to every other loop;
* :mod:`~stoker.engine.controllers.timeouts` — schedule-to-start and execution timeouts;
* :mod:`~stoker.engine.controllers.liveness` — workers that stopped sending heartbeats;
* :mod:`~stoker.engine.controllers.sweeper` — due sleeps of workflow steps, stalled
  workflow runs;
* :mod:`~stoker.engine.controllers.durable_timers` — due sleeps of durable tasks;
* :mod:`~stoker.engine.controllers.crons` — cron ticks that are due: one run per tick;
* :mod:`~stoker.engine.controllers.retention` — moving finished runs to history, day
  partitions, vacuum, expired request keys.

Adding one: a new module here with a ``LoopService`` that takes the
``Leadership`` and checks ``leadership.is_leader`` before each round, built and listed in
the engine's services in :class:`stoker.engine.Engine` (after the leadership, so it stops
first). Work that runs inside other services' transactions is not a controller: it
belongs in :mod:`stoker.engine.flows`.
"""
