"""DAG step decisions (stoker._core.dag.decide): parents' outcomes, condition groups in
their order, or-groups, parent conditions in CEL, and the wait paths the engine stores."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from stoker._core.dag import ConditionSpec, ParentState, StepSpec, decide, group_holds, waits_of

FINAL = ("COMPLETED", "FAILED", "CANCELLED")


def sleep(seconds: float = 1.0) -> ConditionSpec:
    return ConditionSpec(kind="sleep", seconds=seconds)


def event(key: str = "go") -> ConditionSpec:
    return ConditionSpec(kind="event", event_key=key)


def any_of(*items: ConditionSpec) -> ConditionSpec:
    return ConditionSpec(kind="or", items=list(items))


def on_parent(parent: str, expression: str) -> ConditionSpec:
    return ConditionSpec(kind="parent", parent=parent, expression=expression)


def step(parents: list[str] | None = None, **groups: list[ConditionSpec]) -> StepSpec:
    return StepSpec(name="s", task_name="t", parents=parents or [], **groups)


def done(output: Any = None) -> ParentState:
    return ParentState("COMPLETED", output=output)


# -- parents ------------------------------------------------------------------------------


@given(
    statuses=st.lists(st.sampled_from(FINAL), min_size=1, max_size=5),
    satisfied=st.booleans(),
)
def test_a_failed_or_cancelled_parent_cancels_whatever_the_conditions(
    statuses: list[str], satisfied: bool
) -> None:
    names = [f"p{i}" for i in range(len(statuses))]
    parents = {n: ParentState(s) for n, s in zip(names, statuses, strict=True)}
    s = step(names, skip_if=[sleep()], wait_for=[event()])
    paths = {path: satisfied for path, _ in waits_of(s)}
    decision = decide(s, parents, paths)
    bad = [n for n, st_ in zip(names, statuses, strict=True) if st_ != "COMPLETED"]
    if bad:
        assert decision.action == "cancel"
        verb = "failed" if parents[bad[0]].status == "FAILED" else "was cancelled"
        assert decision.reason == f"parent step {bad[0]!r} {verb}"  # the first, in order
    else:
        assert decision.action == ("skip" if satisfied else "wait")


def test_a_skipped_parent_does_not_cancel_its_child() -> None:
    parents = {"a": ParentState("COMPLETED", skipped=True), "b": done()}
    assert decide(step(["a", "b"]), parents, {}).action == "queue"


# -- condition groups ---------------------------------------------------------------------


@given(cancel=st.booleans(), skip=st.booleans(), wait=st.booleans())
def test_cancel_if_then_skip_if_then_wait_for(cancel: bool, skip: bool, wait: bool) -> None:
    s = step(cancel_if=[event("c")], skip_if=[event("s")], wait_for=[sleep()])
    satisfied = {"cancel_if.0": cancel, "skip_if.0": skip, "wait_for.0": wait}
    expected = "cancel" if cancel else "skip" if skip else "queue" if wait else "wait"
    decision = decide(s, {}, satisfied)
    assert decision.action == expected
    assert decision.errors == []


def test_empty_groups_queue_at_once_and_unknown_paths_do_not_hold() -> None:
    assert decide(step(), {}, {}).action == "queue"
    assert decide(step(wait_for=[sleep()]), {}, {}).action == "wait"
    assert decide(step(wait_for=[sleep()]), {}, {"wait_for.1": True}).action == "wait"


# Condition lists of sleep/event items and or-groups of them, up to three items deep.
leaf = st.builds(event, st.sampled_from(["a", "b", "c"])) | st.builds(sleep, st.just(1.0))
item = leaf | st.lists(leaf, min_size=1, max_size=3).map(lambda xs: any_of(*xs))
conditions = st.lists(item, max_size=3)


def reference(items: list[ConditionSpec], holds: list[list[bool]]) -> bool:
    """AND over items of (OR over an or-group's members), from the structure alone."""
    return all(any(h) for h in holds) if items else True


@settings(max_examples=200)
@given(items=conditions, data=st.data())
def test_an_and_of_or_groups_holds_as_its_structure_says(
    items: list[ConditionSpec], data: st.DataObject
) -> None:
    # waits_of names every wait's path; decide reads exactly those paths.
    s = step(wait_for=items)
    paths = [path for path, _ in waits_of(s)]
    assert len(paths) == len(set(paths))
    assert len(paths) == sum(len(i.items) if i.kind == "or" else 1 for i in items)
    satisfied = {p: data.draw(st.booleans(), label=p) for p in paths}
    holds = [
        [satisfied[f"wait_for.{i}.{j}"] for j in range(len(it.items))]
        if it.kind == "or"
        else [satisfied[f"wait_for.{i}"]]
        for i, it in enumerate(items)
    ]
    expected = "queue" if reference(items, holds) else "wait"
    assert decide(s, {}, satisfied).action == expected


def test_one_member_of_an_or_group_is_enough() -> None:
    s = step(wait_for=[any_of(sleep(), event()), event("b")])
    assert decide(s, {}, {"wait_for.0.1": True, "wait_for.1": True}).action == "queue"
    assert decide(s, {}, {"wait_for.0.0": True}).action == "wait"  # the AND still needs b
    assert [p for p, _ in waits_of(s)] == ["wait_for.0.0", "wait_for.0.1", "wait_for.1"]


# -- parent conditions --------------------------------------------------------------------


@settings(deadline=None)
@given(n=st.integers(-100, 100), threshold=st.integers(-100, 100))
def test_a_parent_condition_reads_the_parents_output(n: int, threshold: int) -> None:
    s = step(["a"], skip_if=[on_parent("a", f"output.n > {threshold}")])
    decision = decide(s, {"a": done({"n": n})}, {})
    assert decision.action == ("skip" if n > threshold else "queue")


def test_a_parent_condition_never_holds_on_a_skipped_or_missing_parent() -> None:
    cond = [on_parent("a", "true")]
    assert decide(step(["a"], skip_if=cond), {"a": done()}, {}).action == "skip"
    skipped = {"a": ParentState("COMPLETED", skipped=True)}
    assert decide(step(["a"], skip_if=cond), skipped, {}).action == "queue"
    assert not group_holds("skip_if", [on_parent("gone", "true")], {}, {}, [])


def test_only_true_makes_a_parent_condition_hold() -> None:
    # A truthy value that is not ``true`` (a number, a string) does not count.
    for expression in ("output.n", "'yes'", "false"):
        s = step(["a"], cancel_if=[on_parent("a", expression)])
        assert decide(s, {"a": done({"n": 1})}, {}).action == "queue"


def test_a_failing_parent_condition_is_reported_and_does_not_hold() -> None:
    s = step(["a"], cancel_if=[on_parent("a", "output.missing > 1")], wait_for=[event()])
    decision = decide(s, {"a": done({"n": 1})}, {"wait_for.0": True})
    assert decision.action == "queue"
    (error,) = decision.errors
    assert "'output.missing > 1'" in error and "'a'" in error and "failed" in error
