"""A small shop app, and the test suite next to it shows how to test it (README "Testing")."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel

from stoker import Context, Depends, DurableContext, Stoker

app = Stoker()


class Order(BaseModel):
    id: int
    amount: float


class Prices:
    """Stands for a client of a pricing service (made by the worker's lifespan)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate


def get_prices(ctx: Context) -> Prices:
    return ctx.lifespan["prices"] if ctx.lifespan else Prices(rate=1.0)


@app.task(retries=2)
async def charge(
    order: Order, ctx: Context, prices: Annotated[Prices, Depends(get_prices)]
) -> dict[str, Any]:
    return {"order": order.id, "charged": round(order.amount * prices.rate, 2)}


async def reserve(order_id: int) -> str:
    return f"reservation-{order_id}"


@app.durable_task()
async def fulfil(order: Order, ctx: DurableContext) -> dict[str, Any]:
    reservation = await ctx.step(reserve, order.id)
    await ctx.sleep(3600)  # wait an hour before shipping
    payment = await ctx.wait_for_event(f"payment:{order.id}")
    return {"reservation": reservation, "paid": payment["paid"]}


checkout = app.workflow("checkout", input_validator=Order)


@checkout.task()
async def price(order: Order, ctx: Context) -> float:
    return order.amount * 1.2


@checkout.task(parents=[price])
async def invoice(order: Order, ctx: Context) -> str:
    return f"invoice for {ctx.task_output(price):.2f}"
