"""Pure parts of the dashboard's pages: times and crons in words, trigger forms from an
input schema and the input read back from a form, and the schema a task registers."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from stoker import Context, Stoker
from stoker._core import cron
from stoker._core.wire import TaskConfig
from stoker.engine.crons import CronView
from stoker.engine.dashboard.pages_crons import cron_page
from stoker.engine.dashboard.pages_forms import RAW_INPUT, form_fields, read_form
from stoker.engine.dashboard.pages_words import ago, cron_in_words, duration, until

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_durations_read_in_their_two_largest_units() -> None:
    assert duration(timedelta(0)) == "0 s"
    assert duration(timedelta(seconds=45)) == "45 s"
    assert duration(timedelta(seconds=200)) == "3 min 20 s"
    assert duration(timedelta(days=2, hours=4, minutes=5)) == "2 d 4 h"
    assert duration(timedelta(hours=1, seconds=5)) == "1 h"
    assert ago(NOW - timedelta(seconds=12), NOW) == "12 s ago"
    assert ago(NOW + timedelta(seconds=3), NOW) == "just now"
    assert until(NOW + timedelta(minutes=3), NOW) == "in 3 min"
    assert until(NOW - timedelta(minutes=3), NOW) == "now"


@pytest.mark.parametrize(
    ("expression", "zone", "words"),
    [
        ("* * * * *", None, "every minute"),
        ("*/5 * * * *", None, "every 5 minutes"),
        ("15 * * * *", None, "every hour at minute 15"),
        ("0 */2 * * *", None, "every 2 hours"),
        ("@daily", None, "at 00:00 every day"),
        ("30 8,17 * * *", None, "at 08:30 and 17:30 every day"),
        ("0 9 * * 1-5", "Europe/Berlin", "at 09:00 on Monday to Friday (Europe/Berlin)"),
        ("0 0 * * MON,WED,FRI", None, "at 00:00 on Monday, Wednesday, Friday"),
        ("0 0 1 1 *", None, "at 00:00 on day 1 of the month in January"),
        ("* * * 6-8 *", None, "every minute in June to August"),
        ("*/10 * * * * *", None, "every 10 seconds"),
        ("7 1-20 * * *", None, "cron 7 1-20 * * *"),  # no short reading: the expression
    ],
)
def test_crons_read_in_words(expression: str, zone: str | None, words: str) -> None:
    assert cron_in_words(cron.parse(expression, zone)) == words


class Order(BaseModel):
    customer: str = Field(description="Who ordered")
    quantity: int
    weight: float | None = None
    express: bool = False
    region: Literal["eu", "us"] = "eu"
    lines: list[dict[str, Any]] = []
    notes: dict[str, str] | None = None


def test_a_form_has_one_field_per_property_of_the_input_model() -> None:
    fields = {f.name: f for f in form_fields(Order.model_json_schema())}
    assert [(n, f.kind, f.required) for n, f in fields.items()] == [
        ("customer", "text", True),
        ("quantity", "integer", True),
        ("weight", "number", False),
        ("express", "boolean", False),
        ("region", "choice", False),
        ("lines", "json", False),
        ("notes", "json", False),
    ]
    assert fields["customer"].description == "Who ordered"
    assert fields["region"].choices == ("eu", "us") and fields["region"].default == "eu"
    assert fields["lines"].default == "[]" and fields["lines"].json_type == "array"
    assert fields["notes"].json_type == "object" and fields["notes"].default == ""


def test_a_filled_form_makes_input_the_model_accepts() -> None:
    fields = form_fields(Order.model_json_schema())
    form = {
        "customer": "acme",
        "quantity": " 3 ",
        "weight": "",
        "express": "on",
        "region": "us",
        "lines": '[{"sku": "a"}]',
        "notes": "",
    }
    result = read_form(fields, form)
    assert result.ok
    assert result.value == {
        "customer": "acme",
        "quantity": 3,
        "express": True,
        "region": "us",
        "lines": [{"sku": "a"}],
    }
    assert Order.model_validate(result.value).quantity == 3


def test_every_bad_field_gets_its_own_message() -> None:
    fields = form_fields(Order.model_json_schema())
    result = read_form(
        fields,
        {"quantity": "three", "weight": "x", "region": "mars", "lines": '{"sku": ', "notes": "[]"},
    )
    assert not result.ok
    assert result.errors == {
        "customer": "required",
        "quantity": "not a whole number: 'three'",
        "weight": "not a number: 'x'",
        "region": "must be one of eu, us",
        "lines": "not valid JSON: Expecting value at line 1, column 8",
        "notes": "must be a JSON object",
    }


def test_without_a_schema_the_form_is_one_json_field() -> None:
    (only,) = form_fields(None)
    assert only.name == RAW_INPUT and only.kind == "json"
    assert read_form([only], {RAW_INPUT: '{"a": [1, 2]}'}).value == {"a": [1, 2]}
    bad = read_form([only], {RAW_INPUT: "{'a': 1}"})
    assert bad.errors == {
        RAW_INPUT: "not valid JSON: Expecting property name enclosed in double quotes "
        "at line 1, column 2"
    }


def test_a_task_registers_its_input_schema() -> None:
    app = Stoker(address="127.0.0.1:1", token="unused")

    @app.task()
    def place(order: Order, ctx: Context) -> None:
        return None

    @app.task()
    def raw(payload: dict[str, Any], ctx: Context) -> None:
        return None

    registered = TaskConfig.model_validate_json(place.definition_config().model_dump_json())
    assert registered.input_schema == Order.model_json_schema()
    assert raw.definition_config().input_schema is None


def test_a_cron_page_reads_next_fires_as_waits_and_local_times() -> None:
    row: Any = {
        "name": "nightly",
        "task_name": None,
        "workflow_name": "report",
        "expression": "0 9 * * 1-5",
        "timezone": "Europe/Berlin",
        "enabled": True,
        "source": "api",
        "overlap": "skip",
        "input": {"full": True},
    }
    parsed = cron.parse(row["expression"], row["timezone"])
    fires = list(itertools.islice(parsed.fires(NOW), 2))
    last = {"tick": NOW - timedelta(days=1), "outcome": "started", "run_id": None, "status": None}
    page = cron_page(CronView(row, fires, [last]), NOW)
    assert page.words == "at 09:00 on Monday to Friday (Europe/Berlin)"
    assert (page.target_kind, page.target) == ("workflow", "report")
    # 2026-12-03 is a Thursday: the next fires are Friday and Monday 09:00 in Berlin.
    assert page.next_fires == [
        "in 20 h (Fri 04 Dec 09:00 CET)",
        "in 3 d 20 h (Mon 07 Dec 09:00 CET)",
    ]
    assert page.last_fires[0].tick == "1 d ago"
