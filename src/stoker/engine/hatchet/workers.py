"""Hatchet's ``Dispatcher`` service mapped onto Stoker's dispatcher.

A Hatchet worker registers (``Register``: its actions, slots and labels), then opens its
action listener (``ListenV2``), heartbeats, and reports each step's events
(``SendStepActionEvent``) on separate unary calls. Stoker's dispatcher runs one
bidirectional stream per worker instead, so each registration here becomes a
:class:`HatchetWorker` whose listener *is* a Stoker worker stream: the listener call feeds
:meth:`Dispatcher.connect <stoker.engine.dispatcher.Dispatcher.connect>` a registration
followed by the worker's events (queued by ``SendStepActionEvent``), and turns the
assignments and cancellations it yields into Hatchet ``AssignedAction`` messages. Slots,
placement, trust checks, batching of results, retries and liveness are therefore the
dispatcher's, exactly as for a Stoker worker.

The listener reconnects often (the SDK ends it on a timeout); each new one re-registers the
worker with the attempts it still holds, which the dispatcher keeps, as it keeps those of a
reconnecting Stoker worker. Registrations live on the replica that took them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stoker._proto import engine_pb2 as pb
from stoker.db import Executor
from stoker.engine.dispatcher import Dispatcher
from stoker.engine.hatchet import contracts as hc
from stoker.engine.hatchet.handlers import (
    Caller,
    HatchetAuth,
    HatchetServicer,
    hatchet_rpc,
    hatchet_stream,
)
from stoker.engine.hatchet.runs import error_text, readable_id, run_details
from stoker.engine.runs.watcher import RunWatcher
from stoker.errors import InvalidRequestError, NotFoundError, UnsupportedFeatureError

log = logging.getLogger("stoker.engine.hatchet")

ENGINE_VERSION = "v0.78.23"
"""The Hatchet engine version the front door reports: the first with per-type slot
configuration (what the SDK 1.4x registers with), and below the versions that turn on
features it does not carry (durable eviction, batches, retry-after)."""


@dataclass(eq=False)
class HatchetWorker:
    """One registered Hatchet worker on this replica."""

    external_id: uuid.UUID
    tenant_id: int
    name: str
    actions: list[str]
    slots: int
    labels: dict[str, str | int]
    # Events for the Stoker stream, in order; None ends the current stream.
    inbox: asyncio.Queue[pb.WorkerMessage | None] = field(default_factory=asyncio.Queue)
    # Attempts assigned and not yet reported finished: run id → (task id, attempt).
    held: dict[str, tuple[int, int]] = field(default_factory=dict)
    # Their execution deadlines as this door last set them (epoch ms; absent: none), for
    # Hatchet's refresh_timeout, which adds to the deadline.
    deadlines: dict[str, int] = field(default_factory=dict)
    listener: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False


def _labels(raw: Any) -> dict[str, str | int]:
    return {k: (v.int_value if v.HasField("int_value") else v.str_value) for k, v in raw.items()}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _at_ms(ts: Any) -> int:
    return int(ts.ToMilliseconds()) if ts is not None and (ts.seconds or ts.nanos) else 0


def parse_error(payload: str) -> pb.RunError:
    """Hatchet's serialized task error (``Type: message``, the trace, then a JSON metadata
    block) as Stoker's run error."""
    text = payload.split("\n\n{", 1)[0]
    head, _, trace = text.partition("\n")
    kind, sep, message = head.partition(": ")
    if not sep:
        kind, message = "HatchetError", head
    return pb.RunError(
        type=kind.replace(":::", ": ") or "HatchetError",
        message=message.replace("\\\n", "\n"),
        traceback=trace,
    )


class DispatcherV0(HatchetServicer):
    """Hatchet's v0 ``Dispatcher``: registration, the action listener, heartbeats, step
    events, unsubscribe and the engine version."""

    def __init__(
        self, auth: HatchetAuth, dispatcher: Dispatcher, db: Executor, watcher: RunWatcher
    ) -> None:
        super().__init__(auth)
        self._dispatcher = dispatcher
        self._db = db
        self._watcher = watcher
        self._workers: dict[uuid.UUID, HatchetWorker] = {}

    def _worker(self, caller: Caller, worker_id: str) -> HatchetWorker:
        try:
            key = uuid.UUID(worker_id)
        except ValueError:
            raise InvalidRequestError(f"worker_id {worker_id!r} is not a UUID") from None
        worker = self._workers.get(key)
        if worker is None or worker.tenant_id != caller.tenant_id:
            raise NotFoundError(
                f"worker {worker_id} is not registered on this engine; register it again"
            )
        return worker

    @hatchet_rpc
    async def GetVersion(self, request: Any, caller: Caller) -> Any:
        return hc.dispatcher.GetVersionResponse(version=ENGINE_VERSION)

    @hatchet_rpc
    async def Register(self, request: Any, caller: Caller) -> Any:
        if request.webhook_id:
            raise UnsupportedFeatureError(
                "Stoker's Hatchet front door does not support webhook workers yet"
            )
        config = dict(request.slot_config)
        if config.get("durable"):
            raise UnsupportedFeatureError(
                "Stoker's Hatchet front door does not support durable tasks (durable slots) yet"
            )
        slots = config.get("default", request.slots)
        if slots <= 0:
            raise InvalidRequestError("a worker needs at least one slot")
        worker = HatchetWorker(
            uuid.uuid4(),
            caller.tenant_id,
            request.worker_name or "hatchet-worker",
            list(request.actions),
            slots,
            _labels(request.labels),
        )
        self._workers[worker.external_id] = worker
        log.info(
            "Hatchet worker %s (%s) registered for %s",
            worker.name,
            worker.external_id,
            ", ".join(worker.actions),
        )
        return hc.dispatcher.WorkerRegisterResponse(
            tenant_id=caller.claims.sub,
            worker_id=str(worker.external_id),
            worker_name=worker.name,
        )

    @hatchet_stream
    async def ListenV2(self, request: Any, caller: Caller) -> AsyncIterator[Any]:
        worker = self._worker(caller, request.worker_id)
        stream = self._dispatcher.connect(caller.tenant_id, self._messages(worker))
        try:
            async for message in stream:
                for action in self._actions(worker, caller, message):
                    yield action
        finally:
            # However the call ends, the Stoker stream ends with it (as a broken stream:
            # the worker keeps its attempts until it listens again or is declared dead).
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _messages(self, worker: HatchetWorker) -> AsyncIterator[pb.WorkerMessage]:
        """What the Stoker stream of one listener call reads: the registration, with the
        attempts the worker still holds, then the events queued for it."""
        yield pb.WorkerMessage(
            register=pb.WorkerRegistration(
                worker_id=str(worker.external_id),
                name=worker.name,
                slots=worker.slots,
                task_names=worker.actions,
                labels=json.dumps(worker.labels).encode(),
                running=[pb.TaskRef(task_id=t, attempt=a) for t, a in worker.held.values()],
            )
        )
        while True:
            message = await worker.inbox.get()
            if message is None:
                return
            if message.WhichOneof("msg") == "events":
                ended = {pb.COMPLETED, pb.FAILED}
                done = {(e.task_id, e.attempt) for e in message.events.events if e.kind in ended}
                for run_id, pair in list(worker.held.items()):
                    if pair in done:
                        del worker.held[run_id]
                        worker.deadlines.pop(run_id, None)
            yield message

    def _actions(
        self, worker: HatchetWorker, caller: Caller, message: pb.EngineMessage
    ) -> list[Any]:
        kind = message.WhichOneof("msg")
        found = []
        if kind == "assignments":
            now = _now_ms()
            for a in message.assignments.items:
                worker.held[a.run_id] = (a.task_id, a.attempt)
                if a.execution_timeout_ms:
                    worker.deadlines[a.run_id] = now + a.execution_timeout_ms
                found.append(self._start(worker, caller, a))
        elif kind == "cancellations":
            by_task = {pair[0]: run_id for run_id, pair in worker.held.items()}
            for c in message.cancellations.items:
                run_id = by_task.get(c.task_id)
                if run_id is None:
                    continue
                del worker.held[run_id]
                worker.deadlines.pop(run_id, None)
                found.append(
                    hc.dispatcher.AssignedAction(
                        tenant_id=caller.claims.sub,
                        workflow_run_id=run_id,
                        job_run_id=run_id,
                        task_run_external_id=run_id,
                        action_type=hc.dispatcher.CANCEL_STEP_RUN,
                        action_payload="",
                    )
                )
        return found

    @staticmethod
    def _start(worker: HatchetWorker, caller: Caller, a: pb.Assignment) -> Any:
        data = json.loads(a.input) if a.input else {}
        if a.workflow_run_id and isinstance(data, dict):
            # A workflow step's input is Stoker's envelope: the run's input and the
            # outputs of its parents by step name, which are the Hatchet task names.
            payload = {
                "input": data.get("input") or {},
                "parents": data.get("parents") or {},
                # What an on_failure task reads (ctx.task_run_errors), by step name.
                "step_run_errors": {
                    step: error_text(error) for step, error in (data.get("errors") or {}).items()
                },
            }
        else:
            payload = {"input": data, "parents": {}}
        workflow = a.task_name.partition(":")[0]
        return hc.dispatcher.AssignedAction(
            tenant_id=caller.claims.sub,
            workflow_run_id=a.workflow_run_id or a.run_id,
            job_id=workflow,
            job_name=workflow,
            job_run_id=a.run_id,
            task_id=a.task_name,
            task_run_external_id=a.run_id,
            action_id=a.task_name,
            action_type=hc.dispatcher.START_STEP_RUN,
            action_payload=json.dumps(payload),
            task_name=readable_id(a.task_name),
            retry_count=a.retry_count,
            additional_metadata=a.additional_metadata.decode() if a.additional_metadata else "",
            child_workflow_index=a.child_index,
            child_workflow_key=a.child_key,
            parent_workflow_run_id=a.parent_run_id,
        )

    @hatchet_rpc
    async def Heartbeat(self, request: Any, caller: Caller) -> Any:
        worker = self._worker(caller, request.worker_id)
        await self._dispatcher.heartbeat(caller.tenant_id, worker.external_id)
        return hc.dispatcher.HeartbeatResponse()

    @hatchet_rpc
    async def SendStepActionEvent(self, request: Any, caller: Caller) -> Any:
        worker = self._worker(caller, request.worker_id)
        pair = worker.held.get(request.task_run_external_id)
        if pair is not None:
            event = pb.TaskEvent(
                task_id=pair[0], attempt=pair[1], at_ms=_at_ms(request.event_timestamp)
            )
            kind = request.event_type
            if kind == hc.dispatcher.STEP_EVENT_TYPE_STARTED:
                event.kind = pb.STARTED
            elif kind == hc.dispatcher.STEP_EVENT_TYPE_COMPLETED:
                event.kind = pb.COMPLETED
                event.output = (request.event_payload or "null").encode()
            elif kind == hc.dispatcher.STEP_EVENT_TYPE_FAILED:
                event.kind = pb.FAILED
                event.error.CopyFrom(parse_error(request.event_payload))
                event.non_retryable = request.should_not_retry
                if request.HasField("retry_after_ms"):
                    event.retry_after_ms = request.retry_after_ms
            else:
                event.kind = pb.EVENT_KIND_UNSPECIFIED
            if event.kind != pb.EVENT_KIND_UNSPECIFIED:
                worker.inbox.put_nowait(pb.WorkerMessage(events=pb.TaskEvents(events=[event])))
        return hc.dispatcher.ActionEventResponse(
            tenant_id=caller.claims.sub, worker_id=str(worker.external_id)
        )

    def _holder(self, caller: Caller, run_id: str) -> HatchetWorker:
        """The worker of the caller's tenant on this replica holding the attempt of
        ``run_id`` (Hatchet's per-task calls name no worker)."""
        for worker in self._workers.values():
            if worker.tenant_id == caller.tenant_id and run_id in worker.held:
                return worker
        raise NotFoundError(f"no worker connected here runs task run {run_id}")

    @hatchet_rpc
    async def RefreshTimeout(self, request: Any, caller: Caller) -> Any:
        """Hatchet's ``refresh_timeout``: the deadline moves *later by* the increment
        (Stoker's own ``refresh_timeout`` resets it to a duration from now; the event sent
        is that duration, computed from the deadline this door set)."""
        from stoker.engine.hatchet.runs import duration_ms

        run_id = request.task_run_external_id
        worker = self._holder(caller, run_id)
        increment = duration_ms(request.increment_timeout_by, "increment_timeout_by")
        now = _now_ms()
        deadline = worker.deadlines.get(run_id, now) + increment
        worker.deadlines[run_id] = deadline
        task_id, attempt = worker.held[run_id]
        event = pb.TaskEvent(
            task_id=task_id,
            attempt=attempt,
            kind=pb.REFRESH_TIMEOUT,
            timeout_ms=max(deadline - now, 1),
            at_ms=now,
        )
        worker.inbox.put_nowait(pb.WorkerMessage(events=pb.TaskEvents(events=[event])))
        answer = hc.dispatcher.RefreshTimeoutResponse()
        answer.timeout_at.FromMilliseconds(deadline)
        return answer

    @hatchet_rpc
    async def ReleaseSlot(self, request: Any, caller: Caller) -> Any:
        run_id = request.task_run_external_id
        worker = self._holder(caller, run_id)
        task_id, attempt = worker.held[run_id]
        event = pb.TaskEvent(task_id=task_id, attempt=attempt, kind=pb.RELEASE_SLOT)
        worker.inbox.put_nowait(pb.WorkerMessage(events=pb.TaskEvents(events=[event])))
        return hc.dispatcher.ReleaseSlotResponse()

    @hatchet_rpc
    async def Unsubscribe(self, request: Any, caller: Caller) -> Any:
        worker = self._worker(caller, request.worker_id)
        worker.stopping = True
        worker.inbox.put_nowait(pb.WorkerMessage(draining=pb.Draining()))
        worker.inbox.put_nowait(pb.WorkerMessage(goodbye=pb.Goodbye()))
        worker.inbox.put_nowait(None)
        self._workers.pop(worker.external_id, None)
        return hc.dispatcher.WorkerUnsubscribeResponse(
            tenant_id=caller.claims.sub, worker_id=str(worker.external_id)
        )

    @hatchet_stream
    async def SubscribeToWorkflowRuns(self, requests: Any, caller: Caller) -> AsyncIterator[Any]:
        """Tells the caller of each run it subscribes to when the run finishes, with its
        output or error (what ``aio_result`` and ``aio_run`` await), through the engine's
        run watcher (woken when runs finish, here or on another replica)."""
        finished: asyncio.Queue[Any] = asyncio.Queue()
        waits: set[asyncio.Task[None]] = set()

        async def watch(run_id: str) -> None:
            try:
                rid = uuid.UUID(run_id)
                while not await self._watcher.wait(caller.tenant_id, [rid], 30.0):
                    pass
                finished.put_nowait(await self._finished(caller, rid))
            except NotFoundError:
                log.info("a Hatchet client subscribed to %s, which is not a run", run_id)
            except ValueError:
                log.info("a Hatchet client subscribed to %r, which is not a run id", run_id)

        async def read() -> None:
            async for request in requests:
                task = asyncio.create_task(watch(request.workflow_run_id))
                waits.add(task)
                task.add_done_callback(waits.discard)

        reader = asyncio.create_task(read())
        try:
            while True:
                yield await finished.get()
        finally:
            for task in (reader, *waits):
                task.cancel()
            await asyncio.gather(reader, *waits, return_exceptions=True)

    async def _finished(self, caller: Caller, run_id: uuid.UUID) -> Any:
        run = await run_details(self._db, caller.tenant_id, str(run_id))
        results = []
        for t in run.tasks:
            error = t.error
            if t.status == "CANCELLED" and not error:
                error = "CancelledError: the run was cancelled"
            results.append(
                hc.dispatcher.StepRunResult(
                    task_run_external_id=t.external_id,
                    task_name=t.readable_id,
                    job_run_id=str(run_id),
                    error=error if t.status in ("FAILED", "CANCELLED") else "",
                    output=json.dumps(t.output) if t.status == "COMPLETED" else "",
                )
            )
        event = hc.dispatcher.WorkflowRunEvent(
            workflow_run_id=str(run_id),
            event_type=hc.dispatcher.WORKFLOW_RUN_EVENT_TYPE_FINISHED,
            results=results,
        )
        event.event_timestamp.FromDatetime(datetime.now(UTC))
        return event
