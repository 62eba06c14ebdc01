"""HTTP push workers: endpoints the engine POSTs attempts to (docs/http-workers.md).

An endpoint is a worker to the rest of the engine. :class:`PushDelivery`, on the leader,
attaches every registered endpoint to the dispatcher through the very path a worker's
stream takes (:meth:`Dispatcher.connect <stoker.engine.dispatcher.Dispatcher.connect>`):
a registration with the endpoint's id, slots and task names, then the task events its
HTTP answers become. So the scheduler places attempts on an endpoint as on any worker
(slots, labels, slot cost), the dispatcher holds its attempts and checks every event
against them, and retries, execution timeouts (the leader's timeouts loop), cancellation
and dead-worker requeues are the same code as for stream workers.

What comes out of the dispatcher for the endpoint is turned into HTTP:

* an assignment becomes a signed POST of the attempt to ``<url>/run`` (``STARTED`` is
  reported as it is sent). ``200`` ends the attempt with the response body as its output;
  ``202`` means the endpoint runs it in the background and reports its end later through
  ``ReportPushEvents``; any other answer, or no answer, fails the attempt (retryable unless
  the endpoint's error document says otherwise);
* a cancellation stops the delivery (its answer is no longer awaited) and is POSTed, best
  effort, to ``<url>/cancel``. The attempt is ended by the engine either way.

:class:`PushEndpoints` registers endpoints; their secrets are sealed like webhook secrets
(:class:`~stoker.engine.webhooks.secrets.SecretBox`, bound to the endpoint's id).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from stoker._core.push import CANCEL_PATH, MIN_SECRET_CHARS, RUN_PATH, signed_headers
from stoker._core.wire import storable_text
from stoker._proto import engine_pb2 as pb
from stoker.db import Executor, NoParams
from stoker.db.store import push as push_store
from stoker.engine.controllers.leadership import Leadership
from stoker.engine.dispatcher import Dispatcher
from stoker.engine.service import LoopService
from stoker.engine.webhooks.secrets import SecretBox
from stoker.errors import ConfigError, InvalidRequestError

log = logging.getLogger("stoker.engine.push")

CANCEL_TIMEOUT_S = 5.0
"""How long a best-effort cancellation POST may take."""

CONNECT_TIMEOUT_S = 10.0
DELIVERY_GRACE_S = 5.0
"""A delivery waits for its answer this long past the attempt's execution timeout (the
engine's own timeout ends the attempt before that)."""


class PushEndpoints:
    """Registers, lists and deletes a tenant's endpoints (the ``Push`` service)."""

    def __init__(self, db: Executor, box: SecretBox, on_changed: Callable[[], None]) -> None:
        self._db = db
        self._box = box
        self._on_changed = on_changed

    async def register(
        self, tenant_id: int, name: str, url: str, slots: int, task_names: list[str], secret: str
    ) -> push_store.PushEndpointRow:
        """Creates or updates the endpoint ``name``."""
        if not name:
            raise InvalidRequestError("a push endpoint needs a name")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidRequestError(f"push endpoint url {url!r} is not an http(s) URL")
        if slots <= 0:
            raise InvalidRequestError("a push endpoint needs at least one slot")
        if not task_names:
            raise InvalidRequestError(f"push endpoint {name!r} serves no task")
        if len(secret) < MIN_SECRET_CHARS:
            raise InvalidRequestError(
                f"the secret of push endpoint {name!r} must be at least {MIN_SECRET_CHARS} "
                "characters long"
            )
        key = push_store.PushEndpointName(tenant_id, name)
        known = await push_store.push_endpoint_id(self._db, key)
        external_id = known["external_id"] if known else uuid.uuid4()
        row = await push_store.upsert_push_endpoint(
            self._db,
            push_store.UpsertPushEndpoint(
                tenant_id,
                external_id,
                name,
                url.rstrip("/"),
                slots,
                sorted(set(task_names)),
                self._box.seal(secret, external_id),
            ),
        )
        assert row is not None
        self._on_changed()
        return row

    async def rekey(self) -> int:
        """Re-encrypts under the current key the secrets an old key sealed; how many (as
        :meth:`Webhooks.rekey <stoker.engine.webhooks.Webhooks.rekey>`, at start)."""
        done = 0
        for row in await push_store.all_push_endpoints(self._db, NoParams()):
            if self._box.stale(row["secret"]):
                secret = self._box.open(row["secret"], row["external_id"])
                sealed = self._box.seal(secret, row["external_id"])
                await push_store.set_push_endpoint_secret(
                    self._db, push_store.SetPushEndpointSecret(row["external_id"], sealed)
                )
                done += 1
        if done:
            log.info("re-encrypted %d push endpoint secrets under the current key", done)
        return done

    async def list(self, tenant_id: int) -> list[push_store.PushEndpointRow]:
        return await push_store.list_push_endpoints(
            self._db, push_store.ListPushEndpoints(tenant_id)
        )

    async def delete(self, tenant_id: int, name: str) -> bool:
        row = await push_store.delete_push_endpoint(
            self._db, push_store.PushEndpointName(tenant_id, name)
        )
        self._on_changed()
        return row is not None


@dataclass(eq=False)
class _Link:
    """One endpoint attached to the dispatcher: its (virtual) stream and deliveries."""

    tenant_id: int
    external_id: uuid.UUID
    name: str
    url: str
    slots: int
    task_names: list[str]
    secret: str
    updated_at: datetime
    messages: asyncio.Queue[pb.WorkerMessage | None] = field(default_factory=asyncio.Queue)
    stream: asyncio.Task[None] | None = None
    registered: bool = False
    """The current stream's registration was answered (heartbeats count from then)."""
    # Deliveries in flight, by task id: (attempt, slot cost, the POST's task).
    inflight: dict[int, tuple[int, int, asyncio.Task[None]]] = field(default_factory=dict)
    # Attempts answered with 202, by task id: their end comes through ReportPushEvents.
    accepted: dict[int, tuple[int, int]] = field(default_factory=dict)

    def events(self, *events: pb.TaskEvent) -> None:
        self.messages.put_nowait(pb.WorkerMessage(events=pb.TaskEvents(events=events)))

    def running(self) -> list[pb.TaskRef]:
        """What a re-registration reports: the deliveries in flight and the accepted."""
        held = {t: (a, c) for t, (a, c, _) in self.inflight.items()} | self.accepted
        return [pb.TaskRef(task_id=t, attempt=a, slot_cost=c) for t, (a, c) in held.items()]


class PushDelivery(LoopService):
    """On the leader: keeps every endpoint attached to the dispatcher and delivers to it."""

    name = "push"

    def __init__(
        self,
        db: Executor,
        dispatcher: Dispatcher,
        leadership: Leadership,
        box: SecretBox,
        *,
        interval_s: float,
    ) -> None:
        super().__init__()
        self._db = db
        self._dispatcher = dispatcher
        self._leadership = leadership
        self._box = box
        self._interval = interval_s
        self._links: dict[uuid.UUID, _Link] = {}
        self._changed = self.signal()
        self._client: httpx.AsyncClient | None = None
        self._cancels: set[asyncio.Task[None]] = set()
        # One log line per delivery would be the engine's loudest log by far.
        logging.getLogger("httpx").setLevel(logging.WARNING)

    def changed(self) -> None:
        """Endpoints were registered or deleted: look again now."""
        self._changed.set()

    def link(self, tenant_id: int, name: str) -> _Link | None:
        """The endpoint ``name`` of a tenant when it is attached here."""
        for link in self._links.values():
            if link.tenant_id == tenant_id and link.name == name:
                return link
        return None

    async def run(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
        )
        try:
            while not self.stopping.is_set():
                if self._leadership.is_leader:
                    await self._sync()
                    await self._heartbeat()
                elif self._links:
                    log.info("not the leader: detaching %d push endpoints", len(self._links))
                    for link in list(self._links.values()):
                        await self._detach(link, cleanly=False)
                await self._changed.wait(self._interval)
        finally:
            for link in list(self._links.values()):
                await self._detach(link, cleanly=True)
            if self._cancels:
                await asyncio.wait(self._cancels, timeout=CANCEL_TIMEOUT_S)
            await self._client.aclose()

    async def _sync(self) -> None:
        rows = await push_store.all_push_endpoints(self._db, NoParams())
        seen = set()
        for row in rows:
            seen.add(row["external_id"])
            link = self._links.get(row["external_id"])
            if link is not None and link.updated_at == row["updated_at"]:
                continue
            try:
                secret = self._box.open(row["secret"], row["external_id"])
            except ConfigError as exc:
                log.error("push endpoint %s cannot be attached: %s", row["name"], exc)
                continue
            if link is None:
                link = _Link(
                    row["tenant_id"],
                    row["external_id"],
                    row["name"],
                    row["url"],
                    row["slots"],
                    list(row["task_names"]),
                    secret,
                    row["updated_at"],
                )
                self._links[link.external_id] = link
            else:
                link.url, link.slots, link.task_names = row["url"], row["slots"], row["task_names"]
                link.secret, link.updated_at = secret, row["updated_at"]
            self._connect(link)
        for external_id in list(self._links):
            if external_id not in seen:
                await self._detach(self._links[external_id], cleanly=True)

    async def _heartbeat(self) -> None:
        for link in list(self._links.values()):
            if link.stream is None or link.stream.done():
                # Its stream ended (the dispatcher dropped it): attach it again.
                log.info("push endpoint %s lost its stream; attaching it again", link.name)
                self._connect(link)
            elif not link.registered:
                continue  # not registered yet: its worker row may not be there yet
            else:
                # A drain request does not apply to an endpoint (unregistering stops it).
                known, _drain = await self._dispatcher.heartbeat(link.tenant_id, link.external_id)
                if not known:
                    # Declared dead (this replica was away): register again, as a worker
                    # would.
                    log.info("push endpoint %s was declared dead; attaching it again", link.name)
                    self._connect(link)

    def _connect(self, link: _Link) -> None:
        """(Re-)registers ``link`` with the dispatcher: a new virtual stream that reports
        what the link still runs, as a reconnecting worker does."""
        # Events not read yet by the old stream go on the new one, after the registration,
        # which claims their attempts (no slot: they are ending), so none is lost.
        pending: list[pb.WorkerMessage] = []
        if link.stream is not None:
            old = link.messages
            while not old.empty():
                msg = old.get_nowait()
                if msg is not None and msg.WhichOneof("msg") == "events":
                    pending.append(msg)
            old.put_nowait(None)  # the old stream ends (not cleanly)
        running = link.running()
        held = {r.task_id for r in running}
        for msg in pending:
            for ev in msg.events.events:
                if ev.kind in (pb.COMPLETED, pb.FAILED) and ev.task_id not in held:
                    held.add(ev.task_id)
                    running.append(
                        pb.TaskRef(task_id=ev.task_id, attempt=ev.attempt, finished=True)
                    )
        link.messages = asyncio.Queue()
        link.registered = False
        link.messages.put_nowait(
            pb.WorkerMessage(
                register=pb.WorkerRegistration(
                    worker_id=str(link.external_id),
                    name=f"push:{link.name}",
                    slots=link.slots,
                    task_names=link.task_names,
                    running=running,
                )
            )
        )
        for msg in pending:
            link.messages.put_nowait(msg)
        link.stream = asyncio.create_task(
            self._stream(link, link.messages), name=f"stoker-push-{link.name}"
        )

    async def _detach(self, link: _Link, *, cleanly: bool) -> None:
        """Ends ``link``'s stream: cleanly (its attempts are handed back and requeued at
        once) or as a lost connection (they wait for a new leader to attach it again)."""
        self._links.pop(link.external_id, None)
        for _, _, task in list(link.inflight.values()):
            task.cancel()
        if cleanly:
            link.messages.put_nowait(pb.WorkerMessage(goodbye=pb.Goodbye()))
        link.messages.put_nowait(None)
        if link.stream is not None:
            await asyncio.gather(link.stream, return_exceptions=True)

    async def _stream(self, link: _Link, queue: asyncio.Queue[pb.WorkerMessage | None]) -> None:
        async def messages() -> AsyncIterator[pb.WorkerMessage]:
            while (msg := await queue.get()) is not None:
                yield msg

        try:
            async for msg in self._dispatcher.connect(link.tenant_id, messages()):
                kind = msg.WhichOneof("msg")
                if kind == "registered" and queue is link.messages:
                    link.registered = True
                elif kind == "assignments":
                    for a in msg.assignments.items:
                        self._start(link, a)
                elif kind == "cancellations":
                    for c in msg.cancellations.items:
                        self._cancel(link, c)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("push endpoint %s: its stream failed", link.name)

    def _start(self, link: _Link, a: pb.Assignment) -> None:
        if a.task_id in link.inflight or a.task_id in link.accepted:
            return
        task = asyncio.create_task(self._deliver(link, a), name=f"stoker-push-{a.run_id}")
        link.inflight[a.task_id] = (a.attempt, a.slot_cost, task)

    def _cancel(self, link: _Link, c: pb.Cancellation) -> None:
        held = link.inflight.get(c.task_id)
        if held is not None and held[0] == c.attempt:
            del link.inflight[c.task_id]
            held[2].cancel()
        accepted = link.accepted.get(c.task_id)
        if accepted is not None and accepted[0] == c.attempt:
            del link.accepted[c.task_id]
        body = json.dumps({"task_id": c.task_id, "attempt": c.attempt, "reason": c.reason}).encode()
        post = asyncio.create_task(self._post_cancel(link, body), name="stoker-push-cancel")
        self._cancels.add(post)
        post.add_done_callback(self._cancels.discard)

    def reported(self, link: _Link, events: list[pb.TaskEvent]) -> None:
        """Events the endpoint reported through ``ReportPushEvents``."""
        for ev in events:
            if ev.kind in (pb.COMPLETED, pb.FAILED):
                held = link.accepted.get(ev.task_id)
                if held is not None and held[0] == ev.attempt:
                    del link.accepted[ev.task_id]
        link.events(*events)

    async def _post_cancel(self, link: _Link, body: bytes) -> None:
        assert self._client is not None
        try:
            await self._client.post(
                link.url + CANCEL_PATH,
                content=body,
                headers=_headers(link, body),
                timeout=CANCEL_TIMEOUT_S,
            )
        except Exception as exc:
            log.info("push endpoint %s: the cancellation POST failed: %s", link.name, exc)

    async def _deliver(self, link: _Link, a: pb.Assignment) -> None:
        assert self._client is not None
        body = delivery_body(a)
        link.events(pb.TaskEvent(task_id=a.task_id, attempt=a.attempt, kind=pb.STARTED))
        timeout = (
            a.execution_timeout_ms / 1000 + DELIVERY_GRACE_S if a.execution_timeout_ms else None
        )
        event: pb.TaskEvent | None
        # A refused connection sent nothing, so the POST is tried again for up to
        # CONNECT_TIMEOUT_S (an endpoint registers from its server's start-up, which can be
        # a moment before the server accepts connections); any other failure, once
        # something may have reached the endpoint, fails the attempt.
        give_up = time.monotonic() + CONNECT_TIMEOUT_S
        pause = 0.05
        while True:
            try:
                resp = await self._client.post(
                    link.url + RUN_PATH,
                    content=body,
                    headers=_headers(link, body),
                    timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT_S),
                )
            except httpx.ConnectError as exc:
                held = link.inflight.get(a.task_id)
                if time.monotonic() < give_up and held is not None and held[0] == a.attempt:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, 1.0)
                    continue
                event = _failed(
                    a, "PushDeliveryError", f"POST {link.url}{RUN_PATH} failed: {exc!r}"
                )
            except Exception as exc:  # no answer, whatever the reason: the attempt fails
                event = _failed(
                    a, "PushDeliveryError", f"POST {link.url}{RUN_PATH} failed: {exc!r}"
                )
            else:
                event = _answer(link, a, resp)
            break
        held = link.inflight.get(a.task_id)
        if held is None or held[0] != a.attempt:
            return  # cancelled meanwhile
        del link.inflight[a.task_id]
        if event is None:
            link.accepted[a.task_id] = (a.attempt, a.slot_cost)
        else:
            link.events(event)


def delivery_body(a: pb.Assignment) -> bytes:
    """The JSON body of a delivery: the attempt as a worker's assignment carries it."""
    doc: dict[str, Any] = {
        "task_id": a.task_id,
        "attempt": a.attempt,
        "run_id": a.run_id,
        "task_name": a.task_name,
        "input": json.loads(a.input or b"null"),
        "additional_metadata": json.loads(a.additional_metadata or b"{}"),
        "retry_count": a.retry_count,
        "max_attempts": a.max_attempts,
        "execution_timeout_ms": a.execution_timeout_ms,
        "slot_cost": a.slot_cost,
        "parent_run_id": a.parent_run_id,
        "child_index": a.child_index,
        "child_key": a.child_key,
        "workflow_run_id": a.workflow_run_id,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _headers(link: _Link, body: bytes) -> dict[str, str]:
    return {"content-type": "application/json", "stoker-endpoint": link.name} | signed_headers(
        link.secret, body
    )


def _answer(link: _Link, a: pb.Assignment, resp: httpx.Response) -> pb.TaskEvent | None:
    """The event an endpoint's answer makes (None: 202, the end is reported later)."""
    if resp.status_code == 200:
        return pb.TaskEvent(
            task_id=a.task_id, attempt=a.attempt, kind=pb.COMPLETED, output=resp.content or b"null"
        )
    if resp.status_code == 202:
        return None
    try:
        doc = resp.json()
        error = doc["error"]
        return _failed(
            a,
            str(error.get("type") or "TaskError"),
            str(error.get("message") or ""),
            str(error.get("traceback") or ""),
            retryable=bool(doc.get("retryable", True)),
            retry_after_ms=int(doc.get("retry_after_ms") or 0),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return _failed(
            a,
            "PushDeliveryError",
            f"push endpoint {link.name} answered HTTP {resp.status_code}: "
            + storable_text(resp.text[:500]),
        )


def _failed(
    a: pb.Assignment,
    error_type: str,
    message: str,
    tb: str = "",
    *,
    retryable: bool = True,
    retry_after_ms: int = 0,
) -> pb.TaskEvent:
    return pb.TaskEvent(
        task_id=a.task_id,
        attempt=a.attempt,
        kind=pb.FAILED,
        error=pb.RunError(type=error_type, message=message, traceback=tb),
        non_retryable=not retryable,
        retry_after_ms=retry_after_ms,
    )


__all__ = ["PushDelivery", "PushEndpoints", "delivery_body"]
