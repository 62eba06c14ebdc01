"""mock_run: task bodies in-process, with stand-in durable calls and dependencies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import pytest

from stoker import Context, Depends, OutputSerializationError, Stoker
from stoker.testing import MockContext

LOG: list[str] = []


def resource() -> Iterator[str]:
    LOG.append("open")
    yield "real"
    LOG.append("close")


app = Stoker()


@app.task()
def uses(input: dict[str, Any], ctx: Context, r: Annotated[str, Depends(resource)]) -> str:
    return f"{r} {ctx.lifespan}"


@app.task()
def unsendable(input: Any, ctx: Context) -> Any:
    return {"when": object()}


def test_dependencies_are_solved_and_torn_down() -> None:
    LOG.clear()
    assert uses.mock_run({}, lifespan="shared") == "real shared"
    assert LOG == ["open", "close"]
    assert uses.mock_run({}, dependencies={resource: "fake"}) == "fake None"


def test_an_output_that_is_not_json_fails_as_on_a_worker() -> None:
    with pytest.raises(OutputSerializationError, match="could not be serialized"):
        unsendable.mock_run(None)


def test_mock_run_refuses_a_running_loop_and_aio_mock_run_works_there() -> None:
    import asyncio

    async def inside() -> str:
        with pytest.raises(RuntimeError, match="aio_mock_run"):
            uses.mock_run({})
        return await uses.aio_mock_run({}, dependencies={resource: "x"})

    assert asyncio.run(inside()) == "x None"


def test_replacing_a_step_that_does_not_exist_names_the_steps() -> None:
    wf = app.workflow("wf_mock")

    @wf.task()
    def only(input: Any, ctx: Context) -> int:
        return 1

    with pytest.raises(KeyError, match="no step 'nope' to replace"):
        wf.mock_run({}, replace={"nope": 1})
    assert wf.mock_run({}, replace={only: lambda i, c: 2}) == {"only": 2}


def test_a_mock_context_without_an_event_says_what_to_give() -> None:
    import asyncio

    ctx = MockContext()
    with pytest.raises(LookupError, match=r"mock_run\(events=...\)"):
        asyncio.run(ctx.wait_for_event("k"))
