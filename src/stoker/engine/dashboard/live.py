"""Live pages: Server-Sent Events fed by the engine's run signals.

A page that shows runs opens one ``EventSource`` on ``/ui/live`` (``static/live.js``).
The hub hears the engine's :class:`~stoker.engine.signals.Signals` — runs queued (here or
on another replica), runs finished — and wakes the streams of the tenants concerned. A
message carries no data beyond its name (``runs``): the page re-fetches its own
tenant-scoped fragments (htmx, ``hx-trigger="live"``), so nothing is sent to a browser
that its own requests could not read.

Each stream sends at most one message per :data:`MIN_INTERVAL_S` (changes in between are
coalesced into the next message) and a ``tick`` after :data:`TICK_S` without one: attempts
that start are not signalled, and the tick moves their chips from QUEUED to RUNNING (it is
also the keepalive that lets proxies and the browser see a dead connection). When the stream
breaks, ``live.js`` polls every 10 s until it reconnects; the pause switch stops both.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

from stoker.engine.signals import Signals

MIN_INTERVAL_S = 0.4
TICK_S = 2.0


class _Stream:
    """One open page: woken by the hub, read by its SSE response."""

    def __init__(self, tenant_id: int) -> None:
        self.tenant_id = tenant_id
        self.changed = asyncio.Event()


class LiveHub:
    """Fans the engine's run signals out to the open dashboard pages."""

    def __init__(self, signals: Signals | None = None) -> None:
        self._streams: set[_Stream] = set()
        if signals is not None:
            signals.on_queued(self._tenants_changed)
            signals.on_tenant_finished(lambda tenant_id: self._tenants_changed({tenant_id}))
            signals.on_finished(self._runs_finished)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    def _tenants_changed(self, tenants: set[int]) -> None:
        for stream in self._streams:
            if stream.tenant_id in tenants:
                stream.changed.set()

    def _runs_finished(self, _ids: list[uuid.UUID]) -> None:
        # Local finishes name runs, not tenants; every page re-reads its own tenant's rows.
        for stream in self._streams:
            stream.changed.set()

    def touch(self, tenant_id: int) -> None:
        """Wakes a tenant's pages (after an action taken through the dashboard)."""
        self._tenants_changed({tenant_id})

    async def events(self, tenant_id: int, *, max_s: float | None = None) -> AsyncIterator[str]:
        """The SSE text of one page's stream: ``runs`` after changes, ``tick`` while
        nothing changed for a while; ends after ``max_s`` (the browser
        reconnects by itself)."""
        stream = _Stream(tenant_id)
        self._streams.add(stream)
        loop = asyncio.get_running_loop()
        started = loop.time()
        last_sent = 0.0
        try:
            yield "retry: 2000\n\n"
            while max_s is None or loop.time() - started < max_s:
                try:
                    await asyncio.wait_for(stream.changed.wait(), timeout=TICK_S)
                    stream.changed.clear()
                    name = "runs"
                except TimeoutError:
                    name = "tick"
                wait = last_sent + MIN_INTERVAL_S - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    stream.changed.clear()  # coalesced into this message
                last_sent = loop.time()
                yield f"event: {name}\ndata: {name}\n\n"
        finally:
            self._streams.discard(stream)
