"""``app.runs`` (cancel, replay), ``app.events`` (push) and child spawning.

These talk to the engine's ``Workflows`` gRPC service over channels of their own, with the
same retries and error mapping as every other call (:class:`~stoker._sdk.transport.Transport`).

Child runs: a task run started from inside a running task (``await child.aio_run(x)``,
``run``, ``run_no_wait``, ``run_many``) is a *child* of that task. The worker runtime sets
the running task's :class:`~stoker.Context` in a contextvar, so the ordinary SDK calls know
their parent. Each spawn takes the next child index of the attempt (``run_many`` takes one
per input, in order), so a retried parent that spawns the same way gets its existing
children back, finished or not; ``child_key`` names a child explicitly instead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import grpc

from stoker._core.wire import checked_json, encode_json, message_limit, split_batches
from stoker._proto import workflows_pb2 as wpb
from stoker._proto import workflows_pb2_grpc as wpb_grpc
from stoker._sdk.context import Context
from stoker._sdk.transport import open_aio_channel, open_channel
from stoker.errors import NotFoundError

if TYPE_CHECKING:
    from stoker._sdk.client import Stoker
    from stoker._sdk.task import RunRef

log = logging.getLogger("stoker.worker")


class WorkflowsClient:
    """Stubs of the ``Workflows`` service: one sync channel, one asyncio channel per loop."""

    def __init__(self, app: Stoker) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._sync: wpb_grpc.WorkflowsStub | None = None
        self._channel: grpc.Channel | None = None
        self._aio: dict[asyncio.AbstractEventLoop, wpb_grpc.WorkflowsStub] = {}
        self._address = ""  # the transport's address the channels were made for

    def _follow_transport(self) -> str:
        """The transport's current address; forgets channels made for another one."""
        address = self._app.transport.address
        if address != self._address:
            self.close()
            self._aio = {}
            self._address = address
        return address

    def stub(self) -> wpb_grpc.WorkflowsStub:
        address = self._follow_transport()
        with self._lock:
            if self._sync is None:
                settings = self._app.settings
                self._channel = open_channel(settings, address)
                self._sync = wpb_grpc.WorkflowsStub(self._channel)
            return self._sync

    def aio_stub(self) -> wpb_grpc.WorkflowsStub:
        address = self._follow_transport()
        loop = asyncio.get_running_loop()
        found = self._aio.get(loop)
        if found is None:
            for old in [lp for lp in self._aio if lp.is_closed()]:
                del self._aio[old]
            settings = self._app.settings
            channel = open_aio_channel(settings, address)
            found = self._aio[loop] = wpb_grpc.WorkflowsStub(channel)
        return found

    def call(self, method: Callable[[wpb_grpc.WorkflowsStub], Any], request: Any) -> Any:
        """A unary call, retried while the engine is unreachable (see Transport.call)."""
        # The stub is taken on every try: a retry may have moved to another address.
        return self._app.transport.call(lambda _: method(self.stub()), request)

    async def acall(self, method: Callable[[wpb_grpc.WorkflowsStub], Any], request: Any) -> Any:
        return await self._app.transport.acall(lambda _: method(self.aio_stub()), request)

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = self._sync = None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What a cancel or replay did to one run.

    ``outcome`` is ``"cancelled"``, ``"replayed"``, ``"already_finished"`` (cancel of a
    finished run: nothing done), ``"completed"`` (replay of a completed run: nothing done),
    ``"not_finished"`` (replay of a running run) or ``"not_found"``.
    """

    run_id: str
    outcome: str
    status: str
    message: str


def _outcomes(resp: Any) -> list[RunOutcome]:
    return [RunOutcome(o.run_id, o.outcome, o.status, o.message) for o in resp.outcomes]


def _filter(
    workflow: str | Sequence[str] | None,
    status: str | Sequence[str] | None,
    since: datetime | None,
    until: datetime | None,
    additional_metadata: Mapping[str, Any] | None,
) -> wpb.RunFilter:
    def names(v: str | Sequence[str] | None) -> list[str]:
        if v is None:
            return []
        return [v] if isinstance(v, str) else list(v)

    def ms(at: datetime | None) -> int:
        return int(at.timestamp() * 1000) if at else 0

    return wpb.RunFilter(
        names=names(workflow),
        statuses=[s.upper() for s in names(status)],
        since_ms=ms(since),
        until_ms=ms(until),
        additional_metadata=encode_json(dict(additional_metadata), "filter additional_metadata")
        if additional_metadata
        else b"",
    )


def _single(outcomes: list[RunOutcome], run_id: str) -> RunOutcome:
    if not outcomes:
        raise NotFoundError(f"no run with id {run_id}")
    o = outcomes[0]
    if o.outcome == "not_found":
        raise NotFoundError(o.message or f"no run with id {run_id}")
    return o


class Runs:
    """Cancel and replay runs: ``app.runs.cancel(run_id)``, ``app.runs.replay(run_id)``.

    A run id is a workflow run's or a single task run's. Bulk forms take ids, or a filter
    (workflow/task names, statuses, creation time range, additional metadata that the
    runs' metadata must contain).
    """

    def __init__(self, app: Stoker) -> None:
        self._app = app

    def _client(self) -> WorkflowsClient:
        return self._app._workflows_client()

    def cancel(self, run_id: str | RunRef[Any], reason: str = "") -> RunOutcome:
        """Cancels a run, its queued and running tasks and its child runs.

        NotFoundError for an unknown id; a finished run is left alone and the outcome says
        so (``outcome == "already_finished"``).
        """
        rid = run_id if isinstance(run_id, str) else run_id.run_id
        req = wpb.CancelRunsRequest(run_ids=[rid], reason=reason)
        return _single(_outcomes(self._client().call(lambda s: s.CancelRuns, req)), rid)

    async def aio_cancel(self, run_id: str | RunRef[Any], reason: str = "") -> RunOutcome:
        rid = run_id if isinstance(run_id, str) else run_id.run_id
        req = wpb.CancelRunsRequest(run_ids=[rid], reason=reason)
        return _single(_outcomes(await self._client().acall(lambda s: s.CancelRuns, req)), rid)

    def bulk_cancel(
        self,
        run_ids: Sequence[str] | None = None,
        *,
        workflow: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
        reason: str = "",
    ) -> list[RunOutcome]:
        """Cancels runs by id, or every run matching the filter (at most 10,000 a call)."""
        req = wpb.CancelRunsRequest(run_ids=list(run_ids or []), reason=reason)
        if not run_ids:
            req.filter.CopyFrom(_filter(workflow, status, since, until, additional_metadata))
        return _outcomes(self._client().call(lambda s: s.CancelRuns, req))

    def replay(self, run_id: str | RunRef[Any]) -> RunOutcome:
        """Re-runs a finished run from its failed or cancelled tasks, with the same input;
        tasks that succeeded keep their outputs. NotFoundError for an unknown id."""
        rid = run_id if isinstance(run_id, str) else run_id.run_id
        req = wpb.ReplayRunsRequest(run_ids=[rid])
        return _single(_outcomes(self._client().call(lambda s: s.ReplayRuns, req)), rid)

    async def aio_replay(self, run_id: str | RunRef[Any]) -> RunOutcome:
        rid = run_id if isinstance(run_id, str) else run_id.run_id
        req = wpb.ReplayRunsRequest(run_ids=[rid])
        return _single(_outcomes(await self._client().acall(lambda s: s.ReplayRuns, req)), rid)

    def bulk_replay(
        self,
        run_ids: Sequence[str] | None = None,
        *,
        workflow: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
    ) -> list[RunOutcome]:
        """Replays runs by id, or every finished run matching the filter."""
        req = wpb.ReplayRunsRequest(run_ids=list(run_ids or []))
        if not run_ids:
            req.filter.CopyFrom(_filter(workflow, status, since, until, additional_metadata))
        return _outcomes(self._client().call(lambda s: s.ReplayRuns, req))


class Events:
    """User events: ``app.events.push("payment:settled", {"order_id": 7})``."""

    def __init__(self, app: Stoker) -> None:
        self._app = app

    @staticmethod
    def _request(
        key: str, payload: Any, scope: str | None, additional_metadata: Mapping[str, Any] | None
    ) -> wpb.PushEventsRequest:
        if not key:
            raise ValueError("an event needs a key")
        import pydantic_core

        return wpb.PushEventsRequest(
            events=[
                wpb.UserEvent(
                    key=key,
                    payload=checked_json(pydantic_core.to_json(payload), f"event {key!r}: payload"),
                    additional_metadata=encode_json(
                        dict(additional_metadata or {}), f"event {key!r}: additional_metadata"
                    ),
                    scope=scope or "",
                )
            ],
            request_key=request_key(),
        )

    def push(
        self,
        key: str,
        payload: Any = None,
        *,
        scope: str | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Pushes an event; returns how many waiting conditions it satisfied.

        ``scope``: a workflow run id; only that run's conditions can match the event.
        """
        req = self._request(key, payload, scope, additional_metadata)
        resp = self._app._workflows_client().call(lambda s: s.PushEvents, req)
        return int(resp.satisfied)

    async def aio_push(
        self,
        key: str,
        payload: Any = None,
        *,
        scope: str | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
    ) -> int:
        req = self._request(key, payload, scope, additional_metadata)
        resp = await self._app._workflows_client().acall(lambda s: s.PushEvents, req)
        return int(resp.satisfied)


def request_key() -> str:
    """A new idempotency key for one trigger call. It goes in the request message, which
    the transport's retry loop resends as is, so every retry of the call carries the same
    key and the engine answers a retry with the runs of the first attempt
    (docs/idempotency.md)."""
    return uuid.uuid4().hex


# -- child runs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One child to spawn: a task or a workflow (by name), its JSON input and options."""

    task_name: str
    workflow_name: str
    input: bytes
    options: Mapping[str, Any]


def _spawn_requests(
    app: Stoker, ctx: Context, children: Sequence[ChildSpec]
) -> list[wpb.SpawnChildrenRequest]:
    """The children in requests that fit the engine's message limit (their child indexes
    are taken up front, so a retried parent finds the same children however they were
    split)."""
    items = _spawn_request(ctx, children).items
    limit = message_limit(app.max_payload_bytes)
    return [
        wpb.SpawnChildrenRequest(
            parent_task_id=ctx.task_id,
            parent_attempt=ctx.attempt,
            items=batch,
            request_key=request_key(),
        )
        for batch in split_batches(list(items), limit, len(items) or 1)
    ]


def _spawn_request(ctx: Context, children: Sequence[ChildSpec]) -> wpb.SpawnChildrenRequest:
    items = []
    first = ctx._take_child_indexes(len(children))
    for n, child in enumerate(children):
        metadata = {**ctx.additional_metadata, **(child.options.get("additional_metadata") or {})}
        items.append(
            wpb.ChildSpawn(
                task_name=child.task_name,
                workflow_name=child.workflow_name,
                input=child.input,
                additional_metadata=encode_json(
                    metadata, f"child {child.task_name or child.workflow_name!r}: metadata"
                ),
                priority=int(child.options.get("priority") or 0),
                child_index=first + n,
                child_key=str(child.options.get("child_key") or ""),
            )
        )
    return wpb.SpawnChildrenRequest(
        parent_task_id=ctx.task_id, parent_attempt=ctx.attempt, items=items
    )


def spawn(app: Stoker, ctx: Context, children: Sequence[ChildSpec]) -> list[str]:
    """Creates children of the running task ``ctx`` (a blocking call); their run ids."""
    ids: list[str] = []
    for req in _spawn_requests(app, ctx, children):
        ids += app._workflows_client().call(lambda s: s.SpawnChildren, req).run_ids
    return ids


async def aio_spawn(app: Stoker, ctx: Context, children: Sequence[ChildSpec]) -> list[str]:
    ids: list[str] = []
    for req in _spawn_requests(app, ctx, children):
        resp = await app._workflows_client().acall(lambda s: s.SpawnChildren, req)
        ids += resp.run_ids
    return ids


__all__ = ["Events", "RunOutcome", "Runs"]
