"""Tasks and a workflow that events start (README "Events"), in real worker processes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from stoker import Context, DefaultFilter, Idempotency, Stoker


class Order(BaseModel):
    order_id: int
    amount: float


def _seen(input: Any, ctx: Context) -> dict[str, Any]:
    """What a run knows of the event that started it."""
    return {
        "input": input.model_dump() if isinstance(input, BaseModel) else input,
        "filter_payload": ctx.filter_payload,
        "event_key": ctx.additional_metadata.get("stoker_event_key"),
        "event_id": ctx.additional_metadata.get("stoker_event"),
        "leaked": "stoker_filter_payload" in ctx.additional_metadata,
    }


def declare(app: Stoker) -> Stoker:
    @app.task(on_events=["order:created"])
    async def record_order(input: Order, ctx: Context) -> dict[str, Any]:
        return _seen(input, ctx)

    @app.task(
        on_events=["order:*"],
        default_filters=[DefaultFilter("input.amount > 100", payload={"tier": "big"})],
    )
    async def big_orders(input: Order, ctx: Context) -> dict[str, Any]:
        return _seen(input, ctx)

    @app.task(on_events=["order:created"])
    async def audit(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return _seen(input, ctx)

    @app.task(on_events=["shipment:**"])
    async def shipments(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return _seen(input, ctx)

    @app.task(on_events=["bulk:item"])
    async def bulk_item(input: dict[str, Any], ctx: Context) -> None:
        return None

    # One live run per refund, however many events ask for it.
    @app.task(on_events=["refund:requested"], idempotency=Idempotency(expression="input.refund_id"))
    async def refund(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return _seen(input, ctx)

    @app.task(on_events=["refund:requested"])
    async def refund_log(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return _seen(input, ctx)

    flow = app.workflow("order_flow", input_validator=Order, on_events=["order:created"])

    @flow.task()
    async def confirm(input: Order, ctx: Context) -> dict[str, Any]:
        return _seen(input, ctx)

    return app


app = declare(Stoker())
