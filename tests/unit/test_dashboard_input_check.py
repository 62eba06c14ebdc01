"""The check of an edited input against the JSON schema pydantic makes for an input model
(the dashboard's "replay with edited input")."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from stoker.engine.dashboard.pages_forms import schema_problems


class Size(StrEnum):
    S = "s"
    L = "l"


class Line(BaseModel):
    sku: str
    qty: int = Field(ge=1)


class Order(BaseModel, extra="forbid"):
    customer: str = Field(min_length=2)
    size: Size = Size.S
    lines: list[Line] = []
    note: str | None = None
    ratio: float = 0.5


SCHEMA = Order.model_json_schema()


def test_a_fitting_input_has_no_problems() -> None:
    value = {"customer": "acme", "size": "l", "lines": [{"sku": "a", "qty": 2}], "note": None}
    assert schema_problems(SCHEMA, value) == []
    assert schema_problems(SCHEMA, {"customer": "acme", "ratio": 1}) == []  # an int is a number


def test_every_problem_is_named_by_where_it_is() -> None:
    value = {
        "size": "xl",
        "lines": [{"sku": "a", "qty": 0}, {"qty": "two"}],
        "note": 5,
        "extra": True,
    }
    found = schema_problems(SCHEMA, value)
    assert "input.customer: required" in found
    assert any(p.startswith("input.size: must be one of") for p in found)
    assert "input.lines[0].qty: must be at least 1" in found
    assert "input.lines[1].sku: required" in found
    assert 'input.lines[1].qty: expected integer, got "two"' in found
    assert any(p.startswith("input.note: expected string") for p in found)
    assert "input.extra: not a field of the input" in found


def test_types_are_strict_as_in_json() -> None:
    assert schema_problems({"type": "integer"}, True) == ["input: expected integer, got true"]
    assert schema_problems({"type": "integer"}, 2.0) == []
    assert schema_problems({"type": "integer"}, 2.5) != []
    assert schema_problems({"type": "object"}, [1]) == ["input: expected object, got [1]"]
    assert schema_problems({"type": "string", "maxLength": 3}, "abcd") == [
        "input: must have at most 3 characters or items"
    ]
    assert schema_problems(None, {"anything": 1}) == []
