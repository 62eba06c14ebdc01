"""A loopback TCP proxy that can pass, delay, black-hole or cut connections.

It sits between workers and an engine replica to make a network partition on one
machine: ``delay`` holds every chunk for a while, ``blackhole`` keeps the connections
open but forwards nothing (the peer sees a silent network), ``cut`` resets every open
connection and refuses new ones, ``heal`` goes back to passing bytes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct


class Proxy:
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.mode = "pass"
        self.delay_s = 0.0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self.connections = 0

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def delay(self, seconds: float) -> None:
        """Every chunk waits ``seconds`` before it is forwarded."""
        self.mode, self.delay_s = "delay", seconds
        self._flowing.set()

    def blackhole(self) -> None:
        """Connections stay open; nothing is forwarded either way until :meth:`heal`."""
        self.mode = "blackhole"
        self._flowing.clear()

    def cut(self) -> None:
        """Resets every open connection; new ones are reset at once until :meth:`heal`."""
        self.mode = "cut"
        self._flowing.set()
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    def heal(self) -> None:
        self.mode, self.delay_s = "pass", 0.0
        self._flowing.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                _reset(writer)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            _reset(writer)
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        pipes = [
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in (writer, up_writer):
                self._writers.discard(w)
                with contextlib.suppress(Exception):
                    w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            await self._flowing.wait()
            if self.mode == "delay" and self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.mode == "cut" or writer.is_closing():
                return
            writer.write(data)
            await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes with a TCP RST (SO_LINGER 0), as a dropped route or a crashed peer would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()
