"""Crons declared on tasks: checked at declaration, sent with the task's definition."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from stoker import Context, Stoker
from stoker._core.cron import CronError
from stoker.errors import DeclarationError


class Report(BaseModel):
    region: str
    days: int = 1


def _app() -> Stoker:
    return Stoker(address="127.0.0.1:1", token="unused")


def test_crons_and_their_input_travel_with_the_definition() -> None:
    app = _app()

    @app.task(
        on_crons=["0 9 * * MON-FRI", "TZ=Europe/Berlin */5 * * * * *"],
        cron_input={"region": "eu"},
    )
    async def report(input: Report, ctx: Context) -> None: ...

    crons = report.config.crons
    assert [c.expression for c in crons] == ["0 9 * * MON-FRI", "TZ=Europe/Berlin */5 * * * * *"]
    assert all(json.loads(c.input_json) == {"region": "eu", "days": 1} for c in crons)


@pytest.mark.parametrize(
    ("crons", "timezone", "named"),
    [
        (["61 * * * *"], None, "61 * * * *"),
        (["* * *"], None, "* * *"),
        (["TZ=Mars/Olympus 0 * * * *"], None, "Mars/Olympus"),
        (["0 * * * *"], "Nowhere/Land", "Nowhere/Land"),
    ],
)
def test_a_bad_expression_or_zone_is_refused_at_declaration_naming_it(
    crons: list[str], timezone: str | None, named: str
) -> None:
    app = _app()
    with pytest.raises(CronError) as info:

        @app.task(on_crons=crons, cron_timezone=timezone)
        async def ticked(input: Any, ctx: Context) -> None: ...

    assert named in str(info.value)
    assert "ticked" in str(info.value)


def test_cron_input_is_checked_against_the_input_model() -> None:
    app = _app()
    with pytest.raises(DeclarationError, match="cron_input"):

        @app.task(on_crons=["@daily"], cron_input={"days": 3})
        async def report(input: Report, ctx: Context) -> None: ...


def test_on_crons_must_be_a_list() -> None:
    with pytest.raises(DeclarationError, match="list"):

        @_app().task(on_crons="@daily")
        async def report(input: Any, ctx: Context) -> None: ...


def test_cron_objects_declare_their_policies_next_to_strings() -> None:
    from stoker import CatchUp, Cron

    app = _app()

    @app.task(
        on_crons=[
            "0 9 * * *",
            Cron("*/5 * * * *", overlap="skip", catch_up=CatchUp(window="1h", max_runs=3)),
            Cron("0 8 * * *", overlap="buffer_one", timezone="Europe/Berlin"),
        ],
        cron_input={"region": "eu"},
    )
    async def report(input: Report, ctx: Context) -> None: ...

    plain, skipping, berlin = report.config.crons
    assert (plain.expression, plain.overlap) == ("0 9 * * *", None)  # keeps the API's policies
    assert (skipping.overlap, skipping.catch_up_window_s, skipping.catch_up_max) == (
        "skip",
        3600,
        3,
    )
    assert (berlin.overlap, berlin.catch_up_max, berlin.timezone) == (
        "buffer_one",
        0,
        "Europe/Berlin",
    )
    assert json.loads(skipping.input_json) == {"region": "eu", "days": 1}

    flow = app.workflow("flow", on_crons=[Cron("0 0 * * *", overlap="cancel_previous")])
    assert [(c.expression, c.overlap) for c in flow.crons] == [("0 0 * * *", "cancel_previous")]


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ({"expression": "* * * * *", "overlap": "sometimes"}, "overlap 'sometimes' is not one of"),
        ({"expression": "* * * * *", "catch_up": "all"}, "catch_up takes 'none' or CatchUp"),
        ({"expression": "61 * * * *"}, "minute 61 is outside 0-59"),
        ({"expression": "* * * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
    ],
)
def test_a_bad_cron_object_fails_at_declaration(cron: dict[str, Any], message: str) -> None:
    from stoker import Cron

    app = _app()
    with pytest.raises(CronError, match=message) as caught:

        @app.task(name="beat", on_crons=[Cron(**cron)])
        async def beat(input: dict[str, Any], ctx: Context) -> None: ...

    assert "task 'beat'" in str(caught.value)
    with pytest.raises(DeclarationError, match="expression strings or Cron"):

        @app.task(name="other", on_crons=[5])  # type: ignore[list-item]
        async def other(input: dict[str, Any], ctx: Context) -> None: ...
