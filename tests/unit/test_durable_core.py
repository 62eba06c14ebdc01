"""The pure replay rules (stoker._core.durable): fingerprints, the non-determinism check,
branch visibility against a model of resets, and the release gate's ordering."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stoker._core.durable import (
    Branch,
    EntryKind,
    Operation,
    ReleaseGate,
    check_call,
    fingerprint,
    visible_branch,
    visible_positions,
)
from stoker.errors import NonDeterminismError, StokerError

# -- fingerprints and the check -------------------------------------------------------


def test_fingerprint_covers_identity_not_arguments() -> None:
    wait = fingerprint(EntryKind.WAIT, "verify", event_keys=["b", "a"], timer=True)
    assert wait == fingerprint("wait", "verify", event_keys=["a", "b"], timer=True)
    assert wait != fingerprint("wait", "verify", event_keys=["a", "b"], timer=False)
    assert wait != fingerprint("wait", "verify", event_keys=["a"], timer=True)
    assert fingerprint("child", "welcome", child_key="k1") != fingerprint(
        "child", "welcome", child_key="k2"
    )
    assert fingerprint("step", "charge") != fingerprint("child", "charge")
    assert fingerprint("step", "charge") != fingerprint("step", "refund")
    assert len(fingerprint("step", "charge")) == 16


def op(kind: str, name: str, **identity: object) -> Operation:
    return Operation(kind, name, fingerprint(kind, name, **identity))  # type: ignore[arg-type]


def test_a_new_or_equal_call_passes() -> None:
    check_call(3, None, op("step", "charge"))
    check_call(3, op("step", "charge"), op("step", "charge"))


def test_a_different_call_is_non_determinism_naming_both() -> None:
    with pytest.raises(NonDeterminismError) as caught:
        check_call(2, op("wait", "sleep", timer=True), op("step", "charge"))
    err = caught.value
    assert isinstance(err, StokerError)
    assert (err.position, err.recorded, err.called) == (2, "wait 'sleep'", "step 'charge'")
    assert "position 2" in err.message and "replay or reset" in err.message


def test_same_name_other_identity_shows_the_fingerprints() -> None:
    with pytest.raises(NonDeterminismError) as caught:
        check_call(5, op("child", "welcome", child_key="a"), op("child", "welcome", child_key="b"))
    assert caught.value.recorded is not None and "[" in caught.value.recorded
    assert caught.value.recorded != caught.value.called


# -- visibility -----------------------------------------------------------------------


def test_visibility_follows_forks_down_the_chain() -> None:
    branches = {1: Branch(None, 1), 2: Branch(1, 5), 3: Branch(2, 3)}
    assert [visible_branch(branches, 3, p) for p in range(1, 8)] == [1, 1, 3, 3, 3, 3, 3]
    assert [visible_branch(branches, 2, p) for p in range(1, 8)] == [1, 1, 1, 1, 2, 2, 2]
    assert visible_branch(branches, 1, 0) is None


# Operations on a task's log: append a call ``gap`` positions after the next one (a step in
# flight at a crash leaves a hole), or reset at a fraction of the way into the log.
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 2)),
        st.tuples(st.just("reset"), st.floats(0, 1)),
    ),
    max_size=40,
)


@settings(max_examples=300)
@given(ops=OPS)
def test_visibility_matches_a_model_of_resets(ops: list[tuple[str, float]]) -> None:
    # The model keeps the log each reset leaves (earlier positions replay, later ones go)
    # as a plain dict; the rule must find the same from the branch tree alone.
    branches = {1: Branch(None, 1)}
    active, next_position = 1, 1
    recorded: list[tuple[int, int]] = []
    model: dict[int, int] = {}
    for kind, arg in ops:
        if kind == "append":
            position = next_position + int(arg)
            recorded.append((active, position))
            model[position] = active
            next_position = position + 1
        else:
            last = max(model, default=0)
            fork = 1 + int(arg * last)  # 1 .. last + 1
            branches[len(branches) + 1] = Branch(active, fork)
            active = len(branches)
            model = {p: b for p, b in model.items() if p < fork}
            next_position = fork
        assert visible_positions(branches, active, recorded) == model


# -- the release gate ------------------------------------------------------------------


async def released_order(gate: ReleaseGate, seqs: list[int], delays: list[int]) -> list[int]:
    """Starts ``release(seq)`` for each seq after its number of loop turns; returns the
    order in which the releases returned."""
    order: list[int] = []

    async def call(seq: int, turns: int) -> None:
        for _ in range(turns):
            await asyncio.sleep(0)
        await gate.release(seq)
        order.append(seq)

    await asyncio.gather(*(call(s, d) for s, d in zip(seqs, delays, strict=True)))
    return order


@settings(max_examples=200, deadline=None)
@given(
    seqs=st.lists(st.integers(1, 10_000), min_size=1, max_size=30, unique=True),
    data=st.data(),
)
def test_the_gate_releases_in_seq_order_whatever_order_the_awaits_come_in(
    seqs: list[int], data: st.DataObject
) -> None:
    # Sequences have gaps (an append that found its position taken used none); calls come
    # in any order and at any loop turn.
    calls = data.draw(st.permutations(seqs))
    delays = data.draw(st.lists(st.integers(0, 5), min_size=len(seqs), max_size=len(seqs)))
    gate = ReleaseGate({s: i + 1 for i, s in enumerate(sorted(seqs))}, stall_timeout=10)
    assert asyncio.run(released_order(gate, calls, delays)) == sorted(seqs)
    assert gate.unreleased() == []


async def test_live_sequences_wait_for_the_recorded_ones() -> None:
    gate = ReleaseGate({1: 1, 4: 2}, stall_timeout=10)
    order: list[int] = []

    async def release(seq: int) -> None:
        await gate.release(seq)
        order.append(seq)

    live = asyncio.create_task(release(7))  # a completion delivered live, after the replay
    await asyncio.sleep(0)
    assert not live.done() and gate.blocker(7) == 1
    await asyncio.gather(release(4), release(1), live)
    assert order == [1, 4, 7]


async def test_a_release_again_returns_at_once() -> None:
    gate = ReleaseGate({1: 1}, stall_timeout=10)
    await gate.release(1)
    await gate.release(1)
    assert gate.unreleased() == []


async def test_a_stalled_replay_names_the_position_it_waits_for() -> None:
    # Position 3's completion (#2) came first in the original run, but this body never
    # calls position 3: the release of #5 cannot happen in order.
    gate = ReleaseGate({2: 3, 5: 1}, stall_timeout=0.05)
    with pytest.raises(NonDeterminismError, match="replay stalled at position 3") as caught:
        await gate.release(5)
    assert caught.value.position == 3
    assert gate.unreleased() == [3, 1]


def test_gather_of_two_branches_replays_in_the_original_order() -> None:
    # Two branches each await two recorded completions; whichever branch the event loop
    # runs first, the completions come back interleaved as they were recorded.
    recorded = {1: 1, 2: 3, 3: 2, 4: 4}  # seq -> position
    by_position = {p: s for s, p in recorded.items()}

    async def body(first: int) -> list[int]:
        gate = ReleaseGate(recorded, stall_timeout=10)
        seen: list[int] = []

        async def branch(positions: list[int]) -> None:
            for p in positions:
                await gate.release(by_position[p])
                seen.append(p)

        branches = [branch([1, 3]), branch([2, 4])]
        if first:
            branches.reverse()
        await asyncio.gather(*branches)
        return seen

    for first in (0, 1):
        assert asyncio.run(body(first)) == [1, 3, 2, 4]


async def test_ten_thousand_concurrent_completions_replay_in_order_at_once() -> None:
    # A replayed asyncio.gather of 10,000 steps: every release waits for its turn, and
    # each is woken once (not on every release, which made this stall past the timeout),
    # so the whole replay is done well within the stall timeout.
    n = 10_000
    seqs = list(range(1, n + 1))
    gate = ReleaseGate({s: s for s in seqs}, stall_timeout=20)
    order: list[int] = []

    async def release(seq: int) -> None:
        await gate.release(seq)
        order.append(seq)

    calls = seqs[::-1]  # the worst order: the last completion is awaited first
    await asyncio.gather(*(release(s) for s in calls))
    assert order == seqs and gate.unreleased() == []
