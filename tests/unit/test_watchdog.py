"""The event-loop watchdog names the frame that blocked the loop."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_blocked_loop_leaves_its_stack_and_a_warning() -> None:
    script = textwrap.dedent(
        """
        import asyncio, logging, time
        from stoker.engine import watchdog

        def blocking_call_in_the_loop():
            time.sleep(1.5)

        async def main():
            watch = asyncio.create_task(watchdog.watch(0.5))
            await asyncio.sleep(0.1)
            blocking_call_in_the_loop()
            await asyncio.sleep(1.2)  # the watchdog's next tick sees the gap
            watch.cancel()

        logging.basicConfig(level=logging.INFO)
        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Timeout (0:00:00.625000)!" in done.stderr, done.stderr
    assert "blocking_call_in_the_loop" in done.stderr, done.stderr
    assert "the event loop was blocked for" in done.stderr, done.stderr


def test_a_loop_that_keeps_turning_dumps_nothing() -> None:
    script = textwrap.dedent(
        """
        import asyncio
        from stoker.engine import watchdog

        async def main():
            watch = asyncio.create_task(watchdog.watch(0.5))
            for _ in range(20):
                await asyncio.sleep(0.1)
            watch.cancel()

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Timeout" not in done.stderr, done.stderr


def test_a_task_dump_shows_what_each_task_awaits() -> None:
    import asyncio

    from stoker.engine import watchdog

    async def inner(fut: asyncio.Future[None]) -> None:
        await fut

    async def outer_waiting_for_the_database(fut: asyncio.Future[None]) -> None:
        await inner(fut)

    async def main() -> str:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(outer_waiting_for_the_database(fut), name="the-stuck-call")
        await asyncio.sleep(0)
        text = watchdog.describe_tasks()
        fut.set_result(None)
        await task
        return text

    text = asyncio.run(main())
    block = text.split("task the-stuck-call:", 1)[1]
    assert "outer_waiting_for_the_database" in block and "inner" in block, text
    assert "await fut" in block, text
