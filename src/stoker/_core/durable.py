"""The rules of durable replay that the SDK and the engine must agree on (docs/durable.md).

A durable task's calls — steps, waits, child runs — are recorded by position in a log.
When the body runs again, each call is checked against what its position recorded
(:func:`check_call`, by :func:`fingerprint`), the log a branch shows is resolved by
:func:`visible_branch`, and recorded completions are handed back in the order they first
happened by a :class:`ReleaseGate`. Nothing here does I/O.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import heapq
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from stoker.errors import NonDeterminismError

STALL_TIMEOUT_S = 30.0
"""How long a replay may wait for a lower completion's call before it is declared stalled."""


class EntryKind(StrEnum):
    """What a durable call is. A sleep is a wait with only a timer."""

    STEP = "step"
    WAIT = "wait"
    CHILD = "child"


class EntryStatus(StrEnum):
    """Where a recorded call stands (``durable_entry.status``)."""

    PENDING = "pending"
    OK = "ok"
    ERROR = "error"
    DROPPED = "dropped"  # pending when a reset made it invisible; never settled


def fingerprint(
    kind: EntryKind | str,
    name: str,
    *,
    child_key: str | None = None,
    event_keys: Iterable[str] = (),
    timer: bool = False,
) -> str:
    """The identity of a call, compared on replay.

    It covers what makes two calls *the same operation* — the kind, the name (a step's name,
    a child's task or workflow), the child's ``child_key``, the event keys a wait listens to
    (sorted: their order in the call is not meaningful) and whether it has a timer — and
    leaves out arguments and durations, so that a changed sleep keeps its recorded deadline
    instead of failing the run.
    """
    identity = [str(kind), name, child_key, sorted(event_keys), timer]
    text = json.dumps(identity, separators=(",", ":"), ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Operation:
    """A call as recorded at a position or as the code made it."""

    kind: str
    name: str
    fingerprint: str

    def describe(self) -> str:
        return f"{self.kind} {self.name!r}"


def check_call(position: int, recorded: Operation | None, called: Operation) -> None:
    """Raises :class:`NonDeterminismError` when ``called`` is not the call recorded at
    ``position`` (nothing recorded there: the call is new, and fine)."""
    if recorded is None:
        return
    if recorded.kind == called.kind and recorded.fingerprint == called.fingerprint:
        return
    was, now = recorded.describe(), called.describe()
    if was == now:  # same kind and name, another key, event set or timer
        was, now = f"{was} [{recorded.fingerprint}]", f"{now} [{called.fingerprint}]"
    raise NonDeterminismError(
        f"replay diverged at position {position}: the log recorded {was}, the code called "
        f"{now}; fix the code, then replay or reset the run",
        position=position,
        recorded=was,
        called=now,
    )


@dataclass(frozen=True, slots=True)
class Branch:
    """A branch of a task's log: its parent (``None`` for the root) and where it forks."""

    parent: int | None
    fork_position: int


def visible_branch(branches: Mapping[int, Branch], branch: int, position: int) -> int | None:
    """The branch whose entry ``branch`` shows at ``position``: its own at or after its
    fork, its parent's before it, recursively (``None`` below the root's fork).

    The same rule as the ``visible_durable_log`` statement, for tests and the SDK.
    """
    current: int | None = branch
    while current is not None:
        b = branches[current]
        if position >= b.fork_position:
            return current
        current = b.parent
    return None


def visible_positions(
    branches: Mapping[int, Branch], branch: int, recorded: Iterable[tuple[int, int]]
) -> dict[int, int]:
    """Of ``recorded`` (branch, position) pairs, the ones ``branch`` shows: position →
    the branch it comes from."""
    return {
        position: b for b, position in recorded if visible_branch(branches, branch, position) == b
    }


class ReleaseGate:
    """Hands recorded completions back to a replaying body in their original order.

    Built from the visible log's settlements (``satisfied_seq`` → position), it lets
    ``await release(seq)`` return only once every lower known sequence was released, so the
    concurrent branches of a body (``asyncio.gather``) observe completions as they first
    happened. A sequence whose call has not been made yet holds later ones back; a
    deterministic body always makes it, so a release that waits longer than
    ``stall_timeout`` raises :class:`NonDeterminismError` naming that position. Sequences
    not known at construction (live completions after the replay) wait for every lower
    known one the same way.
    """

    def __init__(
        self, settlements: Mapping[int, int], *, stall_timeout: float = STALL_TIMEOUT_S
    ) -> None:
        self._positions = dict(settlements)
        self._waiting = sorted(settlements)  # known sequences not released yet
        self._stall_timeout = stall_timeout
        # Releases waiting for their turn: (seq, tie-breaker, future), lowest seq first.
        # Each is woken once, when every known sequence below it is released, so replaying
        # thousands of concurrent completions costs O(n log n), not a wake-up of every
        # waiter on every release.
        self._parked: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tie = itertools.count()

    def blocker(self, seq: int) -> int | None:
        """The lowest unreleased known sequence below ``seq`` (what it waits for)."""
        if self._waiting and self._waiting[0] < seq:
            return self._waiting[0]
        return None

    def unreleased(self) -> list[int]:
        """Positions whose completion was never released, in sequence order (a body that
        returns with some left may have diverged; a fail-fast gather can do it too)."""
        return [self._positions[s] for s in self._waiting]

    async def release(self, seq: int) -> None:
        """Waits until every lower known sequence was released, then releases ``seq``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._stall_timeout
        while (blocker := self.blocker(seq)) is not None:
            remaining = deadline - loop.time()
            turn: asyncio.Future[None] = loop.create_future()
            heapq.heappush(self._parked, (seq, next(self._tie), turn))
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    await turn
            except TimeoutError:
                position = self._positions[blocker]
                raise NonDeterminismError(
                    f"replay stalled at position {position}: its recorded completion "
                    f"(#{blocker}) must come first, but the code never made that call "
                    f"within {self._stall_timeout:g}s",
                    position=position,
                ) from None
        i = bisect.bisect_left(self._waiting, seq)
        if i < len(self._waiting) and self._waiting[i] == seq:
            del self._waiting[i]
        self._wake()

    def _wake(self) -> None:
        """Wakes the parked releases that nothing known below them holds back any more."""
        head = self._waiting[0] if self._waiting else None
        while self._parked and (head is None or self._parked[0][0] <= head):
            turn = heapq.heappop(self._parked)[2]
            if not turn.done():
                turn.set_result(None)


BRANCH_CHILD_SPAN = 1_000_000
"""Child indexes per branch of a log: a child recorded at position p of branch b is the
parent's child number (b - 1) * BRANCH_CHILD_SPAN + p, so a child re-executed after a reset
(a new branch) is a new run, never the one the abandoned branch spawned at that position."""

MAX_BRANCHES = 2_000
"""How many branches a log may have (resets + 1): their child indexes fit an integer."""


def child_index(branch: int, position: int) -> int:
    """The child index of a child recorded at ``position`` of ``branch``; ValueError when
    the position is beyond what a branch's children can take."""
    if not 1 <= position < BRANCH_CHILD_SPAN:
        raise ValueError(
            f"position {position}: a durable task records children at positions below "
            f"{BRANCH_CHILD_SPAN:,}"
        )
    return (branch - 1) * BRANCH_CHILD_SPAN + position


MAX_LOOKBACK_MS = 24 * 3600 * 1000
"""The longest lookback a durable wait may ask for (24 h)."""


@dataclass(frozen=True, slots=True)
class WaitLeaf:
    """One sleep or event condition of a durable wait, at ``path`` in its conditions: ``"i"``
    for the i-th item, ``"i.j"`` for the j-th condition of the i-th item, an ``or_()``."""

    path: str
    kind: str  # "sleep" or "event"
    ms: int = 0
    key: str = ""
    expression: str = ""
    scope: str = ""
    lookback_ms: int = 0

    def wire(self) -> dict[str, object]:
        if self.kind == "sleep":
            return {"kind": "sleep", "ms": self.ms}
        return {
            "kind": "event",
            "key": self.key,
            "expression": self.expression,
            "scope": self.scope,
            "lookback_ms": self.lookback_ms,
        }


def wait_request(items: Iterable[WaitLeaf | list[WaitLeaf]]) -> dict[str, object]:
    """The request a durable wait records: its items (ANDed), an item being one condition
    or a list of conditions of which one must hold (an ``or_()`` group)."""
    conditions: list[object] = []
    for item in items:
        if isinstance(item, list):
            conditions.append({"kind": "or", "items": [leaf.wire() for leaf in item]})
        else:
            conditions.append(item.wire())
    return {"conditions": conditions}


def _leaf(path: str, raw: Mapping[str, object]) -> WaitLeaf:
    kind = str(raw.get("kind", ""))
    if kind == "sleep":
        return WaitLeaf(path, kind, ms=int(str(raw.get("ms", 0))))
    if kind == "event":
        return WaitLeaf(
            path,
            kind,
            key=str(raw.get("key", "")),
            expression=str(raw.get("expression") or ""),
            scope=str(raw.get("scope") or ""),
            lookback_ms=int(str(raw.get("lookback_ms", 0))),
        )
    raise ValueError(f"unknown wait condition kind {kind!r} at {path}")


def wait_leaves(request: Mapping[str, object]) -> list[WaitLeaf]:
    """The sleep and event conditions of a recorded wait request, with their paths;
    ValueError when it is not one."""
    conditions = request.get("conditions")
    if not isinstance(conditions, list) or not conditions:
        raise ValueError("a wait needs at least one condition")
    leaves: list[WaitLeaf] = []
    for i, item in enumerate(conditions):
        if not isinstance(item, Mapping):
            raise ValueError(f"wait condition {i} is not an object")
        if item.get("kind") == "or":
            subs = item.get("items")
            if not isinstance(subs, list) or not subs:
                raise ValueError(f"wait condition {i}: an or group needs conditions")
            for j, sub in enumerate(subs):
                if not isinstance(sub, Mapping):
                    raise ValueError(f"wait condition {i}.{j} is not an object")
                leaves.append(_leaf(f"{i}.{j}", sub))
        else:
            leaves.append(_leaf(str(i), item))
    return leaves


def wait_holds(request: Mapping[str, object], satisfied: Iterable[str]) -> bool:
    """Whether a wait holds once the conditions at the paths ``satisfied`` are: every item
    holds, an or group when any of its conditions does."""
    done = set(satisfied)
    conditions = request.get("conditions")
    if not isinstance(conditions, list) or not conditions:
        return False
    for i, item in enumerate(conditions):
        if isinstance(item, Mapping) and item.get("kind") == "or":
            subs = item.get("items")
            count = len(subs) if isinstance(subs, list) else 0
            if not any(f"{i}.{j}" in done for j in range(count)):
                return False
        elif str(i) not in done:
            return False
    return True
