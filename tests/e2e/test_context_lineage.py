"""What a task's context tells about its run (lineage, max_attempts), ctx.cancel(), and
dataclass and TypedDict inputs and outputs, through an in-process worker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from typing_extensions import TypedDict  # pydantic needs it before Python 3.12

from stoker import Context, RunCancelledError, Stoker

pytestmark = pytest.mark.timeout(60)


@dataclass
class Point:
    x: int
    y: int


class Moved(TypedDict):
    x: int
    y: int
    by: str


def about(ctx: Context) -> dict[str, Any]:
    return {
        "run_id": ctx.run_id,
        "parent_run_id": ctx.parent_run_id,
        "child_index": ctx.child_index,
        "child_key": ctx.child_key,
        "workflow_run_id": ctx.workflow_run_id,
        "max_attempts": ctx.max_attempts,
    }


def declare(app: Stoker) -> Stoker:
    @app.task()
    async def child(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return about(ctx)

    @app.task(retries=2)
    async def parent(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        first = await child.aio_run({})
        keyed = await child.aio_run({}, child_key="k")
        return {"me": about(ctx), "children": [first, keyed]}

    wf = app.workflow("lineage_wf")

    @wf.task()
    async def step(input: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return about(ctx)

    @app.task()
    async def quits(input: dict[str, Any], ctx: Context) -> None:
        ctx.cancel()
        await asyncio.wait_for(ctx.cancelled.wait(), 30)

    @app.task()
    def quits_sync(input: dict[str, Any], ctx: Context) -> None:
        ctx.cancel()
        ctx.state.cancel_flag.wait(30)

    @app.task()
    def move(input: Point, ctx: Context) -> Moved:
        return {"x": input.x + 1, "y": input.y + 1, "by": "one"}

    @app.task()
    async def back(input: Moved, ctx: Context) -> Point:
        return Point(input["x"] - 1, input["y"] - 1)

    return app


@pytest.fixture
def app(engine: Any, tenant: Any) -> Iterator[Stoker]:
    client = declare(Stoker(address=engine.grpc_address, token=tenant.token, connect_timeout=30))
    worker = client.worker("lineage", slots=6)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(worker.async_start(),))
    thread.start()
    try:
        yield client
    finally:
        worker.request_stop()
        thread.join(timeout=30)
        loop.close()
        client.close()


def test_the_context_tells_lineage_and_max_attempts(app: Stoker) -> None:
    ref = app.tasks["parent"].run_no_wait({})
    out = ref.result(timeout=30)
    assert out["me"]["max_attempts"] == 3 and out["me"]["parent_run_id"] is None
    first, keyed = out["children"]
    assert first["parent_run_id"] == ref.run_id and keyed["parent_run_id"] == ref.run_id
    assert (first["child_index"], first["child_key"]) == (0, None)
    assert (keyed["child_index"], keyed["child_key"]) == (1, "k")
    assert first["max_attempts"] == 1 and first["workflow_run_id"] is None
    wf_ref = app.workflows["lineage_wf"].run_no_wait({})
    step = wf_ref.result(timeout=30)["step"]
    assert step["workflow_run_id"] == wf_ref.run_id and step["parent_run_id"] is None


def test_ctx_cancel_cancels_the_own_run(app: Stoker) -> None:
    for name in ("quits", "quits_sync"):
        with pytest.raises(RunCancelledError, match=r"ctx\.cancel"):
            app.tasks[name].run({})


def test_dataclass_and_typeddict_inputs_and_outputs(app: Stoker) -> None:
    moved = app.tasks["move"].run(Point(1, 2))
    assert moved == {"x": 2, "y": 3, "by": "one"}
    assert app.tasks["back"].run(moved) == Point(1, 2)
    with pytest.raises(Exception, match="x"):
        app.tasks["move"].run({"x": "not a number", "y": 1})
