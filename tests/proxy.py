"""A loopback TCP proxy that can lose the engine's replies, for tests of retried calls.

It forwards bytes both ways between clients and one target address, on an asyncio loop
of its own thread. :meth:`ReplyLosingProxy.hold` makes it keep (not forward) what the
target sends back on the connections open at that moment; :meth:`ReplyLosingProxy.cut`
then resets those connections, so the held replies are never delivered. A client's call
made in between reaches the engine, which does the work, but its reply is lost and the
client sees the connection drop (gRPC UNAVAILABLE) and retries on a new connection,
which is forwarded normally.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _Link:
    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.holding = False
        self.held = 0

    def abort(self) -> None:
        for w in (self.client, self.upstream):
            w.transport.abort()


class ReplyLosingProxy:
    """``start()`` it, point a client at ``address``; ``hold()``, then ``cut()``."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._links: list[_Link] = []
        self._handlers: set[asyncio.Task[None]] = set()
        self.address = ""
        self.accepted = 0
        """Client connections accepted so far (a retry after a cut opens a new one)."""

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def start(self) -> ReplyLosingProxy:
        self._thread.start()

        async def listen() -> str:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
            port = self._server.sockets[0].getsockname()[1]
            return f"127.0.0.1:{port}"

        self.address = self._run(listen())
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        link = _Link(writer, up_writer)
        self._links.append(link)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, back: bool) -> None:
            try:
                while data := await src.read(65536):
                    if back and link.holding:
                        link.held += len(data)
                        continue
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer, False), pump(up_reader, writer, True))
        self._links.remove(link)

    def hold(self) -> None:
        """From now on, keep the replies on the connections open now."""

        async def hold() -> int:
            for link in self._links:
                link.holding = True
            return len(self._links)

        assert self._run(hold()) > 0, "no client connection to hold replies of"

    def cut(self) -> int:
        """Resets the held connections without delivering their replies; bytes dropped."""

        async def cut() -> int:
            held = [link for link in self._links if link.holding]
            for link in held:
                link.abort()
            return sum(link.held for link in held)

        return self._run(cut())

    def stop(self) -> None:
        async def close() -> None:
            for link in list(self._links):
                link.abort()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        self._run(close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
