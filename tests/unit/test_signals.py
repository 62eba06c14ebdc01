"""The outbox fans a transaction's changes out only after commit, once per transaction."""

from __future__ import annotations

import uuid

from stoker.engine.signals import Signals


def test_committed_outbox_wakes_gates_and_reports_finished_runs() -> None:
    signals = Signals("e1")
    woken: list[set[int]] = []
    done: list[list[uuid.UUID]] = []
    signals.on_queued(woken.append)
    signals.on_finished(done.append)
    ids = [uuid.uuid4(), uuid.uuid4()]

    out = signals.outbox()
    out.queued(1)
    out.queued(2, gated=True)
    out.finished(3, ids[:1])
    other = signals.outbox()
    other.finished(3, ids[1:])
    out.merge(other)
    assert not woken and not done and not signals.gated()  # nothing before commit

    out.committed()
    assert woken == [{1, 2}]
    assert done == [ids]
    assert signals.gated() == {2}
    signals.ungate(2)
    assert signals.gated() == set()


def test_an_empty_outbox_calls_nobody() -> None:
    signals = Signals("e1")
    calls: list[object] = []
    signals.on_queued(calls.append)
    signals.on_finished(calls.append)
    out = signals.outbox()
    out.finished(1, [])
    assert not out
    out.committed()
    assert calls == []


def test_remote_signals_reach_the_same_subscribers() -> None:
    signals = Signals("e1")
    woken: list[set[int]] = []
    tenants: list[int] = []
    signals.on_queued(woken.append)
    signals.on_tenant_finished(tenants.append)
    signals.remote_queued(7)
    signals.remote_finished(8)
    assert woken == [{7}]
    assert tenants == [8]


def test_after_commit_actions_run_after_the_subscribers_and_survive_a_merge() -> None:
    signals = Signals("e1")
    order: list[str] = []
    signals.on_finished(lambda ids: order.append("finished"))
    out = signals.outbox()
    out.finished(1, [uuid.uuid4()])
    part = signals.outbox()
    part.after_commit(lambda: order.append("hint"))
    part.after_commit(lambda: 1 / 0)  # a failing action is logged, the others still run
    part.after_commit(lambda: order.append("second"))
    out.merge(part)
    assert order == []
    out.committed()
    assert order == ["finished", "hint", "second"]
    dropped = signals.outbox()
    dropped.after_commit(lambda: order.append("never"))  # a rollback never commits it
    assert order == ["finished", "hint", "second"]
