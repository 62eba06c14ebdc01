"""A task and a workflow for the transactional enqueue tests (tests/e2e/test_txenq.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from stoker import Context, Idempotency, Stoker


class Order(BaseModel):
    order_id: int = Field(ge=0)
    note: str = ""


def declare(app: Stoker) -> Stoker:
    @app.task()
    async def ship(input: Order, ctx: Context) -> dict[str, Any]:
        return {"shipped": input.order_id, "note": input.note}

    @app.task(idempotency=Idempotency(expression="input.order_id"))
    async def invoice(input: Order, ctx: Context) -> dict[str, Any]:
        return {"invoiced": input.order_id}

    flow = app.workflow("fulfilment", input_validator=Order)

    @flow.task()
    async def pack(input: Order, ctx: Context) -> dict[str, Any]:
        return {"packed": input.order_id}

    return app


app = declare(Stoker())
