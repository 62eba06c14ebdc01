"""Scheduled runs through real engine and worker processes: a run fires at its time (not
before), once; reschedule, change and delete before it is due; a past time fires at once
and strict refuses it; a restart of the engine before the time still fires it once; and
10,000 runs due in the same second, with two engine replicas, all fire exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import ValidationError

from stoker import InvalidRequestError, NotFoundError, ScheduledRun, Stoker, UnknownTaskError
from tests.apps import basic
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(180)


def _client(tenant: Any) -> Stoker:
    return basic.declare(tenant.client())


def _runs(db_url: str, tenant_id: int) -> list[tuple[str, Any, datetime]]:
    """The tenant's task runs made from schedules: (schedule id, input, created_at)."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT additional_metadata->>'stoker_schedule', input, created_at FROM stoker.task"
            " WHERE tenant_id = %s AND additional_metadata ? 'stoker_schedule' ORDER BY id",
            (tenant_id,),
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def _fired(app: Stoker, s: ScheduledRun) -> ScheduledRun | None:
    now = app.schedules.get(s)
    return now if now.status != "SCHEDULED" else None


def test_a_scheduled_run_fires_at_its_time_once_and_its_handle_leads_to_the_run(
    engine: Any, tenant: Any, worker_factory: Any
) -> None:
    worker_factory("tests.apps.basic:app", tenant=tenant).wait_ready()
    app = _client(tenant)
    greet = app.tasks["greet"]
    at = datetime.now(UTC) + timedelta(seconds=1.5)
    s = greet.schedule(at, basic.Greet(name="later"), additional_metadata={"batch": "b1"})
    assert s.status == "SCHEDULED" and s.run() is None and s.task_name == "greet"
    assert abs((s.at - at).total_seconds()) < 0.002
    assert s.input == {"name": "later"} and s.additional_metadata == {"batch": "b1"}
    assert _runs(engine.db_url, tenant.tenant_id) == []  # no queue item before its time
    fired = wait_until(lambda: _fired(app, s), what="the schedule to fire", log=engine.log_path)
    assert fired.status == "FIRED" and fired.fired_at is not None and fired.run_id
    ref = fired.run()
    assert ref is not None and ref.result(timeout=30) == {"message": "hello later", "attempt": 0}
    runs = _runs(engine.db_url, tenant.tenant_id)
    assert [r[0] for r in runs] == [s.id]
    assert runs[0][2] >= s.at  # not before its time
    assert app.schedules.list(task="greet", status="FIRED")[0].run_id == fired.run_id
    app.close()


def test_reschedule_change_and_delete_before_it_is_due(engine: Any, tenant: Any) -> None:
    app = _client(tenant)
    greet = app.tasks["greet"]
    later = datetime.now(UTC) + timedelta(hours=1)
    moved = greet.schedule(later, {"name": "first"})
    dropped = greet.schedule(later, {"name": "dropped"})
    kept = greet.schedule(later + timedelta(minutes=1), {"name": "kept"})
    by_filter = [
        greet.schedule(later + timedelta(days=1), {"name": f"f{n}"}, additional_metadata={"g": 1})
        for n in range(3)
    ]

    changed = app.schedules.update(moved, input={"name": "second"}, additional_metadata={"v": 2})
    assert changed.input == {"name": "second"} and changed.additional_metadata == {"v": 2}
    with pytest.raises(ValidationError):  # the local task's input model applies
        app.schedules.update(moved, input={"nom": "x"})
    app.schedules.delete(dropped)
    with pytest.raises(NotFoundError):
        app.schedules.get(dropped.id)
    with pytest.raises(NotFoundError):
        app.schedules.delete(dropped.id)
    # Bulk delete by metadata and time range: only the matching ones.
    assert app.schedules.bulk_delete(additional_metadata={"g": 1}, until=later) == []
    deleted = app.schedules.bulk_delete(
        task="greet", since=later + timedelta(hours=2), additional_metadata={"g": 1}
    )
    assert sorted(deleted) == sorted(s.id for s in by_filter)
    with pytest.raises(InvalidRequestError, match="needs ids or a filter"):
        app.schedules.bulk_delete()

    rescheduled = app.schedules.update(moved, at=timedelta(milliseconds=300))
    assert rescheduled.at < later
    fired = wait_until(lambda: _fired(app, moved), what="the rescheduled run")
    assert fired.status == "FIRED"
    runs = _runs(engine.db_url, tenant.tenant_id)
    assert [(r[0], r[1]) for r in runs] == [(moved.id, {"name": "second"})]
    with pytest.raises(InvalidRequestError, match="can no longer be changed: it is FIRED"):
        app.schedules.update(moved, at=timedelta(hours=1))
    with pytest.raises(InvalidRequestError, match="can no longer be deleted"):
        app.schedules.delete(moved)
    assert [s.id for s in app.schedules.list(status="SCHEDULED")] == [kept.id]
    app.close()


def test_a_past_time_fires_at_once_and_strict_refuses_it(engine: Any, tenant: Any) -> None:
    app = _client(tenant)
    greet = app.tasks["greet"]
    past = datetime.now(UTC) - timedelta(minutes=5)
    with pytest.raises(InvalidRequestError, match=r"is in the past .* strict=True"):
        greet.schedule(past, {"name": "strict"}, strict=True)
    assert app.schedules.list() == []  # nothing stored
    s = greet.schedule(past, {"name": "late"})
    assert wait_until(lambda: _fired(app, s), what="the past schedule").status == "FIRED"
    assert [r[0] for r in _runs(engine.db_url, tenant.tenant_id)] == [s.id]
    app.close()


def test_bad_input_is_refused_when_scheduling(engine: Any, tenant: Any) -> None:
    app = _client(tenant)
    greet = app.tasks["greet"]
    with pytest.raises(ValidationError):
        greet.schedule(timedelta(minutes=1), {"nom": "x"})
    with pytest.raises(ValueError, match="has no time zone"):
        greet.schedule(datetime.now() + timedelta(minutes=1), {"name": "x"})
    with pytest.raises(TypeError, match="unknown schedule option"):
        greet.schedule(timedelta(minutes=1), {"name": "x"}, desired_worker_id="w")
    with pytest.raises(NotFoundError):
        app.schedules.get("00000000-0000-0000-0000-000000000000")
    with pytest.raises(NotFoundError):
        app.schedules.get("not-an-id")
    with pytest.raises(NotFoundError):
        app.schedules.update("00000000-0000-0000-0000-000000000000", at=timedelta(minutes=1))
    other = tenant.client()

    @other.task(name="nowhere")
    async def nowhere(input: dict[str, Any], ctx: Any) -> None:
        return None

    from stoker._sdk.schedules import schedule_item

    item = schedule_item("t", "never_registered", "", b"{}", timedelta(minutes=1), {})
    with pytest.raises(UnknownTaskError, match="never_registered"):
        other.schedules.create([item])
    app.close()
    other.close()


def test_an_engine_restarted_before_the_time_fires_the_run_once(
    engine_factory: Any, tenant_factory: Any
) -> None:
    eng = engine_factory()
    ten = tenant_factory(eng)
    app = _client(ten)
    s = app.tasks["greet"].schedule(timedelta(seconds=3), {"name": "restart"})
    eng.kill()
    assert _runs(eng.db_url, ten.tenant_id) == []
    eng.restart()
    wait_until(
        lambda: _fired(app, s), timeout=60, what="the schedule after restart", log=eng.log_path
    )
    assert [r[0] for r in _runs(eng.db_url, ten.tenant_id)] == [s.id]
    app.close()


def _leader(db_url: str) -> str | None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT holder FROM stoker.lease WHERE expires_at > now()").fetchone()
    return str(row[0]) if row else None


def test_ten_thousand_runs_due_in_one_second_fire_exactly_once_on_two_replicas(
    engine_factory: Any, tenant_factory: Any
) -> None:
    """Created through both replicas, due within one second; the leader is killed once the
    first runs appear, so the survivor fires the rest (and finds, through the runs'
    idempotency keys, those the dead leader created without marking them)."""
    fast = {"STOKER_LEASE_TTL_S": "1.5"}
    first = engine_factory(env={**fast, "STOKER_ENGINE_ID": "one"})
    second = engine_factory(db_url=first.db_url, env={**fast, "STOKER_ENGINE_ID": "two"})
    ten = tenant_factory(first)
    apps = [_client(ten), basic.declare(Stoker(address=second.grpc_address, token=ten.token))]
    start = datetime.now(UTC) + timedelta(seconds=8)
    made: list[str] = []
    for chunk in range(10):
        runs = [
            (start + timedelta(microseconds=100 * (chunk * 1000 + n)), {"name": f"n{n}"})
            for n in range(1000)
        ]
        made += [s.id for s in apps[chunk % 2].tasks["greet"].schedule_many(runs)]
    assert len(set(made)) == 10_000
    # (On a slow machine storing them may take past their second: then they are due in the
    # past and fire at once, which must be exactly once all the same.)
    leader = wait_until(lambda: _leader(first.db_url), what="a leader")
    wait_until(lambda: _runs(first.db_url, ten.tenant_id), timeout=30, what="the first runs")
    (first if leader == "one" else second).kill()
    survivor = second if leader == "one" else first
    apps[0 if survivor is first else 1].schedules.list(limit=1)  # the survivor answers
    wait_until(
        lambda: (
            len(_runs(first.db_url, ten.tenant_id)) >= 10_000
            and not apps[0 if survivor is first else 1].schedules.list(status="SCHEDULED", limit=1)
        ),
        timeout=120,
        what="10,000 scheduled runs",
        log=survivor.log_path,
    )
    runs = _runs(first.db_url, ten.tenant_id)
    assert sorted(r[0] for r in runs) == sorted(made)  # each exactly once
    for app in apps:
        app.close()


def test_the_rest_api_creates_lists_changes_and_deletes_scheduled_runs(
    engine: Any, tenant: Any
) -> None:
    app = _client(tenant)
    app.register([app.tasks["greet"]])
    api = httpx.Client(
        base_url=f"{engine.http_url}/api/v1",
        headers={"authorization": f"Bearer {tenant.token}"},
        timeout=10,
    )
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    made = api.post(
        "/schedules", json={"task_name": "greet", "input": {"name": "rest"}, "run_at": later}
    )
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    assert made.json()["status"] == "SCHEDULED" and made.json()["input"] == {"name": "rest"}
    assert api.get(f"/schedules/{sid}").json()["id"] == sid
    assert [s["id"] for s in api.get("/schedules", params={"name": "greet"}).json()["items"]] == [
        sid
    ]
    moved = api.patch(f"/schedules/{sid}", json={"input": {"name": "changed"}, "run_at": later})
    assert moved.status_code == 200 and moved.json()["input"] == {"name": "changed"}
    past = api.post(
        "/schedules",
        json={"task_name": "greet", "run_at": "2020-01-01T00:00:00Z", "strict": True},
    )
    assert past.status_code == 422 and "strict" in past.json()["error"]["message"]
    unknown = api.post("/schedules", json={"task_name": "nope", "run_at": later})
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]["message"]
    assert api.get("/schedules/00000000-0000-0000-0000-000000000000").status_code == 404
    assert api.delete(f"/schedules/{sid}").status_code == 204
    assert api.get(f"/schedules/{sid}").status_code == 404
    other = api.post(
        "/schedules",
        json={"task_name": "greet", "run_at": later, "additional_metadata": {"tag": "x"}},
    ).json()
    deleted = api.post("/schedules/delete", json={"additional_metadata": {"tag": "x"}}).json()
    assert deleted == {"ids": [other["id"]]}
    assert api.post("/schedules/delete", json={}).status_code == 422
    api.close()
    app.close()


def test_the_command_line_lists_moves_and_deletes_scheduled_runs(engine: Any, tenant: Any) -> None:
    from tests.e2e.test_cli import stoker

    app = _client(tenant)
    greet = app.tasks["greet"]
    a = greet.schedule(timedelta(hours=1), {"name": "a"})
    b = greet.schedule(timedelta(hours=2), {"name": "b"})
    listed = stoker("schedule", "list", "--task", "greet", env=tenant.env)
    assert listed.returncode == 0, listed.stderr
    assert a.id in listed.stdout and b.id in listed.stdout and "SCHEDULED" in listed.stdout
    moved = stoker("schedule", "move", a.id, "3h", env=tenant.env)
    assert moved.returncode == 0, moved.stderr
    assert app.schedules.get(a).at > b.at
    bad = stoker("schedule", "move", a.id, "whenever", env=tenant.env)
    assert bad.returncode == 2 and "neither an ISO 8601 time nor a delay" in bad.stderr
    gone = stoker("schedule", "delete", b.id, env=tenant.env)
    assert gone.returncode == 0 and gone.stdout.split() == [b.id]
    nothing = stoker("schedule", "delete", env=tenant.env)
    assert nothing.returncode == 2 and "give scheduled run ids" in nothing.stderr
    unknown = stoker(
        "schedule", "move", "00000000-0000-0000-0000-000000000000", "1h", env=tenant.env
    )
    assert unknown.returncode == 2 and "no scheduled run" in unknown.stderr
    assert [s.id for s in app.schedules.list()] == [a.id]
    app.close()
