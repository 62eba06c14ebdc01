"""Idempotency keys: a trigger whose key names a live run gets that run back.

A run may carry a user-facing key (``run(..., idempotency_key="order-42")``, or one a
task's declared ``Idempotency(expression=...)`` computes from the run's input). Unlike a
request key (:mod:`.requests`, the SDK's own retry safety for one call), it deduplicates
*different* calls: while the run it names is live, every trigger with the key answers
with that run's id, marked deduplicated, and creates nothing.

* **Live.** In TTL mode until the key's ``expires_at``; otherwise (the default) while its
  run is not finished. A key that is no longer live is taken over by the next run.
* **Exactly one run per key**, whatever the concurrency. The flush that writes the runs
  resolves their keys in its transaction (:func:`resolve`): it takes a transaction-level
  advisory lock per key (sorted, so two flushes cannot deadlock), reads the recorded keys,
  and records the new ones; a flush on another replica with the same key waits for the
  lock and then sees the committed key. Within one flush the first item with a key makes
  the run and the others follow it.
* **Per tenant**: the key's table is keyed by ``(tenant_id, key)``; a declared
  expression's key is ``"<task name>:<value>"``, so two tasks' expressions never collide.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from stoker._core.cel import evaluate
from stoker._core.wire import TaskConfig
from stoker.db import Executor
from stoker.db.store import idempotency as store
from stoker.errors import InvalidRequestError

MAX_KEY_CHARS = 200
MAX_TTL_MS = 366 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class IdemKey:
    """A run's idempotency key; ``ttl_ms`` 0: live until the run finishes."""

    key: str
    ttl_ms: int = 0


def check(key: str, ttl_ms: int, who: str) -> IdemKey | None:
    """The key a trigger named (None: none); InvalidRequestError for a bad one."""
    if ttl_ms < 0 or ttl_ms > MAX_TTL_MS:
        raise InvalidRequestError(f"{who}: idempotency_ttl_ms {ttl_ms} is outside 0..{MAX_TTL_MS}")
    if not key:
        return None
    if len(key) > MAX_KEY_CHARS:
        raise InvalidRequestError(
            f"{who}: idempotency_key is {len(key)} characters, over the limit of {MAX_KEY_CHARS}"
        )
    if "\0" in key:
        raise InvalidRequestError(f"{who}: idempotency_key {key[:50]!r} is refused: it holds NUL")
    return IdemKey(key, ttl_ms)


def key_for(
    task_name: str, config: TaskConfig, key: str, ttl_ms: int, raw: bytes, metadata: bytes
) -> IdemKey | None:
    """A task run's key: the one it was triggered with, else the one its task's declared
    expression gives (InvalidRequestError when it fails or gives nothing usable). The
    declared ttl applies when the trigger names none."""
    declared = config.idempotency
    ttl = ttl_ms or (declared.ttl_ms if declared else 0)
    explicit = check(key, ttl, f"task {task_name!r}")
    if explicit is not None or declared is None or not declared.expression:
        return explicit
    what = f"task {task_name!r}: idempotency expression"
    value = evaluate(
        declared.expression,
        json.loads(raw) if raw else None,
        json.loads(metadata) if metadata else {},
        what,
    )
    if value is None or value == "" or isinstance(value, (dict, list)):
        raise InvalidRequestError(
            f"{what} {declared.expression!r} gave {value!r}; it must give a string or a number"
        )
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return check(f"{task_name}:{value}", ttl, f"task {task_name!r}")


@dataclass(frozen=True, slots=True)
class Decision:
    """What one keyed item answers: the run id, and whether it is an existing run's."""

    run_id: str
    deduplicated: bool


def _lock_of(tenant_id: int, key: str) -> int:
    """A signed 64-bit advisory lock id for the tenant's key (collisions only serialize)."""
    digest = uuid.uuid5(uuid.NAMESPACE_OID, f"{tenant_id}\0{key}").int >> 64
    return digest - (1 << 64) if digest >= 1 << 63 else digest


async def resolve(
    tx: Executor, tenant_id: int, items: Sequence[tuple[IdemKey, str]]
) -> list[Decision]:
    """Inside the flush's transaction: for each ``(key, new run id)`` item, in order, the
    id to answer; records the keys of the new runs (the caller writes exactly the items
    not deduplicated)."""
    keys = sorted({k.key for k, _ in items})
    locks = sorted({_lock_of(tenant_id, k) for k in keys})
    await store.lock_idempotency_keys(tx, store.LockIdempotencyKeys(locks))
    found = await store.find_idempotency_keys(tx, store.FindIdempotencyKeys(tenant_id, keys))
    live = {r["key"]: str(r["run_id"]) for r in found if r["live"]}
    decisions: list[Decision] = []
    new = store.PutIdempotencyKeys(tenant_id, [], [], [])
    for key, run_id in items:
        existing = live.get(key.key)
        if existing is not None:
            decisions.append(Decision(existing, True))
            continue
        live[key.key] = run_id
        new.keys.append(key.key)
        new.run_ids.append(uuid.UUID(run_id))
        new.ttls_ms.append(key.ttl_ms)
        decisions.append(Decision(run_id, False))
    if new.keys:
        await store.put_idempotency_keys(tx, new)
    return decisions


async def prune(db: Executor, batch: int) -> int:
    """Deletes expired TTL keys; how many."""
    total = 0
    while True:
        n = await store.prune_idempotency_keys(db, store.PruneIdempotencyKeys(batch))
        total += n
        if n < batch:
            return total
