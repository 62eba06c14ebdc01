"""The worker's heartbeat thread.

Heartbeats go from a dedicated thread over a channel of their own (not the app's, not the
stream's), so a task that blocks the event loop cannot make a healthy worker look dead.
When a replica does not answer within two heartbeat intervals, the next address is tried
(any replica records heartbeats) on a new channel. When the engine answers that it no
longer knows the worker (it was declared dead), ``on_unknown`` is called: the session
re-opens the stream. When it answers that the worker was asked to drain (the dashboard's
Drain), ``on_drain`` is called once: the worker stops as on SIGTERM.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc

from stoker._proto import engine_pb2 as pb
from stoker._sdk.transport import Stubs, open_channel
from stoker.config import ClientSettings


class Heartbeat:
    """Sends ``Heartbeat(worker_id)`` every ``settings.heartbeat_interval_s`` until stopped."""

    def __init__(
        self,
        settings: ClientSettings,
        metadata: tuple[tuple[str, str], ...],
        worker_id: str,
        on_unknown: Callable[[], None],
        on_drain: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._metadata = metadata
        self._worker_id = worker_id
        self._on_unknown = on_unknown
        self._on_drain = on_drain
        self._drained = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stoker-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Asks the thread to end (it does at its next tick); safe to call twice."""
        self._stop.set()

    def _loop(self) -> None:
        settings = self._settings
        addresses = settings.addresses or [settings.address]
        turn = 0
        channel = open_channel(settings, addresses[0])
        stubs = Stubs(channel)
        req = pb.HeartbeatRequest(worker_id=self._worker_id)
        # A heartbeat later than two intervals is as good as lost: give up on it and send
        # the next one (on the next replica, when several are listed) rather than wait on a
        # link that went silent while the engine's dead-worker clock runs.
        timeout = max(1.0, 2 * settings.heartbeat_interval_s)
        try:
            while not self._stop.wait(settings.heartbeat_interval_s):
                try:
                    resp = stubs.engine.Heartbeat(req, metadata=self._metadata, timeout=timeout)
                except grpc.RpcError:
                    # That replica is away: any other one records heartbeats as well (the
                    # stream loop reconnects on its own). With one address, a new channel
                    # all the same: a channel that failed to connect waits out its growing
                    # reconnect backoff (seconds after a long outage), and heartbeats held
                    # back that long after the engine is back get the worker declared dead.
                    turn += 1
                    channel.close()
                    channel = open_channel(settings, addresses[turn % len(addresses)])
                    stubs = Stubs(channel)
                    continue
                if not resp.known:
                    self._on_unknown()
                if resp.drain and not self._drained and self._on_drain is not None:
                    self._drained = True
                    self._on_drain()
        finally:
            channel.close()
