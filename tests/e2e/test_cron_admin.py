"""Crons managed at run time, on tasks and workflows, through the SDK, REST and the CLI:
their errors, updates and deletes taking effect on the next tick, the overlap and catch-up
policies, backfill, and pausing tasks and workflows — with real engines and workers."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from pydantic import ValidationError

from stoker import (
    CatchUp,
    ConflictError,
    Cron,
    InvalidRequestError,
    NotFoundError,
    Stoker,
    UnknownTaskError,
)
from tests.apps.crons import declare
from tests.harness import REPO, wait_until

pytestmark = pytest.mark.timeout(180)

FAST_LEASE = {"STOKER_LEASE_TTL_S": "1.5"}


def _runs(db_url: str, tenant_id: int, cron: str) -> list[dict[str, Any]]:
    """The task runs a cron started, by tick."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT external_id::text, input, additional_metadata, status, started_at,"
            " finished_at FROM stoker.all_tasks WHERE tenant_id = %s AND dag_id IS NULL"
            " AND additional_metadata->>'stoker_cron' = %s"
            " ORDER BY additional_metadata->>'stoker_cron_tick'",
            (tenant_id, cron),
        ).fetchall()
    keys = ("id", "input", "metadata", "status", "started_at", "finished_at")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def _dag_runs(db_url: str, tenant_id: int, cron: str) -> list[tuple[str, Any]]:
    """The workflow runs a cron started: (id, input)."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT external_id::text, input FROM stoker.all_dags WHERE tenant_id = %s"
            " AND additional_metadata->>'stoker_cron' = %s ORDER BY id",
            (tenant_id, cron),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def _outcomes(db_url: str, tenant_id: int, cron: str) -> list[str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT f.outcome FROM stoker.cron_fire f JOIN stoker.cron c ON c.id = f.cron_id"
            " WHERE c.tenant_id = %s AND c.name = %s ORDER BY f.tick",
            (tenant_id, cron),
        ).fetchall()
    return [r[0] for r in rows]


def _tick(run: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(run["metadata"]["stoker_cron_tick"])


def _app(tenant: Any) -> Stoker:
    app = declare(tenant.client())
    app.register()
    app.workflows["cron_flow"].register()
    return app


def test_create_read_update_delete_through_the_sdk(engine: Any, tenant: Any) -> None:
    app = _app(tenant)
    crons = app.crons
    info = crons.create(
        "beat",
        app.tasks["other"],
        "* * * * * *",
        input={"tag": "v1"},
        additional_metadata={"team": "ops"},
    )
    assert (info.name, info.task_name, info.source, info.overlap) == (
        "beat",
        "other",
        "api",
        "allow",
    )
    assert info.input == {"seconds": 0.0, "tag": "v1"} and info.catch_up is None
    assert len(info.next_fire_times) == 5
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(info.next_fire_times))

    # Bad input is refused, saying what and why.
    with pytest.raises(ConflictError, match="cron named 'beat' exists"):
        crons.create("beat", "other", "* * * * *")
    with pytest.raises(InvalidRequestError, match=r"'\* \* \*' has 3 fields"):
        crons.create("bad", "other", "* * *")
    with pytest.raises(InvalidRequestError, match="minute 61 is outside 0-59"):
        crons.create("bad", "other", "61 * * * *")
    with pytest.raises(InvalidRequestError, match="unknown time zone 'Mars/Olympus'"):
        crons.create("bad", "other", "0 9 * * *", timezone="Mars/Olympus")
    with pytest.raises(UnknownTaskError, match="'nope'"):
        crons.create("bad", "nope", "* * * * *")
    with pytest.raises(ValidationError):  # the input model of the task given
        crons.create("bad", app.tasks["other"], "* * * * *", input={"seconds": "soon"})
    with pytest.raises(InvalidRequestError, match="overlap 'never'"):
        crons.create("bad", "other", "* * * * *", overlap="never")  # type: ignore[arg-type]
    for call in (
        lambda: crons.get("ghost"),
        lambda: crons.update("ghost", enabled=False),
        lambda: crons.delete("ghost"),
        lambda: crons.trigger_now("ghost"),
    ):
        with pytest.raises(NotFoundError, match="'ghost'"):
            call()
    assert [c.name for c in crons.list()] == ["beat"]

    # It fires, with its input and metadata; the last runs show on the cron.
    wait_until(lambda: len(_runs(engine.db_url, tenant.tenant_id, "beat")) >= 2, what="2 ticks")
    first = _runs(engine.db_url, tenant.tenant_id, "beat")[0]
    assert first["input"] == {"seconds": 0.0, "tag": "v1"}
    assert first["metadata"]["team"] == "ops"
    last = crons.get("beat").last_runs
    assert last and last[0].outcome == "started" and last[0].run_id

    # An update takes effect from the next tick.
    crons.update("beat", input={"tag": "v2"})
    updated_at = datetime.now(UTC)
    wait_until(
        lambda: any(
            r["input"] == {"tag": "v2"} for r in _runs(engine.db_url, tenant.tenant_id, "beat")
        ),
        what="a run with the new input",
    )
    for run in _runs(engine.db_url, tenant.tenant_id, "beat"):
        if _tick(run) > updated_at:
            assert run["input"] == {"tag": "v2"}
    changed = crons.update("beat", expression="*/2 * * * * *")
    assert all(t.second % 2 == 0 for t in changed.next_fire_times)

    # trigger_now: one run, outside the schedule.
    ref = crons.trigger_now("beat")
    assert any(r["id"] == ref.run_id for r in _runs(engine.db_url, tenant.tenant_id, "beat"))

    # Disabled, then deleted: no tick fires any more (a second cron keeps ticking).
    crons.create("clock", "other", "* * * * * *")
    assert not crons.update("beat", enabled=False).next_fire_times
    stopped = len(_runs(engine.db_url, tenant.tenant_id, "beat"))
    seen = len(_runs(engine.db_url, tenant.tenant_id, "clock"))
    wait_until(
        lambda: len(_runs(engine.db_url, tenant.tenant_id, "clock")) >= seen + 2,
        what="two ticks of the other cron",
    )
    assert len(_runs(engine.db_url, tenant.tenant_id, "beat")) == stopped
    crons.update("beat", enabled=True)
    wait_until(
        lambda: len(_runs(engine.db_url, tenant.tenant_id, "beat")) > stopped,
        what="the cron enabled again",
    )
    crons.delete("beat")
    deleted_at = len(_runs(engine.db_url, tenant.tenant_id, "beat"))
    seen = len(_runs(engine.db_url, tenant.tenant_id, "clock"))
    wait_until(
        lambda: len(_runs(engine.db_url, tenant.tenant_id, "clock")) >= seen + 2,
        what="two ticks of the other cron",
    )
    assert len(_runs(engine.db_url, tenant.tenant_id, "beat")) == deleted_at
    with pytest.raises(NotFoundError):
        crons.get("beat")
    asyncio.run(crons.aio_delete("clock"))
    assert asyncio.run(crons.aio_list()) == []


def test_code_crons_take_only_enabled_and_policies(engine: Any, tenant: Any) -> None:
    app = tenant.client()

    @app.task(name="coded", on_crons=["0 0 1 1 *"])
    async def coded(input: dict[str, Any], ctx: Any) -> None:
        return None

    app.register()
    name = "coded:0 0 1 1 *"
    with pytest.raises(InvalidRequestError, match="declared in code: change its expression"):
        app.crons.update(name, expression="* * * * *")
    with pytest.raises(InvalidRequestError, match="declared in code: remove it"):
        app.crons.delete(name)
    info = app.crons.update(name, overlap="skip", catch_up=CatchUp("1h", 2), enabled=False)
    assert (info.overlap, info.enabled, info.catch_up) == (
        "skip",
        False,
        CatchUp(timedelta(hours=1), 2),
    )
    app.register()  # registered again: the policies and enabled flag stay
    again = app.crons.get(name)
    assert (again.overlap, again.enabled, again.catch_up) == (info.overlap, False, info.catch_up)


def test_policies_declared_in_code_are_set_at_registration(engine: Any, tenant: Any) -> None:
    app = tenant.client()

    @app.task(
        name="policed",
        on_crons=[Cron("0 0 1 1 *", overlap="buffer_one", catch_up=CatchUp("1h", 3))],
    )
    async def policed(input: dict[str, Any], ctx: Any) -> None:
        return None

    app.register()
    name = "policed:0 0 1 1 *"
    info = app.crons.get(name)
    assert (info.overlap, info.catch_up, info.source) == (
        "buffer_one",
        CatchUp(timedelta(hours=1), 3),
        "code",
    )
    # Changed through the API, then registered again: the code's policies are back.
    assert app.crons.update(name, overlap="skip", catch_up="none").overlap == "skip"
    app.register()
    again = app.crons.get(name)
    assert (again.overlap, again.catch_up) == ("buffer_one", CatchUp(timedelta(hours=1), 3))

    # The next version of the code declares other policies on the same expression.
    changed = tenant.client()

    @changed.task(name="policed", on_crons=[Cron("0 0 1 1 *", overlap="cancel_previous")])
    async def policed_again(input: dict[str, Any], ctx: Any) -> None:
        return None

    changed.register()
    latest = changed.crons.get(name)
    assert (latest.overlap, latest.catch_up) == ("cancel_previous", None)


def test_crons_on_workflows_in_code_and_at_run_time(engine: Any, tenant: Any) -> None:
    app = _app(tenant)
    coded = tenant.client()
    flow = coded.workflow("ticking_flow", on_crons=["* * * * * *"], cron_input={"n": 1})

    @flow.task()
    async def only(input: dict[str, Any], ctx: Any) -> None:
        return None

    flow.register()
    name = "ticking_flow:* * * * * *"
    info = coded.crons.get(name)
    assert (info.workflow_name, info.task_name, info.source) == ("ticking_flow", "", "code")
    wait_until(lambda: _dag_runs(engine.db_url, tenant.tenant_id, name), what="a workflow run")
    assert _dag_runs(engine.db_url, tenant.tenant_id, name)[0][1] == {"n": 1}

    created = app.crons.create(
        "flow-beat", app.workflows["cron_flow"], "* * * * * *", input={"tag": "w"}
    )
    assert created.workflow_name == "cron_flow"
    wait_until(lambda: _dag_runs(engine.db_url, tenant.tenant_id, "flow-beat"), what="a run")
    assert _dag_runs(engine.db_url, tenant.tenant_id, "flow-beat")[0][1] == {
        "seconds": 0.0,
        "tag": "w",
    }
    run_ids = {i for i, _ in _dag_runs(engine.db_url, tenant.tenant_id, "flow-beat")}
    assert {r.run_id for r in app.crons.get("flow-beat").last_runs} <= run_ids
    app.crons.delete("flow-beat")

    # The next version of the code declares the workflow without its cron.
    changed = tenant.client()
    later = changed.workflow("ticking_flow")

    @later.task()
    async def only_again(input: dict[str, Any], ctx: Any) -> None:
        return None

    later.register()
    assert [c.name for c in changed.crons.list()] == []


@pytest.mark.parametrize("overlap", ["allow", "skip", "cancel_previous", "buffer_one"])
def test_overlap_policies(engine: Any, tenant: Any, worker_factory: Any, overlap: str) -> None:
    app = _app(tenant)
    worker_factory("tests.apps.crons:app", slots=8)
    app.crons.create(
        "slow",
        app.tasks["tick"],
        "* * * * * *",
        input={"seconds": 2.5},
        overlap=overlap,  # type: ignore[arg-type]
    )

    def runs() -> list[dict[str, Any]]:
        return _runs(engine.db_url, tenant.tenant_id, "slow")

    try:
        if overlap == "allow":
            wait_until(
                lambda: sum(r["status"] == "RUNNING" for r in runs()) >= 2,
                what="two runs of the cron running at once",
            )
            assert "skipped" not in _outcomes(engine.db_url, tenant.tenant_id, "slow")
            return
        if overlap == "cancel_previous":
            wait_until(
                lambda: sum(r["status"] == "CANCELLED" for r in runs()) >= 2,
                what="two previous runs cancelled",
            )
            return
        wait_until(
            lambda: (
                sum(r["status"] == "COMPLETED" for r in runs()) >= 2
                and _outcomes(engine.db_url, tenant.tenant_id, "slow").count("skipped") >= 2
            ),
            timeout=60,
            what="two runs completed and ticks skipped",
        )
        done = [r for r in runs() if r["status"] == "COMPLETED"]
        for a, b in itertools.pairwise(sorted(done, key=lambda r: r["started_at"])):
            assert b["started_at"] >= a["finished_at"], "runs of the cron overlapped"
        assert all(r["status"] != "CANCELLED" for r in runs())
    finally:
        app.crons.delete("slow")


def test_catch_up_window_and_max(engine: Any, tenant: Any) -> None:
    """A downtime is made by moving the crons' next tick four minutes back (as if the
    engine had stopped then); the leader is told through ``stoker_crons``."""
    app = _app(tenant)
    now = datetime.now(UTC)
    second = (now.second + 30) % 60  # ticks once a minute, 30 s away from now
    expression = f"{second} * * * * *"
    app.crons.create("none", "other", expression)
    app.crons.create("caught", "other", expression, catch_up=CatchUp("2m", 5))
    app.crons.create("capped", "other", expression, catch_up=CatchUp("10m", 1))
    # No worker runs: a run stays QUEUED, so each started run is still "running".
    for name, overlap in (("skipping", "skip"), ("holding", "buffer_one")):
        app.crons.create(name, "other", expression, overlap=overlap, catch_up=CatchUp("2m", 5))
    app.crons.create(
        "cancelling", "other", expression, overlap="cancel_previous", catch_up=CatchUp("2m", 5)
    )
    last = now.replace(second=second, microsecond=0)
    if last > now:
        last -= timedelta(minutes=1)
    missed = [last - timedelta(minutes=m) for m in (4, 3, 2, 1, 0)]
    with psycopg.connect(engine.db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE stoker.cron SET next_fire_at = %s WHERE tenant_id = %s",
            (missed[0], tenant.tenant_id),
        )
        conn.execute("SELECT pg_notify('stoker_crons', %s)", (f"{tenant.tenant_id}:test",))

    def advanced() -> bool:
        return all(c.next_fire_times[0] > now for c in app.crons.list())

    wait_until(advanced, what="the crons past their missed ticks")
    assert _runs(engine.db_url, tenant.tenant_id, "none") == []
    # Ticks at most 2 minutes old: those 30 s and 90 s old (the older ones stay missed).
    assert [_tick(r) for r in _runs(engine.db_url, tenant.tenant_id, "caught")] == missed[-2:]
    # At most one: the newest.
    assert [_tick(r) for r in _runs(engine.db_url, tenant.tenant_id, "capped")] == missed[-1:]
    # The caught-up ticks meet the overlap policy in turn, oldest first: skip starts the
    # first and skips the next (its run still runs); buffer_one holds it; cancel_previous
    # starts only the newest (each would cancel the one before).
    for name in ("skipping", "holding"):
        assert [_tick(r) for r in _runs(engine.db_url, tenant.tenant_id, name)] == missed[-2:-1]
    assert _outcomes(engine.db_url, tenant.tenant_id, "skipping") == ["started", "skipped"]
    assert app.crons.get("holding").buffered_tick == missed[-1]
    assert [_tick(r) for r in _runs(engine.db_url, tenant.tenant_id, "cancelling")] == missed[-1:]
    assert _outcomes(engine.db_url, tenant.tenant_id, "cancelling") == ["skipped", "started"]


def test_backfill_is_idempotent(engine: Any, tenant: Any) -> None:
    app = _app(tenant)
    app.crons.create("hourly", app.tasks["other"], "0 * * * *", input={"tag": "b"})
    end = datetime.now(UTC)
    start = end - timedelta(hours=5)
    first = app.crons.backfill("hourly", start, end)
    assert len(first) == 5 and not any(r.existing for r in first)
    assert all(r.tick.minute == 0 and r.tick.second == 0 for r in first)
    runs = _runs(engine.db_url, tenant.tenant_id, "hourly")
    assert [_tick(r) for r in runs] == [r.tick for r in first]
    assert all(r["input"] == {"seconds": 0.0, "tag": "b"} for r in runs)

    again = asyncio.run(app.crons.aio_backfill("hourly", start - timedelta(hours=1), end))
    assert len(again) == 6 and sum(r.existing for r in again) == 5
    assert {r.run.run_id for r in again if r.existing} == {r.run.run_id for r in first}
    assert len(_runs(engine.db_url, tenant.tenant_id, "hourly")) == 6
    with pytest.raises(InvalidRequestError, match="in the future"):
        app.crons.backfill("hourly", start, end + timedelta(hours=1))
    with pytest.raises(InvalidRequestError, match="past the backfill horizon"):
        app.crons.backfill("hourly", end - timedelta(days=31), end)
    app.crons.create("minutely", "other", "* * * * *")
    with pytest.raises(InvalidRequestError, match="more than 1000 ticks"):
        app.crons.backfill("minutely", end - timedelta(days=1), end)
    with pytest.raises(ValueError, match="time-zone-aware"):
        app.crons.backfill("hourly", datetime(2026, 1, 1), end)


def test_a_backfill_starting_just_after_a_tick_leaves_that_tick_out(
    engine: Any, tenant: Any
) -> None:
    """The range is [start, end] to the microsecond: a start half a second past the hour
    excludes that hour's tick, an end on the hour includes it."""
    app = _app(tenant)
    app.crons.create("hourly-edge", app.tasks["other"], "0 * * * *")
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = hour - timedelta(hours=3) + timedelta(milliseconds=500)
    fired = app.crons.backfill("hourly-edge", start, hour)
    assert [r.tick for r in fired] == [hour - timedelta(hours=h) for h in (2, 1, 0)]


def test_a_late_backfill_finds_every_tick_that_made_a_run(engine: Any, tenant: Any) -> None:
    """More ticks than the 20 fires a cron shows: those that made a run stay recorded
    while the cron goes on firing, so backfilling the range again starts nothing."""
    app = _app(tenant)
    app.crons.create("secondly", "other", "* * * * * *")
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    start = end - timedelta(seconds=29)
    first = app.crons.backfill("secondly", start, end)
    assert len(first) == 30 and not any(r.existing for r in first)

    def fired_on_time() -> int:
        return _outcomes(engine.db_url, tenant.tenant_id, "secondly").count("started")

    wait_until(lambda: fired_on_time() >= 3, what="three ticks fired on time (each trims)")
    again = app.crons.backfill("secondly", start, end)
    assert [r.existing for r in again] == [True] * 30
    assert [r.run.run_id for r in again] == [r.run.run_id for r in first]
    app.crons.update("secondly", enabled=False)
    backfilled = [r for r in _runs(engine.db_url, tenant.tenant_id, "secondly") if _tick(r) <= end]
    assert len(backfilled) == 30


def test_trigger_now_follows_the_overlap_policy(engine: Any, tenant: Any) -> None:
    """No worker runs: a started run stays QUEUED, which counts as still running."""
    app = _app(tenant)
    crons = app.crons
    crons.create("manual", "other", "0 0 1 1 *", overlap="skip")
    first = crons.trigger_now("manual")
    with pytest.raises(ConflictError, match=f"previous run {first.run_id} is still QUEUED"):
        crons.trigger_now("manual")
    forced = crons.trigger_now("manual", force=True)
    assert forced.run_id != first.run_id
    crons.update("manual", overlap="buffer_one")
    with pytest.raises(ConflictError, match=f"previous run {forced.run_id} .* buffer_one"):
        asyncio.run(crons.aio_trigger_now("manual"))

    def status(run_id: str) -> str:
        with psycopg.connect(engine.db_url) as conn:
            row = conn.execute(
                "SELECT status FROM stoker.all_tasks WHERE external_id = %s", (run_id,)
            ).fetchone()
        return str(row[0]) if row else ""

    crons.update("manual", overlap="cancel_previous")
    replacing = crons.trigger_now("manual")
    wait_until(lambda: status(forced.run_id) == "CANCELLED", what="the previous run cancelled")
    crons.update("manual", overlap="allow")
    crons.trigger_now("manual")
    assert status(replacing.run_id) == "QUEUED"
    assert [r.outcome for r in crons.get("manual").last_runs] == ["manual"] * 4

    crons.update("manual", overlap="skip")
    headers = {"authorization": f"Bearer {tenant.token}"}
    path = f"{engine.http_url}/api/v1/crons/manual/trigger"
    with httpx.Client(headers=headers, timeout=10) as http:
        refused = http.post(path)
        assert refused.status_code == 409 and "overlap policy is skip" in refused.text
        assert http.post(path, params={"force": "true"}).status_code == 200


def test_a_step_of_a_paused_workflow_fires_no_cron(engine: Any, tenant: Any) -> None:
    app = _app(tenant)
    app.workflows.pause("cron_flow")
    app.crons.create("step-beat", "cron_flow:step", "* * * * * *")
    wait_until(
        lambda: _outcomes(engine.db_url, tenant.tenant_id, "step-beat").count("paused") >= 2,
        what="two ticks of the paused workflow's step cron",
    )
    assert "started" not in _outcomes(engine.db_url, tenant.tenant_id, "step-beat")
    app.workflows.resume("cron_flow")
    wait_until(
        lambda: "started" in _outcomes(engine.db_url, tenant.tenant_id, "step-beat"),
        what="the step's cron firing again",
    )
    app.crons.delete("step-beat")


def test_pause_keeps_runs_queued_and_crons_silent_and_resume_drains(
    engine: Any, tenant: Any, worker_factory: Any
) -> None:
    app = _app(tenant)
    worker_factory("tests.apps.crons:app", slots=4)
    tick, other = app.tasks["tick"], app.tasks["other"]
    assert app.tasks.pause("tick") == 0
    app.crons.create("paused-beat", tick, "* * * * * *")
    queued = tick.run_no_wait({"tag": "held"})
    assert other.run({"tag": "free"}) == {"tag": "free"}  # the scheduler ran; tick did not
    wait_until(
        lambda: _outcomes(engine.db_url, tenant.tenant_id, "paused-beat").count("paused") >= 2,
        what="two ticks of the paused task's cron",
    )
    assert "started" not in _outcomes(engine.db_url, tenant.tenant_id, "paused-beat")
    with psycopg.connect(engine.db_url) as conn:
        status = conn.execute(
            "SELECT status FROM stoker.task WHERE external_id = %s", (queued.run_id,)
        ).fetchone()
    assert status == ("QUEUED",)
    headers = {"authorization": f"Bearer {tenant.token}"}
    listed = httpx.get(f"{engine.http_url}/api/v1/paused", headers=headers, timeout=10).json()
    assert [(p["kind"], p["name"], p["drop"]) for p in listed["items"]] == [("task", "tick", False)]
    assert [p.name for p in app.tasks.paused()] == ["tick"]

    app.tasks.resume("tick")
    assert queued.result(timeout=30)["tag"] == "held"
    wait_until(
        lambda: "started" in _outcomes(engine.db_url, tenant.tenant_id, "paused-beat"),
        what="the cron firing again",
    )
    app.crons.delete("paused-beat")

    # drop: the queued runs are cancelled, now and while paused.
    assert asyncio.run(app.tasks.aio_pause("tick", drop=True)) == 0
    dropped = tick.run_no_wait({"tag": "dropped"})

    def status_of(run_id: str) -> str | None:
        with psycopg.connect(engine.db_url) as conn:
            row = conn.execute(
                "SELECT status FROM stoker.all_tasks WHERE external_id = %s", (run_id,)
            ).fetchone()
        return row[0] if row else None

    wait_until(lambda: status_of(dropped.run_id) == "CANCELLED", what="the run dropped")
    asyncio.run(app.tasks.aio_resume("tick"))
    assert tick.run({"tag": "after"})["tag"] == "after"

    # Workflows: their steps' runs stay queued until resumed.
    flow = app.workflows["cron_flow"]
    app.workflows.pause("cron_flow")
    held = flow.run_no_wait({"tag": "wf"})
    assert other.run({"tag": "free"}) == {"tag": "free"}
    with pytest.raises(TimeoutError):
        held.result(timeout=1)
    app.workflows.resume("cron_flow")
    assert held.result(timeout=30)["step"] == {"tag": "wf"}
    with pytest.raises(UnknownTaskError, match="'nope'"):
        app.tasks.pause("nope")


def test_rest_api(engine: Any, tenant: Any) -> None:
    _app(tenant)
    api = f"{engine.http_url}/api/v1"
    headers = {"authorization": f"Bearer {tenant.token}"}
    with httpx.Client(headers=headers, timeout=10) as http:
        body = {"name": "rest cron", "task_name": "other", "expression": "0 */6 * * *"}
        created = http.post(f"{api}/crons", json={**body, "input": {"tag": "r"}})
        assert created.status_code == 201, created.text
        assert created.json()["source"] == "api" and created.json()["input"] == {"tag": "r"}
        again = http.post(f"{api}/crons", json=body)
        assert again.status_code == 409, again.text
        assert (
            again.json()["error"]["type"] == "ConflictError" and "'rest cron' exists" in again.text
        )
        bad = http.post(f"{api}/crons", json={**body, "name": "x", "expression": "0 25 * * *"})
        assert bad.status_code in (400, 422) and "hour 25 is outside 0-23" in bad.text
        path = f"{api}/crons/{urllib.parse.quote('rest cron', safe='')}"
        assert http.get(path).json()["expression"] == "0 */6 * * *"
        patched = http.patch(
            path, json={"overlap": "skip", "catch_up_window_s": 600, "catch_up_max": 2}
        )
        assert patched.status_code == 200, patched.text
        assert (patched.json()["overlap"], patched.json()["catch_up_max"]) == ("skip", 2)
        run = http.post(f"{path}/trigger").json()
        assert run["run_id"]
        end = datetime.now(UTC)
        filled = http.post(
            f"{path}/backfill",
            json={"start": (end - timedelta(hours=12)).isoformat(), "end": end.isoformat()},
        )
        assert filled.status_code == 200, filled.text
        assert len(filled.json()["items"]) == 2
        last = http.get(path).json()["last_runs"]
        assert {r["outcome"] for r in last} == {"manual", "backfill"}
        assert http.post(f"{api}/tasks/other/pause", json={"drop": False}).json() == {"dropped": 0}
        assert [p["name"] for p in http.get(f"{api}/paused").json()["items"]] == ["other"]
        assert http.post(f"{api}/tasks/other/resume").status_code == 204
        assert http.post(f"{api}/tasks/nope/pause").status_code == 404
        assert http.delete(path).status_code == 204
        assert http.get(path).status_code == 404


def _cli(tenant: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stoker", *args],
        env={**os.environ, **tenant.env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli(engine: Any, tenant: Any) -> None:
    _app(tenant)
    made = _cli(
        tenant, "cron", "create", "nightly", "--task", "other",
        "--expression", "TZ=Europe/Berlin 0 3 * * *", "--input", '{"tag": "cli"}',
        "--overlap", "skip",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    shown = json.loads(made.stdout)
    assert (shown["timezone"], shown["overlap"], shown["input"]) == (
        "Europe/Berlin",
        "skip",
        {"tag": "cli"},
    )
    listed = _cli(tenant, "cron", "list")
    assert listed.returncode == 0 and "nightly" in listed.stdout
    updated = _cli(tenant, "cron", "update", "nightly", "--disable")
    assert updated.returncode == 0 and json.loads(updated.stdout)["enabled"] is False
    triggered = _cli(tenant, "cron", "trigger", "nightly")
    assert triggered.returncode == 0 and len(triggered.stdout.strip()) == 36
    # Its run stays queued (no worker): "skip" refuses another, unless forced.
    refused = _cli(tenant, "cron", "trigger", "nightly")
    assert refused.returncode != 0 and "overlap policy is skip" in refused.stderr
    forced = _cli(tenant, "cron", "trigger", "nightly", "--force")
    assert forced.returncode == 0 and forced.stdout.strip() != triggered.stdout.strip()
    end = datetime.now(UTC)
    start = (end - timedelta(days=2)).isoformat()
    filled = _cli(tenant, "cron", "backfill", "nightly", "--start", start, "--end", end.isoformat())
    assert filled.returncode == 0 and len(filled.stdout.splitlines()) == 2, filled.stderr
    assert _cli(tenant, "task", "pause", "other").returncode == 0
    assert "other" in _cli(tenant, "task", "paused").stdout
    assert _cli(tenant, "task", "resume", "other").returncode == 0
    bad = _cli(tenant, "cron", "create", "x", "--task", "other", "--expression", "0 0 32 * *")
    assert bad.returncode == 2 and "day of month 32 is outside 1-31" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert _cli(tenant, "cron", "delete", "nightly").returncode == 0
    gone = _cli(tenant, "cron", "get", "nightly")
    assert gone.returncode == 2 and "no cron named 'nightly'" in gone.stderr


def test_a_run_time_cron_fires_once_per_tick_across_a_failover(
    engine_factory: Any, tenant_factory: Any
) -> None:
    first = engine_factory(env={**FAST_LEASE, "STOKER_ENGINE_ID": "one"})
    second = engine_factory(db_url=first.db_url, env={**FAST_LEASE, "STOKER_ENGINE_ID": "two"})
    ten = tenant_factory(first)
    app = Stoker(address=second.grpc_address, token=ten.token)
    declare(app).register()
    app.crons.create("failover", "other", "* * * * * *")

    def ticks() -> list[datetime]:
        return [_tick(r) for r in _runs(first.db_url, ten.tenant_id, "failover")]

    wait_until(lambda: len(ticks()) >= 3, what="three ticks")
    with psycopg.connect(first.db_url) as conn:
        leader = conn.execute("SELECT holder FROM stoker.lease WHERE expires_at > now()").fetchone()
    assert leader is not None
    (first if leader[0] == "one" else second).kill()
    before = len(ticks())
    wait_until(lambda: len(ticks()) >= before + 4, timeout=60, what="ticks after the failover")
    fired = ticks()
    assert fired == sorted(set(fired))  # no duplicate
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(fired))  # no gap
