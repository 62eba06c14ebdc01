"""Crons declared in code: one run per tick across engine replicas and a failover, the
tick in the runs' metadata, and a cron removed from the code stops."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from stoker import Context, NotFoundError, Stoker
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(120)

FAST_LEASE = {"STOKER_LEASE_TTL_S": "1.5"}


def _declare(app: Stoker, name: str, crons: list[str]) -> Stoker:
    @app.task(name=name, on_crons=crons, cron_input={"from": "cron"})
    async def ticked(input: dict[str, Any], ctx: Context) -> None:
        return None

    return app


def _ticks(db_url: str, task_name: str, tenant_id: int) -> list[tuple[str, str, Any]]:
    """The task's runs in creation order: (cron name, tick, input)."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT additional_metadata, input FROM stoker.task WHERE task_name = %s"
            " AND tenant_id = %s ORDER BY id",
            (task_name, tenant_id),
        ).fetchall()
    return [(m["stoker_cron"], m["stoker_cron_tick"], i) for m, i in rows]


def _leader(db_url: str) -> str | None:
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT holder FROM stoker.lease WHERE expires_at > now()").fetchone()
    return str(row[0]) if row else None


def test_a_per_second_cron_fires_once_per_tick_across_a_failover(
    engine_factory: Any, tenant_factory: Any
) -> None:
    first = engine_factory(env={**FAST_LEASE, "STOKER_ENGINE_ID": "one"})
    second = engine_factory(db_url=first.db_url, env={**FAST_LEASE, "STOKER_ENGINE_ID": "two"})
    ten = tenant_factory(first)
    app = Stoker(address=second.grpc_address, token=ten.token)
    _declare(app, "every_second", ["* * * * * *"]).register()

    wait_until(
        lambda: len(_ticks(first.db_url, "every_second", ten.tenant_id)) >= 3, what="three ticks"
    )
    leader = wait_until(lambda: _leader(first.db_url), what="a leader")
    (first if leader == "one" else second).kill()
    survivor = second if leader == "one" else first
    before = len(_ticks(first.db_url, "every_second", ten.tenant_id))
    wait_until(
        lambda: len(_ticks(first.db_url, "every_second", ten.tenant_id)) >= before + 4,
        timeout=60,
        what="ticks fired by the surviving replica",
        log=survivor.log_path,
    )
    runs = _ticks(first.db_url, "every_second", ten.tenant_id)
    assert {name for name, _, _ in runs} == {"every_second:* * * * * *"}
    assert all(i == {"from": "cron"} for _, _, i in runs)
    ticks = [datetime.fromisoformat(t) for _, t, _ in runs]
    assert ticks == sorted(set(ticks))  # unique, strictly increasing
    # Catch-up policy none with a grace longer than the failover: no tick is missing.
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(ticks))


def test_a_cron_removed_from_the_code_stops(engine: Any, tenant_factory: Any) -> None:
    ten = tenant_factory(engine)
    clock = Stoker(address=engine.grpc_address, token=ten.token)
    _declare(clock, "clock", ["* * * * * *"])
    _declare(clock, "removed", ["* * * * * *"]).register()
    wait_until(lambda: _ticks(engine.db_url, "removed", ten.tenant_id), what="the cron's first run")

    # Read back through the SDK and the REST API, with the next fire times.
    info = clock.crons.get("removed:* * * * * *")
    assert (info.task_name, info.expression, info.timezone) == ("removed", "* * * * * *", "UTC")
    assert info.enabled and info.source == "code" and info.input == {"from": "cron"}
    assert len(info.next_fire_times) == 5
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(info.next_fire_times))
    assert [c.name for c in clock.crons.list()] == ["clock:* * * * * *", "removed:* * * * * *"]
    with pytest.raises(NotFoundError, match="nope"):
        clock.crons.get("nope")
    headers = {"authorization": f"Bearer {ten.token}"}
    items = httpx.get(f"{engine.http_url}/api/v1/crons", headers=headers, timeout=10).json()
    assert [(c["name"], len(c["next_fire_times"])) for c in items["items"]] == [
        ("clock:* * * * * *", 5),
        ("removed:* * * * * *", 5),
    ]

    # The next version of the code declares the task without its cron.
    changed = Stoker(address=engine.grpc_address, token=ten.token)
    try:
        _declare(changed, "removed", []).register()
        with psycopg.connect(engine.db_url) as conn:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM stoker.cron WHERE tenant_id = %s ORDER BY name",
                    (ten.tenant_id,),
                )
            ]
        assert names == ["clock:* * * * * *"]
        stopped_at = len(_ticks(engine.db_url, "removed", ten.tenant_id))
        clock_at = len(_ticks(engine.db_url, "clock", ten.tenant_id))
        # Two more ticks of the other cron: the removed one had its chances, took none.
        wait_until(
            lambda: len(_ticks(engine.db_url, "clock", ten.tenant_id)) >= clock_at + 2,
            what="two ticks of the other cron",
        )
        assert len(_ticks(engine.db_url, "removed", ten.tenant_id)) == stopped_at
    finally:  # the engine is shared by the session: leave no cron firing
        _declare(changed, "clock", []).register()
