"""Scheduler placement (stoker.engine.scheduler.placement): which connected worker runs a
claimed item, and when an item that found none must step aside."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from stoker._core.wire import DesiredWorkerLabel, StickyStrategy, TaskConfig
from stoker.engine.dispatcher.conns import WorkerConn
from stoker.engine.scheduler.placement import eligible, pick, score, stuck


def worker(
    worker_id: int,
    *,
    slots: int = 4,
    used: int = 0,
    durable_slots: int = 0,
    durable_used: int = 0,
    queues: tuple[str, ...] = ("q",),
    labels: dict[str, Any] | None = None,
    closed: bool = False,
    draining: bool = False,
) -> WorkerConn:
    return WorkerConn(
        worker_id=worker_id,
        external_id=uuid.uuid4(),
        tenant_id=1,
        name=f"w{worker_id}",
        slots=slots,
        task_names=frozenset(queues),
        durable_slots=durable_slots,
        used=[used, durable_used],
        labels=labels or {},
        closed=closed,
        draining=draining,
    )


def item(desired: int | None = None, queue: str = "q") -> dict[str, Any]:
    return {"id": 1, "queue": queue, "desired_worker_id": desired}


GPU = TaskConfig(desired_worker_labels={"gpu": DesiredWorkerLabel(value="a100", required=True)})


def test_only_workers_that_serve_the_queue_and_are_open_are_eligible() -> None:
    cfg = TaskConfig()
    assert eligible(worker(1), item(), cfg)
    assert not eligible(worker(1, queues=("other",)), item(), cfg)
    assert not eligible(worker(1, closed=True), item(), cfg)
    assert not eligible(worker(1, draining=True), item(), cfg)
    assert eligible(worker(1, used=4), item(), cfg)  # full, but eligible all the same


def test_required_labels_filter_and_weighted_labels_rank() -> None:
    assert not eligible(worker(1), item(), GPU)
    assert not eligible(worker(1, labels={"gpu": "h100"}), item(), GPU)
    assert eligible(worker(1, labels={"gpu": "a100"}), item(), GPU)
    prefers = TaskConfig(
        desired_worker_labels={
            "gpu": DesiredWorkerLabel(value="a100", weight=50),
            "memory_gb": DesiredWorkerLabel(value=64, weight=20, comparator="GREATER_THAN"),
        }
    )
    both = worker(1, slots=1, labels={"gpu": "a100", "memory_gb": 128})
    one = worker(2, slots=8, labels={"gpu": "a100", "memory_gb": 32})
    none = worker(3, slots=16)
    assert [score(w, item(), prefers)[1] for w in (both, one, none)] == [70, 50, 0]
    # Label weight outranks free slots.
    assert pick([none, one, both], item(), prefers) is both


def test_hard_sticky_runs_only_on_its_worker_and_soft_sticky_prefers_it() -> None:
    a, b = worker(1, slots=1), worker(2, slots=8)
    hard = TaskConfig(sticky=StickyStrategy.HARD)
    assert pick([a, b], item(desired=1), hard) is a
    assert pick([worker(1, used=4), b], item(desired=1), hard) is None
    soft = TaskConfig(sticky=StickyStrategy.SOFT)
    assert pick([b, a], item(desired=1), soft) is a  # preferred despite fewer free slots
    assert pick([worker(1, used=4), b], item(desired=1), soft) is b


def test_of_equal_workers_the_first_listed_wins() -> None:
    a, b, c = worker(1, used=1), worker(2, used=1), worker(3, used=2)
    assert pick([c, a, b], item(), TaskConfig()) is a
    assert pick([c, b, a], item(), TaskConfig()) is b


def test_the_slot_cost_and_pool_decide_who_has_room() -> None:
    cfg = TaskConfig(slot_cost=3)
    assert pick([worker(1, slots=4, used=2)], item(), cfg) is None
    roomy = worker(2, slots=4, used=1)
    assert pick([worker(1, slots=4, used=2), roomy], item(), cfg) is roomy
    durable = TaskConfig(durable=True)
    assert pick([worker(1, slots=8)], item(), durable) is None
    d = worker(2, slots=0, durable_slots=1)
    assert pick([worker(1, slots=8), d], item(), durable) is d


workers = st.lists(
    st.builds(
        lambda wid, slots, used, gpu, weight_label, closed, queue: worker(
            wid,
            slots=slots,
            used=min(used, slots),
            labels={k: v for k, v in (("gpu", gpu), ("zone", weight_label)) if v is not None},
            closed=closed,
            queues=(queue,),
        ),
        st.integers(1, 5),
        st.integers(0, 4),
        st.integers(0, 4),
        st.sampled_from(["a100", "h100", None]),
        st.sampled_from(["eu", "us", None]),
        st.booleans(),
        st.sampled_from(["q", "q", "other"]),
    ),
    max_size=6,
)
configs = st.builds(
    lambda required, sticky, cost: TaskConfig(
        slot_cost=cost,
        sticky=sticky,
        desired_worker_labels={
            **({"gpu": DesiredWorkerLabel(value="a100", required=True)} if required else {}),
            "zone": DesiredWorkerLabel(value="eu", weight=10),
        },
    ),
    st.booleans(),
    st.sampled_from([None, StickyStrategy.SOFT, StickyStrategy.HARD]),
    st.integers(1, 3),
)


@given(conns=workers, cfg=configs, desired=st.sampled_from([None, 1, 2, 3]))
def test_pick_takes_the_best_eligible_worker_with_room(
    conns: list[WorkerConn], cfg: TaskConfig, desired: int | None
) -> None:
    it = item(desired)
    fits = [c for c in conns if eligible(c, it, cfg) and c.free(cfg.durable) >= cfg.slot_cost]
    chosen = pick(conns, it, cfg)
    if not fits:
        assert chosen is None
        return
    assert chosen is not None and chosen in fits
    best = max(score(c, it, cfg) for c in fits)
    assert score(chosen, it, cfg) == best
    assert chosen is next(c for c in fits if score(c, it, cfg) == best)  # first of equals
    if cfg.sticky is StickyStrategy.HARD and desired is not None:
        assert chosen.worker_id == desired


@given(conns=workers, cfg=configs, desired=st.sampled_from([None, 1, 2]))
def test_an_item_steps_aside_only_for_reasons_of_its_own(
    conns: list[WorkerConn], cfg: TaskConfig, desired: int | None
) -> None:
    it = item(desired)
    nobody = not any(eligible(c, it, cfg) for c in conns)
    bound = cfg.sticky is StickyStrategy.HARD and desired is not None
    assert stuck(conns, it, cfg) == (nobody or bound)


def test_an_item_that_lost_to_items_ahead_keeps_its_place() -> None:
    busy = worker(1, used=4)
    assert pick([busy], item(), TaskConfig()) is None
    assert not stuck([busy], item(), TaskConfig())
    assert stuck([busy], item(), GPU)  # nobody connected has the required label
    assert stuck([busy], item(desired=1), TaskConfig(sticky=StickyStrategy.HARD))
