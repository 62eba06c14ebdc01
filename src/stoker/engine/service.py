"""The start/stop contract every engine service follows.

``start()`` returns once the service is running; ``stop()`` returns once it has stopped and
may be called any number of times, before or after ``start()``. A :class:`LoopService` runs
one background coroutine and is told to stop through ``self.stopping``.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod

log = logging.getLogger("stoker.engine")


class Service(ABC):
    """A long-running part of the engine."""

    name: str = "service"

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...


class LoopService(Service):
    """A service whose work is one coroutine, :meth:`run`, looping until ``stopping`` is set."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._signals: list[Signal] = []

    def signal(self) -> Signal:
        """A wake-up signal of this service; stopping the service sets it, so a loop that
        waits on it without a timeout still notices the stop."""
        sig = Signal()
        self._signals.append(sig)
        return sig

    async def start(self) -> None:
        if self._task is None:
            self.stopping.clear()
            self._task = asyncio.create_task(self._guarded(), name=f"stoker-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self.stopping.set()
        for sig in self._signals:
            sig.set()
        try:
            await asyncio.wait_for(task, timeout=10)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _guarded(self) -> None:
        while not self.stopping.is_set():
            try:
                await self.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                # A loop must survive a failed round (a lost connection, a deadlock): log it
                # and start the loop again after a short pause.
                log.exception("%s loop failed; restarting it", self.name)
                await self.sleep(1.0)

    async def sleep(self, seconds: float) -> bool:
        """Waits ``seconds`` or until stopping; returns True when the service is stopping."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    @abstractmethod
    async def run(self) -> None: ...


class Signal:
    """A wake-up flag: ``set()`` from anywhere in the loop; ``wait(timeout)`` consumes it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float | None = None) -> bool:
        """True when woken, False on timeout (None: no timeout); the flag is cleared."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout=timeout)
            woken = True
        except TimeoutError:
            woken = False
        self._event.clear()
        return woken
