"""Request keys: a retried trigger call returns the runs of the first, never new ones.

Every trigger call of the SDK (``Trigger``, ``TriggerWorkflows``, ``SpawnChildren``,
``PushEvents``) carries a ``request_key`` it generates once per logical call and sends
again on every retry of that call (the retry loop resends the same request message). The
engine records the key in ``trigger_request``, **in the same transaction** that stores what
the call created, together with the ids it answered; so either both are stored or neither
is, and a crash between them cannot duplicate. A call whose key is recorded already is a
retry: it creates nothing and answers with the recorded ids.

* **Where a retry can meet its first call.** Still in the write buffer (the first call's
  connection dropped while it waited for the flush; its runs are written anyway): both are
  in the same flush, the second follows the first (:func:`claim`). Being written by this
  replica or another one: the primary key ``(tenant_id, request_key)`` makes the second
  insert wait for the first transaction, then skip the key if it committed (and take it if
  it rolled back). Already committed: found by the insert.
* **Tenants.** The key is scoped by tenant (it is part of the primary key), so one
  tenant's key never answers another tenant's runs.
* **Content.** The key is recorded with the call's kind and a SHA-256 digest of its
  content (the request message as the engine parsed it). A key reused with other content is
  a client bug, not a retry: it is refused with :class:`~stoker.errors.InvalidRequestError`
  rather than answered with runs the caller did not ask for.
* **Bounded.** Keys are kept ``request_key_ttl_s`` (default 10 minutes), longer than any
  SDK retry loop (``connect_timeout_s``, default 30 s); the leader's retention loop deletes
  older ones. A key is honoured for at least the TTL. An empty key opts out (raw gRPC
  callers that send none get at-least-once creation, as before).
* **Cost.** One more multi-row insert per flush, one row per call; a call's ids travel
  and are stored as one ``bytea`` of 16 bytes per id (a ``uuid[]`` of 1,000 cost several
  times more to pass and store).
* **Why a table and not ids derived from the key.** Deriving run ids from ``(tenant, key,
  index)`` would make duplicate inserts collide, but a retry would then need every write
  path (tasks, DAG rows, child links, events) to tolerate conflicts one by one, and the
  ids of runs moved to history or pruned would be reusable. One row per call costs
  little (docs/idempotency.md has the measurement).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from stoker.db import Executor
from stoker.db.store import requests as request_store
from stoker.errors import InvalidRequestError

MAX_KEY_CHARS = 200


@dataclass(frozen=True, slots=True)
class RequestKey:
    """One call's key, what kind of call it is, and the digest of its content."""

    key: str
    kind: str
    fingerprint: bytes
    keep_s: int = 0
    """Kept this many seconds (0: ``request_key_ttl_s``): a webhook delivery's key."""

    @classmethod
    def of(cls, key: str, kind: str, content: bytes) -> RequestKey | None:
        """The key of a call (None when the caller sent none); InvalidRequestError when it
        is too long or holds NUL (Postgres text cannot). ``content``: the call's request,
        serialized deterministically."""
        if not key:
            return None
        if len(key) > MAX_KEY_CHARS:
            raise InvalidRequestError(
                f"request_key is {len(key)} characters, over the limit of {MAX_KEY_CHARS}"
            )
        if "\0" in key:
            raise InvalidRequestError(f"request_key {key!r} is refused: it holds NUL")
        return cls(key, kind, hashlib.sha256(kind.encode() + b"\0" + content).digest())


@dataclass(frozen=True, slots=True)
class Call:
    """A keyed call about to be written: its key and the answer it will give."""

    request: RequestKey | None
    run_ids: list[str]
    satisfied: int = 0


@dataclass(frozen=True, slots=True)
class Answer:
    """What a retried call answers: the first call's ids (and events' satisfied count)."""

    run_ids: list[str]
    satisfied: int = 0


class Replayed(Exception):
    """Raised inside a transaction to roll it back: the call is a retry (see ``answer``)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__("retried call")
        self.answer = answer


def _mismatch(request: RequestKey) -> InvalidRequestError:
    return InvalidRequestError(
        f"request_key {request.key!r} was used by an earlier call with other content (a "
        f"retry must resend the same request); use a new key for a new {request.kind} call"
    )


def _answer(request: RequestKey, row: request_store.StoredRequest) -> Answer | InvalidRequestError:
    if row["kind"] != request.kind or bytes(row["fingerprint"]) != request.fingerprint:
        return _mismatch(request)
    raw = bytes(row["run_ids"])
    ids = [str(uuid.UUID(bytes=raw[i : i + 16])) for i in range(0, len(raw), 16)]
    return Answer(ids, int(row["satisfied"]))


async def claim(
    tx: Executor, tenant_id: int, calls: Sequence[Call]
) -> list[Answer | InvalidRequestError | None]:
    """Records the keys of ``calls`` inside ``tx``, which then writes what they create.
    Per call: None when it is to be written (no key, or its key is new), an :class:`Answer`
    when it is a retry (of a committed call, or of an earlier call in ``calls``), or the
    error to refuse it with (its key was used with other content)."""
    p = claim_params(tenant_id, calls)
    if p is None:
        return [None] * len(calls)
    rows = await request_store.claim_request_keys(tx, p)
    return await claimed(tx, tenant_id, calls, {str(r["request_key"]) for r in rows})


def claim_params(tenant_id: int, calls: Sequence[Call]) -> request_store.ClaimRequestKeys | None:
    """The ``claim_request_keys`` statement of :func:`claim` (None: no call has a key), for
    a caller that sends it with other statements and then calls :func:`claimed`."""
    new: list[Call] = []
    seen: set[str] = set()
    for call in calls:
        if call.request is not None and call.request.key not in seen:
            seen.add(call.request.key)
            new.append(call)
    if not new:
        return None
    starts, at = [], 1
    for call in new:
        starts.append(at)
        at += 16 * len(call.run_ids)
    return request_store.ClaimRequestKeys(
        tenant_id,
        keys=[c.request.key for c in new if c.request],
        kinds=[c.request.kind for c in new if c.request],
        fingerprints=[c.request.fingerprint for c in new if c.request],
        starts=starts,
        lengths=[16 * len(c.run_ids) for c in new],
        satisfied=[c.satisfied for c in new],
        # Hex of every id, in one go (parsing 1,000 UUID objects would cost more).
        run_ids=bytes.fromhex("".join(i for c in new for i in c.run_ids).replace("-", "")),
        keep_s=[c.request.keep_s for c in new if c.request],
    )


async def claimed(
    tx: Executor, tenant_id: int, calls: Sequence[Call], keys: set[str]
) -> list[Answer | InvalidRequestError | None]:
    """What :func:`claim` answers, given the keys its statement recorded (``keys``)."""
    result: list[Answer | InvalidRequestError | None] = [None] * len(calls)
    first: dict[str, int] = {}
    for n, call in enumerate(calls):
        if call.request is not None and call.request.key not in first:
            first[call.request.key] = n
    taken = [k for k in first if k not in keys]
    recorded_rows: dict[str, request_store.StoredRequest] = {}
    if taken:
        rows = await request_store.find_request_keys(
            tx, request_store.FindRequestKeys(tenant_id, taken)
        )
        recorded_rows = {str(row["request_key"]): row for row in rows}
    for n, call in enumerate(calls):
        r = call.request
        if r is None:
            continue
        if r.key in recorded_rows:
            result[n] = _answer(r, recorded_rows[r.key])
        elif first[r.key] != n:
            leader = calls[first[r.key]]
            assert leader.request is not None
            same = (leader.request.kind, leader.request.fingerprint) == (r.kind, r.fingerprint)
            result[n] = Answer(leader.run_ids, leader.satisfied) if same else _mismatch(r)
    return result


async def recorded(db: Executor, tenant_id: int, request: RequestKey | None) -> Answer | None:
    """The answer of an earlier call with this key (None: none recorded); raises
    InvalidRequestError when that call had other content. For calls that are not buffered
    (spawns, events), checked before doing any work; :func:`claim` in the call's
    transaction remains what makes it exact."""
    if request is None:
        return None
    rows = await request_store.find_request_keys(
        db, request_store.FindRequestKeys(tenant_id, [request.key])
    )
    if not rows:
        return None
    answer = _answer(request, rows[0])
    if isinstance(answer, InvalidRequestError):
        raise answer
    return answer


async def record(tx: Executor, tenant_id: int, call: Call) -> None:
    """Records one call's key inside its transaction, at its end; raises :class:`Replayed`
    (rolling the transaction back) when a concurrent call with the key committed first,
    InvalidRequestError when that one had other content."""
    (answer,) = await claim(tx, tenant_id, [call])
    if isinstance(answer, InvalidRequestError):
        raise answer
    if answer is not None:
        raise Replayed(answer)


async def prune(db: Executor, ttl_s: float, batch: int) -> int:
    """Deletes the keys older than ``ttl_s``; how many."""
    total = 0
    while True:
        n = await request_store.prune_request_keys(db, request_store.PruneRequestKeys(ttl_s, batch))
        total += n
        if n < batch:
            return total
