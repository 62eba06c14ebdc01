"""Placement: which connected worker runs a claimed item, decided in memory.

Pure functions over the scheduler's view of connected workers (:class:`WorkerConn`: task
names, labels, slots held per pool) and an item's task config; the scheduler calls them
once per claimed item inside its round (docs/scheduler.md):

* :func:`eligible` is the hard filter: the worker serves the item's queue, is neither
  closed nor draining, is the desired worker of a hard-sticky item, and has every
  required label.
* :func:`score` ranks the eligible: the desired worker, then the weights of optional
  labels, then free slots. :func:`pick` takes the best one with room for the item's
  slot cost now.
* :func:`stuck` tells an item that cannot run for reasons of its own (nobody may run it,
  or its one hard-sticky worker is busy) from one that only lost to items ahead of it:
  the first steps aside, the second keeps its place at the head of its queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stoker._core.wire import StickyStrategy, TaskConfig
from stoker.engine.dispatcher.conns import WorkerConn


def eligible(conn: WorkerConn, item: Mapping[str, Any], cfg: TaskConfig) -> bool:
    """Whether ``conn`` may ever run ``item`` (ignoring its free slots)."""
    if item["queue"] not in conn.task_names or conn.closed or conn.draining:
        return False
    desired = item.get("desired_worker_id")
    if cfg.sticky is StickyStrategy.HARD and desired is not None and conn.worker_id != desired:
        return False
    return all(
        label.matches(conn.labels.get(key))
        for key, label in cfg.desired_worker_labels.items()
        if label.required
    )


def score(conn: WorkerConn, item: Mapping[str, Any], cfg: TaskConfig) -> tuple[int, int, int]:
    """How much ``item`` wants ``conn``, compared as a tuple: the desired (sticky) worker
    first, then the summed weights of the optional labels it matches, then free slots in
    the item's pool (the least busy worker wins a tie)."""
    preferred = int(conn.worker_id == item.get("desired_worker_id"))
    weight = sum(
        label.weight
        for key, label in cfg.desired_worker_labels.items()
        if not label.required and label.matches(conn.labels.get(key))
    )
    return preferred, weight, conn.free(cfg.durable)


def pick(conns: list[WorkerConn], item: Mapping[str, Any], cfg: TaskConfig) -> WorkerConn | None:
    """The best worker for ``item`` with room for it now, or None."""
    best: WorkerConn | None = None
    best_score: tuple[int, int, int] | None = None
    for conn in conns:
        if conn.free(cfg.durable) < cfg.slot_cost or not eligible(conn, item, cfg):
            continue
        ranked = score(conn, item, cfg)
        if best_score is None or ranked > best_score:
            best, best_score = conn, ranked
    return best


def stuck(connected: list[WorkerConn], item: Mapping[str, Any], cfg: TaskConfig) -> bool:
    """Whether ``item`` cannot run now for reasons of its own, so it must step aside rather
    than hold a place at the head of its queue: no connected worker may run it (required
    labels nobody has), or it is bound to one worker (hard sticky) that is busy. An item
    that merely lost to items ahead of it keeps its place."""
    if not any(eligible(c, item, cfg) for c in connected):
        return True
    return cfg.sticky is StickyStrategy.HARD and item.get("desired_worker_id") is not None
