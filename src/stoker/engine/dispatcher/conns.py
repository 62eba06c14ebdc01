"""Connected workers as the dispatcher sees them: slots, held attempts, labels.

A :class:`WorkerConn` is one worker stream on this replica. Its slots come in two pools
(``slots`` and ``durable_slots``); each attempt assigned to it is :class:`Held` with its
slot cost until it ends, is cancelled, or gives its slots back while it keeps running
(``release``). ``used`` is kept in step with ``running`` by ``hold``/``unhold``/``release``
so the scheduler's placement reads free slots without adding them up. The ``outbox`` carries
what is sent to the worker (assignments, cancellations); ``None`` closes the stream.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from stoker._core.wire import json_problem
from stoker._proto import engine_pb2 as pb
from stoker.errors import InvalidRequestError


@dataclass(slots=True)
class Held:
    """An attempt running on a worker and what it holds of the worker's slots."""

    attempt: int
    cost: int = 1
    durable: bool = False
    since: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class WorkerConn:
    """A connected worker as the engine sees it."""

    worker_id: int
    external_id: uuid.UUID
    tenant_id: int
    name: str
    slots: int
    task_names: frozenset[str]
    running: dict[int, Held] = field(default_factory=dict)  # by task_id
    durable_slots: int = 0
    # Slots held in each pool (index 0: slots, 1: durable_slots), kept in step with
    # ``running`` by hold/release/unhold so placement never has to add them up.
    used: list[int] = field(default_factory=lambda: [0, 0])
    labels: dict[str, Any] = field(default_factory=dict)
    outbox: asyncio.Queue[pb.EngineMessage | None] = field(default_factory=asyncio.Queue)
    closed: bool = False
    draining: bool = False
    # Paused by an operator (engine/workers): keeps what it runs, is assigned nothing new.
    paused: bool = False
    # The worker said goodbye (it is stopping), as opposed to a stream that just ended: a
    # killed worker's stream may end as quietly as a clean close.
    ended_cleanly: bool = False

    def free(self, durable: bool = False) -> int:
        """Free slots in one pool (none while draining or paused)."""
        if self.draining or self.closed or self.paused:
            return 0
        return (self.durable_slots if durable else self.slots) - self.used[durable]

    @property
    def free_slots(self) -> int:
        return self.free(False) + self.free(True)

    def __post_init__(self) -> None:
        for held in self.running.values():
            self.used[held.durable] += held.cost

    def hold(self, task_id: int, attempt: int, cost: int, durable: bool) -> None:
        """Reserves slots for an attempt assigned to this worker."""
        self.unhold(task_id)
        self.running[task_id] = Held(attempt, cost, durable)
        self.used[durable] += cost

    def unhold(self, task_id: int, attempt: int | None = None) -> bool:
        """Forgets an attempt (of any number, or of ``attempt``); True if it was held."""
        held = self.running.get(task_id)
        if held is None or (attempt is not None and held.attempt != attempt):
            return False
        del self.running[task_id]
        self.used[held.durable] -= held.cost
        return True

    def release(self, task_id: int, attempt: int) -> bool:
        """Gives an attempt's slots back while it keeps running; True if that freed any."""
        held = self.running.get(task_id)
        if held is None or held.attempt != attempt or not held.cost:
            return False
        self.used[held.durable] -= held.cost
        held.cost = 0
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(None)


def parse_labels(raw: bytes) -> dict[str, Any]:
    """A worker's labels: a JSON object of strings and numbers."""
    problem = json_problem(raw) if raw else None
    if problem is not None:
        raise InvalidRequestError(f"worker labels are refused: {problem}")
    labels = json.loads(raw) if raw else {}
    if not isinstance(labels, dict) or not all(
        isinstance(v, str | int | float) and not isinstance(v, bool) for v in labels.values()
    ):
        raise InvalidRequestError("worker labels must map names to strings or numbers")
    return labels
