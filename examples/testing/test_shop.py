"""Tests of the shop app: in-process with mock_run, and end to end with the plugin's
engine and worker (run with `pytest -p stoker.testing`)."""

from __future__ import annotations

from typing import Any

import pytest
from shop import Order, Prices, charge, checkout, fulfil, get_prices, invoice, price

from stoker import Worker
from stoker.testing import MockContext


def test_charge_with_a_replaced_dependency() -> None:
    out = charge.mock_run(Order(id=1, amount=10), dependencies={get_prices: Prices(rate=0.5)})
    assert out == {"order": 1, "charged": 5.0}


def test_fulfil_sleeps_at_once_and_records_its_steps() -> None:
    ctx = MockContext()
    out = fulfil.mock_run({"id": 7, "amount": 3}, events={"payment:7": {"paid": True}}, context=ctx)
    assert out == {"reservation": "reservation-7", "paid": True}
    assert ctx.steps == [("reserve", "reservation-7")]
    assert ctx.sleeps == [3600.0]
    assert ctx.waits == ["payment:7"]


def test_a_step_with_its_parents_outputs() -> None:
    assert invoice.mock_run(Order(id=2, amount=1), parent_outputs={price: 12.5}) == (
        "invoice for 12.50"
    )


def test_the_workflow_with_a_step_replaced() -> None:
    out = checkout.mock_run(Order(id=3, amount=10), replace={price: 99.0})
    assert out == {"price": 99.0, "invoice": "invoice for 99.00"}


async def test_charge_end_to_end(stoker_worker: Worker) -> None:
    out: dict[str, Any] = await charge.aio_run(Order(id=4, amount=2.5))
    assert out == {"order": 4, "charged": 2.5}


async def test_checkout_end_to_end(stoker_worker: Worker) -> None:
    assert await checkout.aio_run(Order(id=5, amount=10)) == {
        "price": 12.0,
        "invoice": "invoice for 12.00",
    }


@pytest.fixture
def stoker_worker_options() -> dict[str, Any]:
    return {"slots": 4, "durable_slots": 4}
