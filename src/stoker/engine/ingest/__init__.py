"""Ingest: every run is written here, by one group-commit buffer.

* :mod:`.buffer` — the :class:`Ingest` service: validates task triggers, parks them and
  the runs other ingests hand it (workflow runs, child spawns), and writes everything
  parked in one transaction per tenant;
* :mod:`.tasks` — task rows: what a trigger carries, payload checks, ``insert_tasks``;
* :mod:`.workflows` — workflow runs, child spawns and user events, validated and handed
  to the buffer (events are written there);
* :mod:`.requests` — request keys, so a retried call creates nothing twice;
* :mod:`.idempotency` — user-facing idempotency keys: a trigger whose key names a live
  run gets that run back.
"""

from stoker.engine.ingest.buffer import BatchWriter, CallWriter, Ingest, RunIds, Written
from stoker.engine.ingest.tasks import (
    MAX_RUN_AT_MS,
    NewTaskRun,
    TriggerInput,
    check_payload,
    insert_params,
    write_task_runs,
)

__all__ = [
    "MAX_RUN_AT_MS",
    "BatchWriter",
    "CallWriter",
    "Ingest",
    "NewTaskRun",
    "RunIds",
    "TriggerInput",
    "Written",
    "check_payload",
    "insert_params",
    "write_task_runs",
]
