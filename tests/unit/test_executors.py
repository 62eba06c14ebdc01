"""Executor declarations: every mistake fails when declared, with a message that says
what to do."""

from __future__ import annotations

from typing import Any

import pytest

from stoker import Context, DeclarationError, Stoker
from stoker._sdk.worker.procpool import describe_exit
from tests.apps import procs


def test_an_unknown_executor_name_is_refused() -> None:
    app = Stoker()
    with pytest.raises(DeclarationError, match="unknown executor 'processes'; choose 'thread'"):

        @app.task(executor="processes")  # type: ignore[typeddict-item]
        def f(input: Any, ctx: Context) -> None: ...

    with pytest.raises(DeclarationError, match="worker 'w': unknown executor 'fork'"):
        procs.app.worker("w", executor="fork")  # type: ignore[arg-type]


def test_async_and_durable_tasks_take_no_executor() -> None:
    app = Stoker()
    with pytest.raises(DeclarationError, match="runs sync functions; an async def task"):

        @app.task(executor="process")
        async def f(input: Any, ctx: Context) -> None: ...

    with pytest.raises(DeclarationError, match="durable task runs on the worker's event loop"):

        @app.durable_task(executor="thread")
        async def g(input: Any, ctx: Context) -> None: ...


def test_a_process_task_must_be_importable_by_name() -> None:
    app = Stoker()
    with pytest.raises(DeclarationError, match="declared at the top level of a module"):

        @app.task(executor="process")
        def local(input: Any, ctx: Context) -> None: ...

    @app.task()
    def local_sync(input: Any, ctx: Context) -> None: ...

    # As the worker's default it is checked when the worker is made.
    with pytest.raises(DeclarationError, match="task 'local_sync': executor='process'"):
        app.worker("w", executor="process")
    app.worker("w", executor="thread")  # a thread needs no import


def test_the_worker_default_applies_to_sync_tasks_without_their_own() -> None:
    worker = procs.app.worker("w", slots=4, executor="process")
    kinds = worker.executors.kinds
    assert kinds["plain_sync"] == "process"
    assert kinds["threaded"] == "thread"
    assert kinds["burn"] == "process"
    assert worker.executors.targets["burn"].module == "tests.apps.procs"
    assert procs.app.worker("w2").executors.kinds["plain_sync"] is None


def test_exit_statuses_in_words() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-11) == "was killed by SIGSEGV"
    assert "out-of-memory" in describe_exit(-9)


def test_a_workflow_executor_applies_to_its_sync_steps() -> None:
    app = Stoker()
    wf = app.workflow("wf_exec", executor="thread")

    @wf.task()
    def sync_step(input: Any, ctx: Context) -> None: ...

    @wf.task()
    async def async_step(input: Any, ctx: Context) -> None: ...

    assert sync_step.executor == "thread"
    assert async_step.executor is None
