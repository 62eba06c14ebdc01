"""A worker's lifespan and task dependencies, in an in-process worker on the session
engine: setup and teardown order, failures, overrides."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import psycopg
import pytest

from stoker import Context, Depends, LifespanError, Stoker, TaskRunError, Worker

pytestmark = pytest.mark.timeout(60)

LOG: list[str] = []


@asynccontextmanager
async def lifespan() -> AsyncIterator[dict[str, Any]]:
    LOG.append("lifespan up")
    yield {"greeting": "hello"}
    LOG.append("lifespan down")


async def get_a() -> AsyncIterator[str]:
    LOG.append("a up")
    try:
        yield "a"
    except ValueError as exc:
        LOG.append(f"a saw {exc}")
        raise
    finally:
        LOG.append("a down")


def get_b(ctx: Context, a: Annotated[str, Depends(get_a)]) -> Iterator[str]:
    LOG.append("b up")
    yield f"{a}+b({ctx.lifespan['greeting']})"
    LOG.append("b down")


async def get_greeting(ctx: Context) -> str:
    return str(ctx.lifespan["greeting"])


def broken() -> str:
    raise ConnectionError("the pool is down")


def declare(app: Stoker) -> Stoker:
    @app.task()
    async def uses(
        input: dict[str, Any],
        ctx: Context,
        b: Annotated[str, Depends(get_b)],
        a: Annotated[str, Depends(get_a)],
        greeting: Annotated[str, Depends(get_greeting)],
    ) -> dict[str, Any]:
        LOG.append("task")
        if input.get("fail"):
            raise ValueError("boom")
        return {"a": a, "b": b, "greeting": greeting}

    @app.task(executor="thread")
    def sync_uses(
        input: dict[str, Any], ctx: Context, b: Annotated[str, Depends(get_b)]
    ) -> dict[str, Any]:
        return {"b": b, "thread": threading.current_thread().name}

    @app.task()
    async def needs_broken(
        input: dict[str, Any], ctx: Context, x: Annotated[str, Depends(broken)]
    ) -> str:
        return x

    return app


def start(worker: Worker) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(worker.async_start(),))
    thread.start()
    return loop, thread


@pytest.fixture
def app(engine: Any, tenant: Any) -> Iterator[Stoker]:
    client = declare(Stoker(address=engine.grpc_address, token=tenant.token, connect_timeout=30))
    yield client
    client.close()


def test_lifespan_and_dependencies_set_up_and_tear_down_in_order(app: Stoker) -> None:
    LOG.clear()
    worker = app.worker("deps", slots=2, lifespan=lifespan)
    loop, thread = start(worker)
    try:
        out = app.tasks["uses"].run({})
        assert out == {"a": "a", "b": "a+b(hello)", "greeting": "hello"}
        # get_a ran once for the attempt (the task and get_b share it); teardowns run
        # in reverse order, before the result is reported.
        assert LOG == ["lifespan up", "a up", "b up", "task", "b down", "a down"]
        LOG.clear()
        with pytest.raises(TaskRunError) as info:
            app.tasks["uses"].run({"fail": True})
        assert info.value.error_type == "ValueError"
        # The exception is thrown into the generators at their yield: get_b has no
        # `finally`, so its teardown line is skipped; get_a sees the error.
        assert LOG == ["a up", "b up", "task", "a saw boom", "a down"]
        sync = app.tasks["sync_uses"].run({})
        assert sync["b"] == "a+b(hello)" and "sync_uses" in sync["thread"]
        with pytest.raises(TaskRunError) as broke:
            app.tasks["needs_broken"].run({})
        assert broke.value.error_type == "ConnectionError"
        assert broke.value.error_message == "the pool is down"
        LOG.clear()
    finally:
        worker.request_stop()
        thread.join(timeout=30)
        loop.close()
    assert LOG == ["lifespan down"]


def test_dependency_overrides_replace_providers(app: Stoker) -> None:
    async def fake_a() -> str:
        return "fake"

    app.dependency_overrides[get_a] = fake_a
    worker = app.worker("deps-overridden", slots=2, lifespan=lifespan)
    loop, thread = start(worker)
    try:
        assert app.tasks["uses"].run({})["b"] == "fake+b(hello)"
    finally:
        worker.request_stop()
        thread.join(timeout=30)
        loop.close()


def test_a_lifespan_that_fails_stops_the_worker_before_it_registers(
    app: Stoker, engine: Any
) -> None:
    @asynccontextmanager
    async def failing() -> AsyncIterator[None]:
        raise ConnectionRefusedError("no database")
        yield

    worker = app.worker("never-registered", lifespan=failing)
    with pytest.raises(LifespanError, match=r"lifespan failed to start.*ConnectionRefusedError"):
        asyncio.run(worker.async_start())
    with psycopg.connect(engine.db_url) as conn:
        rows = conn.execute(
            "SELECT 1 FROM stoker.worker WHERE name = 'never-registered'"
        ).fetchall()
    assert rows == []
