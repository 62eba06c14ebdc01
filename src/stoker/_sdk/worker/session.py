"""The worker's stream to the engine: registration, reconnects, the outbox, draining.

* The stream carries assignments and cancellations in, and batches of task events out. It
  reconnects with backoff when the stream breaks, moving on to the next engine address
  when ``STOKER_ADDRESS`` lists several replicas; running tasks keep running, their events
  wait in the :class:`Outbox`, and the new registration lists the attempts still running
  so the engine neither loses nor duplicates them (it cancels those that are no longer
  ours). Results sent shortly before a stream broke are sent again on the next one.
* Each stream gets a dedicated asyncio channel (:func:`~stoker._sdk.transport.open_aio_channel`),
  closed when the stream ends.
* On stop the session drains: the engine is told to assign nothing more, running attempts
  get ``grace`` seconds to finish and report, then what still runs is handed back and the
  stream is closed cleanly (the engine requeues those attempts at once without using up
  a retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc

from stoker._core.wire import message_limit, split_batches
from stoker._proto import engine_pb2 as pb
from stoker._proto import observe_pb2 as opb
from stoker._sdk.logs import SHIP_EVERY_S, Shipping
from stoker._sdk.transport import Stubs, open_aio_channel, to_stoker_error
from stoker.config import ClientSettings
from stoker.errors import AuthenticationError

if TYPE_CHECKING:
    from stoker._sdk.worker.runtime import Runtime

log = logging.getLogger("stoker.worker")

# Results sent this recently on a stream that then broke are sent again on the next one:
# the replica may have died before storing them (it stores within milliseconds).
RESEND_WINDOW_S = 10.0


@dataclass
class Outbox:
    """Task events (and control messages) waiting to be sent; kept across reconnects."""

    events: list[pb.TaskEvent] = field(default_factory=list)
    control: list[pb.WorkerMessage] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    shipping: Shipping | None = None
    """Log lines and stream chunks of running attempts (:mod:`stoker._sdk.logs`), sent
    before the events: an attempt's lines reach the engine before its end."""

    def put(self, event: pb.TaskEvent) -> None:
        self.events.append(event)
        self.wake.set()

    def put_control(self, message: pb.WorkerMessage) -> None:
        """Queues a message such as a label update, sent before the next events."""
        self.control.append(message)
        self.wake.set()


@dataclass(eq=False)
class Lifecycle:
    """The worker's stop and reconnect flags, shared by its parts (made on its loop)."""

    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """A stop was requested: drain."""
    force: threading.Event = field(default_factory=threading.Event)
    """A second stop request: hand back without waiting."""
    reconnect: asyncio.Event = field(default_factory=asyncio.Event)
    """The engine no longer knows this worker: open a new stream."""
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Something a drain waits for happened (a result queued or sent, a forced stop)."""
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while a registered stream is up."""


@dataclass(frozen=True, slots=True)
class Identity:
    """What a registration tells the engine about the worker (labels are read each time)."""

    worker_id: str
    name: str
    slots: int
    durable_slots: int
    task_names: list[str]
    labels: Callable[[], dict[str, str | int]]
    grace: float


class Session:
    """The worker's connection to the engine: one stream at a time, until drained."""

    def __init__(
        self,
        *,
        identity: Identity,
        settings: ClientSettings,
        metadata: tuple[tuple[str, str], ...],
        runtime: Runtime,
        outbox: Outbox,
        lifecycle: Lifecycle,
    ) -> None:
        self.identity = identity
        self.settings = settings
        self.metadata = metadata
        self.runtime = runtime
        self.outbox = outbox
        self.lifecycle = lifecycle
        # Results (COMPLETED/FAILED events) recently written to the stream, by task id.
        self._sent: OrderedDict[int, tuple[float, pb.TaskEvent]] = OrderedDict()
        self._stop_deadline: float | None = None
        self._handed_back = 0

    @property
    def name(self) -> str:
        return self.identity.name

    async def run(self) -> None:
        """Keeps a stream up (reconnecting, replica after replica) until drained."""
        life = self.lifecycle
        delay = 0.1
        settings = self.settings
        addresses = settings.addresses or [settings.address]
        turn = 0
        while True:
            address = addresses[turn % len(addresses)]
            channel = open_aio_channel(settings, address)
            registered = asyncio.Event()
            try:
                if await self._session(channel, registered):
                    return
            except AuthenticationError:
                raise
            except grpc.RpcError as exc:
                err = to_stoker_error(exc, address)
                if isinstance(err, AuthenticationError):
                    raise err from None
                log.warning(
                    "worker %s: stream to the engine at %s lost (%s); reconnecting",
                    self.name,
                    address,
                    err,
                )
            except ConnectionError as exc:
                log.warning("worker %s: %s (%s); reconnecting", self.name, exc, address)
            finally:
                life.connected.clear()
                await channel.close()
            if life.stopping.is_set() and (
                life.force.is_set() or not (self.runtime.running or self.outbox.events)
            ):
                # Stopping with nothing left to report, or told to stop now while no engine
                # answers (then the dead-worker timeout requeues what it held).
                return
            # A stream that was up broke: try again at once, on the next replica if any.
            # Otherwise back off, once per round over every address.
            turn += 1
            if registered.is_set():
                delay = 0.1
            elif turn % len(addresses) == 0:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _registration(self) -> pb.WorkerMessage:
        me = self.identity
        running = self.runtime.running_refs()
        # Results sent on the last stream just before it broke may be lost with it: send
        # them again (duplicates are ignored). Claim as finished every attempt whose result
        # is about to go out, so the engine keeps them instead of requeueing them as lost.
        cutoff = time.monotonic() - RESEND_WINDOW_S
        resend = [ev for at, ev in self._sent.values() if at >= cutoff]
        self._sent.clear()
        if resend:
            self.outbox.events[:0] = resend
        running += [
            pb.TaskRef(task_id=ev.task_id, attempt=ev.attempt, finished=True)
            for ev in self.outbox.events
            if ev.kind in (pb.COMPLETED, pb.FAILED)
        ]
        return pb.WorkerMessage(
            register=pb.WorkerRegistration(
                worker_id=me.worker_id,
                name=me.name,
                slots=me.slots,
                task_names=me.task_names,
                running=running,
                labels=json.dumps(me.labels()).encode(),
                durable_slots=me.durable_slots,
            )
        )

    async def _session(self, channel: grpc.aio.Channel, registered: asyncio.Event) -> bool:
        """One stream's life; True when the worker finished draining."""
        life, runtime = self.lifecycle, self.runtime
        call = Stubs(channel).engine.Connect(metadata=self.metadata)
        await call.write(self._registration())
        first = await call.read()
        if first is grpc.aio.EOF or first.WhichOneof("msg") != "registered":
            raise ConnectionResetError("the engine closed the stream during registration")
        life.reconnect.clear()
        registered.set()
        life.connected.set()
        runtime.reconnected()
        log.info(
            "worker %s connected (%s, %d slots)",
            self.name,
            self.identity.worker_id,
            self.identity.slots,
        )
        sender = asyncio.create_task(self._send_loop(call))
        reader = asyncio.create_task(self._read_loop(call))
        stopping = asyncio.create_task(life.stopping.wait())
        reconnect = asyncio.create_task(life.reconnect.wait())
        try:
            done, _ = await asyncio.wait(
                {reader, stopping, reconnect, sender}, return_when=asyncio.FIRST_COMPLETED
            )
            if reader in done or sender in done:
                for t in (reader, sender):
                    exc = t.exception() if t.done() else None
                    if isinstance(exc, grpc.RpcError):
                        raise exc
                    if exc is not None:
                        raise ConnectionResetError(f"the stream broke: {exc!r}") from exc
                raise ConnectionResetError("the engine closed the stream")
            if reconnect in done:
                raise ConnectionResetError("the engine no longer knows this worker")
            # Draining: no new work, let running attempts finish and report; durable ones
            # blocked on their waits are evicted (they go on elsewhere once woken).
            await call.write(pb.WorkerMessage(draining=pb.Draining()))
            runtime.evictor.stopping = True
            runtime.evictor.poke()
            if self._stop_deadline is None:
                self._stop_deadline = time.monotonic() + self.identity.grace
                if runtime.running and not life.force.is_set():
                    log.warning(
                        "worker %s: stopping; waiting up to %gs for %d running task(s) to "
                        "finish: %s (stop again, e.g. Ctrl-C, to hand them back now)",
                        self.name,
                        self.identity.grace,
                        len(runtime.running),
                        runtime.describe(runtime.running.values()),
                    )
            await self._drain(
                lambda: bool(runtime.running) and not reader.done() and not life.force.is_set(),
                self._stop_deadline - time.monotonic(),
            )
            if reader.done():
                raise ConnectionResetError("the stream broke while draining")
            self._hand_back()
            outbox = self.outbox
            await self._drain(lambda: bool(outbox.events) and not sender.done(), 5)
            if sender.done():
                raise ConnectionResetError("the stream broke while reporting")
            # A clean close: the engine requeues at once whatever this worker still held.
            # Wait for it to end the stream, proof it read the goodbye.
            await call.write(pb.WorkerMessage(goodbye=pb.Goodbye()))
            await call.done_writing()
            await asyncio.wait({reader}, timeout=5)
            if self._handed_back:
                log.warning(
                    "worker %s: handed back %d task(s) to run again elsewhere",
                    self.name,
                    self._handed_back,
                )
            return True
        finally:
            helpers: list[asyncio.Task[Any]] = [sender, reader, stopping, reconnect]
            for t in helpers:
                t.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            call.cancel()

    def _hand_back(self) -> None:
        """Cancels what still runs; the clean close that follows hands it back."""
        runtime = self.runtime
        if not runtime.running:
            return
        log.warning(
            "worker %s: handing back %d unfinished task(s) to the engine: %s",
            self.name,
            len(runtime.running),
            runtime.describe(runtime.running.values()),
        )
        left = runtime.hand_back("the worker is stopping; handed back")
        self._handed_back += len(left)

    async def _drain(self, busy: Callable[[], bool], timeout: float) -> None:
        """Waits (up to ``timeout``) until ``busy()`` turns false; re-checked on every change."""
        changed = self.lifecycle.changed
        deadline = time.monotonic() + timeout
        while busy() and (left := deadline - time.monotonic()) > 0:
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=left)

    async def _send_loop(self, call: Any) -> None:
        outbox = self.outbox
        shipping = outbox.shipping
        limit = message_limit(self.runtime.max_payload_bytes)
        while True:
            # Events left over from a stream that broke go out at once on this one. Log
            # lines wait for the next event or for SHIP_EVERY_S (batches, off the tasks'
            # path); stream chunks wake this loop at once.
            if not outbox.events and not outbox.control and not (shipping and shipping.chunks):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        outbox.wake.wait(),
                        timeout=SHIP_EVERY_S if shipping and shipping.lines else None,
                    )
            outbox.wake.clear()
            while outbox.control:
                await call.write(outbox.control.pop(0))
            if shipping:
                await self._ship(call, shipping, limit)
            while outbox.events:
                if shipping:
                    # Lines logged before these events were queued go first: the engine
                    # takes an attempt's lines only while it still holds the attempt.
                    await self._ship(call, shipping, limit)
                # As many events as fit one message of the engine's size limit.
                batch = split_batches(outbox.events[:500], limit, 500)[0]
                await call.write(pb.WorkerMessage(events=pb.TaskEvents(events=batch)))
                del outbox.events[: len(batch)]
                self._remember_sent(batch)
            self.lifecycle.changed.set()

    async def _ship(self, call: Any, shipping: Shipping, limit: int) -> None:
        """Sends the waiting stream chunks, then the log lines, in batches that fit."""
        chunks, lines = shipping.take()
        try:
            while chunks:
                batch = split_batches(chunks[:500], limit, 500)[0]
                await call.write(pb.WorkerMessage(stream=opb.StreamPuts(chunks=batch)))
                del chunks[: len(batch)]
            while lines:
                batch_lines = split_batches(lines[:200], limit, 200)[0]
                await call.write(pb.WorkerMessage(logs=opb.LogLines(attempts=batch_lines)))
                del lines[: len(batch_lines)]
        except BaseException:
            shipping.give_back(chunks, lines)  # the next stream sends them
            raise

    def _remember_sent(self, batch: list[pb.TaskEvent]) -> None:
        now = time.monotonic()
        sent = self._sent
        for ev in batch:
            if ev.kind in (pb.COMPLETED, pb.FAILED):
                sent[ev.task_id] = (now, ev)
                sent.move_to_end(ev.task_id)
        # Oldest first: forget what fell out of the window.
        cutoff = now - RESEND_WINDOW_S
        while sent and next(iter(sent.values()))[0] < cutoff:
            sent.popitem(last=False)

    async def _read_loop(self, call: Any) -> None:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                return
            kind = msg.WhichOneof("msg")
            if kind == "assignments":
                for a in msg.assignments.items:
                    self.runtime.begin(a)
            elif kind == "cancellations":
                for c in msg.cancellations.items:
                    self.runtime.cancel(c.task_id, c.attempt, c.reason)
            elif kind == "durable":
                self.runtime.durable_reply(msg.durable)
            elif kind == "durable_wakes":
                self.runtime.durable_wakes(msg.durable_wakes.items)
