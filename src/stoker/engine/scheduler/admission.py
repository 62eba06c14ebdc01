"""Concurrency admission: moving runs from "waiting for a concurrency slot" to the queue.

All admissions for a strategy happen under the strategy's row lock (taken in id order, so
replicas serialise and never deadlock), and admitted slots are released only when their
run reaches a final state (a trigger on ``task``, in that same transaction). So the count of
admitted runs per key — and therefore of running ones — never exceeds ``max_runs``.

Per (strategy, key), with ``held`` the runs already admitted (oldest first) and
``waiting`` the eligible candidates (priority, then age):

* GROUP_ROUND_ROBIN admits the first ``max_runs - len(held)`` of ``waiting``;
* CANCEL_NEWEST admits the same and cancels the rest of ``waiting``;
* CANCEL_IN_PROGRESS keeps the newest ``max_runs`` of ``held + waiting`` (by creation) and
  cancels the others, running or not.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import TYPE_CHECKING

from stoker._core.wire import ConcurrencyLimitStrategy
from stoker.db import Executor
from stoker.db.store import concurrency as concurrency_store
from stoker.db.store import queue as queue_store
from stoker.engine.attempts import Attempts, stops

if TYPE_CHECKING:
    from stoker.engine.dispatcher import Dispatcher
    from stoker.engine.signals import Signals

# Candidates considered per round; more wait for the next round.
CANDIDATES_PER_ROUND = 5000


def _cancel_error(strategy: str, key: str) -> str:
    return json.dumps(
        {
            "type": "ConcurrencyCancelledError",
            "message": f"cancelled by the concurrency limit on key {key!r} ({strategy})",
            "traceback": "",
        }
    )


async def admit(
    db: Executor, signals: Signals, dispatcher: Dispatcher, attempts: Attempts, tenant_id: int
) -> bool:
    """One admission round for a tenant; True while runs are still waiting afterwards.
    (Admitted runs need no signal: the scheduler that admits them claims them next.)"""
    cancelled_rows = []
    async with signals.transaction(db) as (tx, out):
        strategies = {
            int(r["id"]): (int(r["max_runs"]), ConcurrencyLimitStrategy(r["limit_strategy"]))
            for r in await concurrency_store.lock_waiting_strategies(
                tx, concurrency_store.LockWaitingStrategies(tenant_id)
            )
        }
        if not strategies:
            return False
        candidates = await concurrency_store.admission_candidates(
            tx,
            concurrency_store.AdmissionCandidates(
                tenant_id, sorted(strategies), CANDIDATES_PER_ROUND
            ),
        )
        if not candidates:
            return False
        waiting: dict[tuple[int, str], list[int]] = defaultdict(list)
        for c in candidates:
            waiting[(int(c["strategy_id"]), str(c["key"]))].append(int(c["task_id"]))
        pairs = sorted(waiting)
        held: dict[tuple[int, str], list[int]] = defaultdict(list)
        for h in await concurrency_store.admitted_slots(
            tx, concurrency_store.AdmittedSlots([p[0] for p in pairs], [p[1] for p in pairs])
        ):
            held[(int(h["strategy_id"]), str(h["key"]))].append(int(h["task_id"]))

        admit_pairs: list[tuple[int, int]] = []
        cancel: dict[int, str] = {}
        still_waiting = len(candidates) >= CANDIDATES_PER_ROUND
        for (strategy_id, key), queue in waiting.items():
            max_runs, kind = strategies[strategy_id]
            have = held[(strategy_id, key)]
            if kind is ConcurrencyLimitStrategy.CANCEL_IN_PROGRESS:
                everyone = sorted(have + queue)
                keep = set(everyone[-max_runs:])
                admit_pairs += [(t, strategy_id) for t in queue if t in keep]
                for t in everyone:
                    if t not in keep:
                        cancel[t] = _cancel_error(kind.value, key)
                continue
            room = max(0, max_runs - len(have))
            admit_pairs += [(t, strategy_id) for t in queue[:room]]
            if kind is ConcurrencyLimitStrategy.CANCEL_NEWEST:
                for t in queue[room:]:
                    cancel[t] = _cancel_error(kind.value, key)
            elif len(queue) > room:
                still_waiting = True
        admit_pairs = [(t, s) for t, s in admit_pairs if t not in cancel]
        if admit_pairs:
            ready = await concurrency_store.admit_slots(
                tx,
                concurrency_store.AdmitSlots(
                    [t for t, _ in admit_pairs], [s for _, s in admit_pairs]
                ),
            )
            if ready:
                await queue_store.enqueue_tasks(
                    tx, queue_store.EnqueueTasks([int(r["task_id"]) for r in ready])
                )
        if cancel:
            ids = sorted(cancel)
            cancelled_rows = await attempts.cancel(tx, out, ids, [cancel[t] for t in ids])
    for worker_id, items in stops(cancelled_rows, "cancelled by a concurrency limit").items():
        await dispatcher.cancel(worker_id, items)
    return still_waiting
