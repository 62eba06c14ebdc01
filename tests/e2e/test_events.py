"""Event-triggered runs end to end: subscriptions with wildcards, filters with scopes and
payloads, an invalid payload failing only its own run, bulk pushes, filter management,
reading and replaying events over the SDK, REST and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import pytest

from stoker import (
    EventPush,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    Stoker,
    TaskRunError,
    UnknownTaskError,
)
from tests.apps import events
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def app(engine: Any, tenant: Any) -> Stoker:
    return events.declare(
        Stoker(address=engine.grpc_address, token=tenant.token, connect_timeout=5)
    )


@pytest.fixture
def worker(worker_factory: Any) -> Any:
    return worker_factory("tests.apps.events:app", slots=20)


def _by_name(app: Stoker, event_id: str) -> dict[str, Any]:
    """The runs an event started, by task or workflow name, with their outputs."""
    info = app.events.get(event_id)
    found: dict[str, Any] = {}
    for r in info.runs:
        found[r.task_name or r.workflow_name or "?"] = r
    return found


def test_one_event_fans_out_to_its_subscribers_through_filters_and_scopes(
    app: Stoker, worker: Any
) -> None:
    # audit runs for customer-7 only when the amount is huge; other scopes are unfiltered.
    f = app.filters.create(
        app.tasks["audit"],
        expression="input.amount > 1000",
        scope="customer-7",
        payload={"reason": "huge"},
    )
    assert f.scope == "customer-7" and f.source == "api"

    pushed = app.events.push(
        "order:created",
        {"order_id": 1, "amount": 150},
        scope="customer-7",
        additional_metadata={"source": "shop"},
    )
    outputs = {}
    for ref in pushed.runs:
        outputs[ref.run_id] = ref.result(timeout=30)
    runs = _by_name(app, pushed.event_id)
    # audit's filter for the scope did not hold; the others ran once each.
    assert sorted(runs) == ["big_orders", "order_flow", "record_order"]
    big = outputs[str(runs["big_orders"].run_id)]
    assert big["filter_payload"] == {"tier": "big"} and not big["leaked"]
    assert big["event_key"] == "order:created" and big["event_id"] == pushed.event_id
    record = outputs[str(runs["record_order"].run_id)]
    assert record["input"] == {"order_id": 1, "amount": 150.0}
    assert record["filter_payload"] is None
    flow = outputs[str(runs["order_flow"].run_id)]
    assert flow["confirm"]["input"] == {"order_id": 1, "amount": 150.0}
    assert runs["big_orders"].filter_id is not None and runs["record_order"].filter_id is None

    # Another scope: audit's filter does not apply, so audit runs; a small amount keeps
    # big_orders out.
    other = app.events.push("order:created", {"order_id": 2, "amount": 5}, scope="customer-8")
    assert sorted(_by_name(app, other.event_id)) == ["audit", "order_flow", "record_order"]

    # customer-7 again, huge: audit's filter holds and gives its payload.
    huge = app.events.push("order:created", {"order_id": 3, "amount": 5000}, scope="customer-7")
    names = _by_name(app, huge.event_id)
    assert sorted(names) == ["audit", "big_orders", "order_flow", "record_order"]
    assert app.events.get(huge.event_id).runs and names["audit"].filter_id == f.id
    out = next(r for r in huge.runs if r.run_id == str(names["audit"].run_id)).result(timeout=30)
    assert out["filter_payload"] == {"reason": "huge"}


def test_a_filter_payload_reaches_the_run_beside_its_metadata_not_in_it(
    app: Stoker, worker: Any, engine: Any, tenant: Any
) -> None:
    """The payload of the filter that let a run through is ctx.filter_payload, on every
    attempt, and is not part of the run's metadata (SDK, REST)."""
    f = app.filters.create(
        app.tasks["audit"], expression="input.amount > 10", scope="payload-home",
        payload={"desk": "vip", "n": [1, 2]},
    )  # fmt: skip
    pushed = app.events.push(
        "order:created", {"order_id": 9, "amount": 50}, scope="payload-home",
        additional_metadata={"source": "shop"},
    )  # fmt: skip
    audit = next(r for r in app.events.get(pushed.event_id).runs if r.task_name == "audit")
    assert audit.filter_id == f.id
    ref = next(r for r in pushed.runs if r.run_id == str(audit.run_id))
    out = ref.result(timeout=30)
    assert out["filter_payload"] == {"desk": "vip", "n": [1, 2]} and not out["leaked"]
    info = app.runs.get(ref.run_id)
    assert "stoker_filter_payload" not in info.additional_metadata
    assert info.additional_metadata["source"] == "shop"
    assert info.additional_metadata["stoker_filter"] == f.id
    headers = {"authorization": f"Bearer {tenant.token}"}
    with httpx.Client(base_url=engine.http_url, headers=headers) as http:
        got = http.get(f"/api/v1/runs/{ref.run_id}")
        assert got.status_code == 200, got.text
        metadata = got.json()["additional_metadata"]
        assert "stoker_filter_payload" not in metadata and metadata["stoker_filter"] == f.id
    # A workflow run a filter let through: each of its steps gets the payload.
    flow_filter = app.filters.create(
        app.workflows["order_flow"], expression="input.amount > 10", scope="payload-home",
        payload={"desk": "flow"},
    )  # fmt: skip
    second = app.events.push("order:created", {"order_id": 10, "amount": 60}, scope="payload-home")
    flow = next(r for r in app.events.get(second.event_id).runs if r.workflow_name)
    assert flow.filter_id == flow_filter.id
    flow_ref = next(r for r in second.runs if r.run_id == str(flow.run_id))
    assert flow_ref.result(timeout=30)["confirm"]["filter_payload"] == {"desk": "flow"}
    # A run no filter let through has none (record_order: no filter for this scope).
    record = next(r for r in app.events.get(pushed.event_id).runs if r.task_name == "record_order")
    assert app.runs.get(str(record.run_id)).output["filter_payload"] is None


def test_wildcards_match_whole_segments(app: Stoker, worker: Any) -> None:
    # order:* takes any one segment (big_orders only, with its filter); order:created is
    # not the key, so record_order does not run.
    paid = app.events.push("order:paid", {"order_id": 4, "amount": 500})
    assert sorted(_by_name(app, paid.event_id)) == ["big_orders"]
    # ... and not two segments.
    assert app.events.push("order:paid:eu", {"order_id": 5, "amount": 500}).run_ids == []
    # shipment:** takes one or more segments, never none.
    one = app.events.push("shipment:sent", {"n": 1})
    two = app.events.push("shipment:sent:eu", {"n": 2})
    assert len(one.run_ids) == 1 and len(two.run_ids) == 1
    assert app.events.push("shipment", {"n": 3}).run_ids == []
    assert two.runs[0].result(timeout=30)["event_key"] == "shipment:sent:eu"


def test_an_invalid_payload_fails_only_the_runs_whose_model_refuses_it(
    app: Stoker, worker: Any
) -> None:
    pushed = app.events.push("order:created", {"order_id": "not a number", "amount": 2})
    results: dict[str, Any] = {}
    names = {
        str(r.run_id): r.task_name or r.workflow_name for r in app.events.get(pushed.event_id).runs
    }
    for ref in pushed.runs:
        try:
            results[names[ref.run_id]] = ref.result(timeout=30)
        except TaskRunError as exc:
            results[names[ref.run_id]] = exc
    # audit takes any JSON: it ran; the Order models refused the payload, without retries.
    assert results["audit"]["input"]["order_id"] == "not a number"
    for name in ("record_order", "order_flow"):
        assert isinstance(results[name], TaskRunError), name
    assert "InputValidationError" in str(results["record_order"])
    runs = _by_name(app, pushed.event_id)
    assert runs["record_order"].status == "FAILED" and runs["audit"].status == "COMPLETED"


def test_a_task_s_idempotency_expression_applies_to_the_runs_events_start(
    app: Stoker, worker: Any
) -> None:
    """Two events naming one refund in one push start one refund run (the second event
    records the first's run); another refund gets its own; an event the expression fails
    on fails that run alone (the plain subscriber still runs)."""
    pushed = app.events.bulk_push(
        [
            ("refund:requested", {"refund_id": 5}),
            ("refund:requested", {"refund_id": 5}),
            ("refund:requested", {"refund_id": 6}),
            ("refund:requested", {"note": "no id"}),
        ]
    )
    refunds = [_by_name(app, p.event_id)["refund"].run_id for p in pushed]
    assert refunds[0] == refunds[1] != refunds[2] != refunds[3]
    logs = {_by_name(app, p.event_id)["refund_log"].run_id for p in pushed}
    assert len(logs) == 4
    assert len({r for p in pushed for r in p.run_ids}) == 7
    by_id = {r.run_id: r for p in pushed for r in p.runs}
    assert by_id[str(refunds[0])].result(timeout=30)["input"] == {"refund_id": 5}
    with pytest.raises(TaskRunError, match="idempotency expression"):
        by_id[str(refunds[3])].result(timeout=30)
    for ref in pushed[3].runs:
        if ref.run_id != str(refunds[3]):
            assert ref.result(timeout=30)["input"] == {"note": "no id"}


def test_bulk_push_stores_every_event_with_its_runs(app: Stoker, worker: Any) -> None:
    pushed = app.events.bulk_push(
        [EventPush("bulk:item", {"i": i}, additional_metadata={"batch": "b1"}) for i in range(1500)]
    )
    assert len(pushed) == 1500 and all(len(p.run_ids) == 1 for p in pushed)
    assert len({p.event_id for p in pushed}) == 1500
    listed = app.events.list(key="bulk:item", additional_metadata={"batch": "b1"}, limit=1000)
    assert len(listed) == 1000 and all(e.run_count == 1 for e in listed)
    pushed[-1].runs[0].result(timeout=60)


@pytest.mark.slow
def test_bulk_push_of_ten_thousand_events(app: Stoker, worker: Any) -> None:
    pushed = app.events.bulk_push([("bulk:item", {"i": i}) for i in range(10_000)])
    assert len(pushed) == 10_000 and sum(len(p.run_ids) for p in pushed) == 10_000
    wait_until(
        lambda: all(r.status == "COMPLETED" for r in app.events.get(pushed[-1].event_id).runs),
        timeout=120,
        what="the last event's run",
    )


def test_filter_crud_and_bad_input_store_nothing(app: Stoker, worker: Any) -> None:
    with pytest.raises(InvalidRequestError, match="not valid CEL"):
        app.filters.create(app.tasks["audit"], expression="input.amount >")
    with pytest.raises(UnknownTaskError, match="no_such_task"):
        app.filters.create("no_such_task", expression="true")
    assert [f for f in app.filters.list() if f.source == "api"] == []

    made = app.filters.create(
        app.workflows["order_flow"], expression="input.amount > 10", payload={"a": 1}
    )
    assert made.workflow_name == "order_flow" and made.scope is None
    assert app.filters.get(made.id) == made
    changed = app.filters.update(made.id, expression="input.amount > 20", scope="s1")
    assert changed.expression == "input.amount > 20" and changed.scope == "s1"
    with pytest.raises(InvalidRequestError, match="not valid CEL"):
        app.filters.update(made.id, expression="((")
    assert app.filters.get(made.id).expression == "input.amount > 20"
    assert [f.id for f in app.filters.list(app.workflows["order_flow"])] == [made.id]
    # big_orders' default filter is listed, and managed in code only.
    code = app.filters.list(app.tasks["big_orders"])
    assert [(f.source, f.expression) for f in code] == [("code", "input.amount > 100")]
    with pytest.raises(InvalidRequestError, match="declared in code"):
        app.filters.delete(code[0].id)
    app.filters.delete(made.id)
    with pytest.raises(NotFoundError):
        app.filters.get(made.id)

    # Bad events: nothing is stored.
    before = len(app.events.list(limit=1000))
    with pytest.raises(InvalidRequestError, match="non-empty"):
        app.events.push("", {})
    with pytest.raises(InvalidRequestError, match="at most 500"):
        app.events.push("k" * 501, {})
    with pytest.raises(PayloadTooLargeError):
        app.events.push("order:created", {"blob": "x" * (app.max_payload_bytes + 1)})
    assert len(app.events.list(limit=1000)) == before


def test_events_over_rest_and_the_cli(app: Stoker, worker: Any, engine: Any, tenant: Any) -> None:
    headers = {"authorization": f"Bearer {tenant.token}"}
    with httpx.Client(base_url=engine.http_url, headers=headers) as http:
        made = http.post(
            "/api/v1/filters",
            json={"task_name": "audit", "expression": "input.amount >", "scope": "x"},
        )
        assert made.status_code == 422 and "CEL" in made.text
        pushed = http.post(
            "/api/v1/events",
            json={
                "key": "order:created",
                "payload": {"order_id": 9, "amount": 300},
                "scope": "rest",
                "additional_metadata": {"via": "rest"},
                "priority": 3,
            },
        )
        assert pushed.status_code == 201, pushed.text
        body = pushed.json()
        assert len(body["run_ids"]) == 4
        event_id = body["id"]
        assert http.post("/api/v1/events", json={"key": "", "payload": 1}).status_code == 422

        listed = http.get(
            "/api/v1/events",
            params={
                "key": "order:created",
                "scope": "rest",
                "additional_metadata": json.dumps({"via": "rest"}),
            },
        ).json()["items"]
        assert [e["id"] for e in listed] == [event_id]
        wait_until(
            lambda: all(
                r["status"] == "COMPLETED"
                for r in http.get(f"/api/v1/events/{event_id}").json()["runs"]
            ),
            what="the event's runs to complete",
        )
        got = http.get(f"/api/v1/events/{event_id}").json()
        assert got["payload"] == {"order_id": 9, "amount": 300} and got["priority"] == 3
        replayed = http.post(f"/api/v1/events/{event_id}/replay").json()["run_ids"]
        assert len(replayed) == 4
        runs = http.get(f"/api/v1/events/{event_id}").json()["runs"]
        assert sorted(r["replay"] for r in runs) == [0] * 4 + [1] * 4

    env = {"STOKER_ADDRESS": engine.grpc_address, "STOKER_TOKEN": tenant.token}
    cli = [sys.executable, "-m", "stoker", "event"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        import os

        return subprocess.run(
            [*cli, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=60
        )

    out = run("push", "shipment:cli", "--payload", '{"n": 1}', "--json")
    assert out.returncode == 0, out.stderr
    cli_event = json.loads(out.stdout)
    assert len(cli_event["run_ids"]) == 1
    out = run("list", "--key", "shipment:cli", "--json")
    assert out.returncode == 0 and [e["id"] for e in json.loads(out.stdout)] == [cli_event["id"]]
    out = run("get", cli_event["id"], "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["payload"] == {"n": 1}
    out = run("replay", cli_event["id"])
    assert out.returncode == 0, out.stderr
    assert len(app.events.get(cli_event["id"]).runs) == 2
    out = run("push", "", "--payload", "{}")
    assert out.returncode == 2 and "event key" in out.stderr
