"""The SDK's one owner of gRPC channels: calls to the engine, with authentication, retries
and error mapping.

:class:`Transport` holds, per engine address, a blocking channel and one asyncio channel
per event loop, each with the stubs of both engine services (:class:`Stubs`); ``close()``
closes every one of them, the asyncio channels of every loop included. A worker's stream
and its heartbeat thread open dedicated channels with :func:`open_aio_channel` /
:func:`open_channel`, so that they never share one with the app's calls (and close them
themselves).

Calls that fail because the engine cannot be reached, or the engine's database cannot
(both UNAVAILABLE), are retried with exponential backoff until ``connect_timeout_s`` has
passed, then raise :class:`~stoker.errors.EngineUnavailableError` (its subclass
:class:`~stoker.errors.DatabaseUnavailableError` for the database). When
``STOKER_ADDRESS`` lists several engine replicas, such a failure moves calls on to the next
address (each address keeps its channels until ``close()``). Errors the engine reports
come back as the same Stoker exception types the engine raised.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from stoker import errors
from stoker._core.wire import ERROR_TYPE_KEY, error_class, message_limit
from stoker._proto import admin_pb2_grpc as apb_grpc
from stoker._proto import engine_pb2_grpc as pb_grpc
from stoker._proto import events_pb2_grpc as epb_grpc
from stoker._proto import observe_pb2_grpc as opb_grpc
from stoker._proto import push_pb2_grpc as ppb_grpc
from stoker._proto import schedules_pb2_grpc as spb_grpc
from stoker._proto import webhooks_pb2_grpc as hpb_grpc
from stoker._proto import workflows_pb2_grpc as wpb_grpc
from stoker.config import ClientSettings, read_pem

T = TypeVar("T")

log = logging.getLogger("stoker.client")

# While the engine is unreachable, say so at once and then every this many seconds.
_RETRY_LOG_EVERY_S = 10.0

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE}

# Responses (results of many runs, assignments) may carry many payloads.
_RECEIVE_HEADROOM = 64 * 1024 * 1024


def channel_options(settings: ClientSettings) -> list[tuple[str, Any]]:
    # Requests are batched to fit the engine's limit (stoker._core.wire.message_limit); one that
    # cannot fit fails here, before it is sent, as PayloadTooLargeError.
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", settings.max_payload_bytes + _RECEIVE_HEADROOM),
        ("grpc.max_send_message_length", message_limit(settings.max_payload_bytes)),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]
    if settings.use_tls and settings.tls_server_name:
        options.append(("grpc.ssl_target_name_override", settings.tls_server_name))
    return options


def channel_credentials(settings: ClientSettings) -> grpc.ChannelCredentials | None:
    """TLS credentials for the engine (None: plaintext): the system's roots or
    ``tls_ca_file``, and a client certificate for mutual TLS when one is configured."""
    if not settings.use_tls:
        return None
    settings.check_tls()

    def pem(path: str, what: str) -> bytes | None:
        return read_pem(path, what) if path else None

    return grpc.ssl_channel_credentials(
        root_certificates=pem(settings.tls_ca_file, "STOKER_TLS_CA_FILE"),
        private_key=pem(settings.tls_key_file, "STOKER_TLS_KEY_FILE"),
        certificate_chain=pem(settings.tls_cert_file, "STOKER_TLS_CERT_FILE"),
    )


def _target(settings: ClientSettings, address: str | None) -> str:
    """``address``, else the first of the engine addresses the settings list."""
    return address or (settings.addresses or [settings.address])[0]


def open_channel(settings: ClientSettings, address: str | None = None) -> grpc.Channel:
    """A blocking channel to the engine (at ``address``, one of ``settings.addresses``),
    over TLS when configured."""
    target = _target(settings, address)
    credentials = channel_credentials(settings)
    if credentials is None:
        return grpc.insecure_channel(target, options=channel_options(settings))
    return grpc.secure_channel(target, credentials, options=channel_options(settings))


def open_aio_channel(settings: ClientSettings, address: str | None = None) -> grpc.aio.Channel:
    """An asyncio channel to the engine (at ``address``, one of ``settings.addresses``),
    over TLS when configured."""
    target = _target(settings, address)
    credentials = channel_credentials(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=channel_options(settings))
    return grpc.aio.secure_channel(target, credentials, options=channel_options(settings))


def to_stoker_error(exc: grpc.RpcError, address: str) -> errors.StokerError:
    """The Stoker exception for a failed call."""
    code = exc.code()
    details = exc.details() or ""
    trailing = dict(exc.trailing_metadata() or ())
    cls = error_class(str(trailing.get(ERROR_TYPE_KEY, "")), code.name)
    if cls is not None:
        return cls(details)
    if code in _RETRYABLE:
        return errors.EngineUnavailableError(
            f"the Stoker engine at {address} is unavailable: {details}"
        )
    return errors.StokerError(f"engine call failed ({code.name}): {details}")


class Stubs:
    """The stubs of the engine's services over one channel."""

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel) -> None:
        self.engine = pb_grpc.EngineStub(channel)
        self.workflows = wpb_grpc.WorkflowsStub(channel)
        self.schedules = spb_grpc.SchedulesStub(channel)
        self.events = epb_grpc.EventsStub(channel)
        self.webhooks = hpb_grpc.WebhooksStub(channel)
        self.observe = opb_grpc.ObserveStub(channel)
        self.admin = apb_grpc.AdminStub(channel)
        self.push = ppb_grpc.PushStub(channel)


class Transport:
    """Channels to the engine: per engine address, a sync channel and one asyncio channel
    per event loop.

    A channel stays open until :meth:`close`, also when calls move on to another address:
    dropping a channel closes it (gRPC closes an unreferenced channel), and calls still in
    flight on a closed channel are never answered, so a retry that moved elsewhere would
    strand every other call made on it until its deadline.
    """

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.metadata = (("authorization", f"Bearer {settings.token}"),)
        self._lock = threading.Lock()
        self._sync: dict[str, tuple[grpc.Channel, Stubs]] = {}
        self._aio: dict[tuple[asyncio.AbstractEventLoop, str], tuple[grpc.aio.Channel, Stubs]] = {}
        self._next_retry_log = 0.0
        self.addresses = settings.addresses or [settings.address]
        """The engine replicas, in the order calls try them."""
        self._current = 0

    @property
    def address(self) -> str:
        """The engine address calls use now (one of ``settings.addresses``)."""
        return self.addresses[self._current % len(self.addresses)]

    def next_address(self, after: str | None = None) -> None:
        """Moves calls on to the next engine address (no-op with one).

        ``after``: the address a failed call used. Many calls failing at once on the same
        replica move on once, not once each (which could land them back on it).
        """
        if len(self.addresses) < 2:
            return
        with self._lock:
            if after is None or self.address == after:
                self._current += 1

    def stubs(self, address: str | None = None) -> Stubs:
        """The stubs on the sync channel to ``address`` (default: the current one)."""
        address = address or self.address
        with self._lock:
            found = self._sync.get(address)
            if found is None:
                channel = open_channel(self.settings, address)
                found = self._sync[address] = (channel, Stubs(channel))
            return found[1]

    def aio_stubs(self, address: str | None = None) -> Stubs:
        """The stubs on the running loop's channel to ``address`` (default: the current
        one), opened on first use on that loop."""
        loop = asyncio.get_running_loop()
        address = address or self.address
        with self._lock:
            found = self._aio.get((loop, address))
            if found is None:
                for old in [key for key in self._aio if key[0].is_closed()]:
                    del self._aio[old]  # its channel went with the loop
                channel = open_aio_channel(self.settings, address)
                found = self._aio[(loop, address)] = (channel, Stubs(channel))
            return found[1]

    def call(
        self,
        method: Callable[[Stubs], Callable[..., T]],
        request: Any,
        *,
        timeout: float = 30.0,
    ) -> T:
        """A unary call on the sync channel, retried while the engine is unreachable.

        ``method`` picks the RPC from the stubs (``lambda s: s.engine.Trigger``); it is
        applied on every try, since a retry may have moved to another address.
        """
        deadline = time.monotonic() + self.settings.connect_timeout_s
        delay = 0.05
        while True:
            address = self.address
            try:
                return method(self.stubs(address))(request, metadata=self.metadata, timeout=timeout)
            except grpc.RpcError as exc:
                left = deadline - time.monotonic()
                if exc.code() not in _RETRYABLE or left <= 0:
                    raise self._error(exc) from None
                self._log_retry(exc, left)
                self.next_address(after=address)
            time.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)

    async def acall(
        self,
        method: Callable[[Stubs], Callable[..., Any]],
        request: Any,
        *,
        timeout: float = 30.0,
    ) -> Any:
        """A unary call on this loop's channel, retried while the engine is unreachable."""
        deadline = time.monotonic() + self.settings.connect_timeout_s
        delay = 0.05
        while True:
            address = self.address
            try:
                return await method(self.aio_stubs(address))(
                    request, metadata=self.metadata, timeout=timeout
                )
            except grpc.RpcError as exc:
                left = deadline - time.monotonic()
                if exc.code() not in _RETRYABLE or left <= 0:
                    raise self._error(exc) from None
                self._log_retry(exc, left)
                self.next_address(after=address)
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)

    def _log_retry(self, exc: grpc.RpcError, left: float) -> None:
        """Warns that calls wait for the engine: at once, then every ``_RETRY_LOG_EVERY_S``."""
        now = time.monotonic()
        with self._lock:
            if now < self._next_retry_log:
                return
            self._next_retry_log = now + _RETRY_LOG_EVERY_S
        log.warning(
            "the Stoker engine at %s is unreachable (%s); retrying for up to %.0fs more "
            "(STOKER_CONNECT_TIMEOUT_S) before giving up",
            self.settings.address,
            exc.details() or exc.code().name,
            left,
        )

    def _error(self, exc: grpc.RpcError) -> errors.StokerError:
        err = to_stoker_error(exc, self.settings.address)
        # The engine answered that its database is down: its own message says so.
        if type(err) is errors.EngineUnavailableError:
            return errors.EngineUnavailableError(
                f"could not reach the Stoker engine at {self.settings.address} within "
                f"{self.settings.connect_timeout_s:g}s ({exc.details()}); is it running? "
                "Start one with `stoker lite` or set STOKER_ADDRESS."
            )
        return err

    def close(self) -> None:
        """Closes every channel this transport opened: the sync one, and the asyncio
        channel of every loop (on that loop; one already closed took its channel along)."""
        with self._lock:
            sync, self._sync = self._sync, {}
            aio, self._aio = self._aio, {}
        for channel, _ in sync.values():
            channel.close()
        for (loop, _), (channel, _) in aio.items():
            _close_on(loop, channel)


def _close_on(loop: asyncio.AbstractEventLoop, channel: grpc.aio.Channel) -> None:
    """Closes an asyncio channel on the loop it belongs to, from any thread."""
    if loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        task = loop.create_task(channel.close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    elif loop.is_running():
        asyncio.run_coroutine_threadsafe(channel.close(), loop)
    elif running is None:
        loop.run_until_complete(channel.close())
    # else: an idle loop cannot be run from inside another one; its channel closes itself
    # once no longer referenced.


# Close tasks scheduled on the caller's own loop, kept referenced until they finish.
_closing: set[asyncio.Task[None]] = set()
