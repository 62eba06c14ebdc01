"""HTTP push workers: an app's tasks served as an ASGI endpoint the engine POSTs attempts to
(README "HTTP push workers", docs/http-workers.md).

:class:`HttpWorker` is an ASGI app (Starlette) with two routes: ``POST /run`` takes one
attempt, ``POST /cancel`` stops one. Every request must carry the engine's signature under
the endpoint's secret, fresh within the replay window (:mod:`stoker._core.push`); anything
else is answered 401 before any task code runs.

An attempt runs in the same :class:`~stoker._sdk.worker.runtime.Runtime` a stream worker
uses (input validation, dependencies, executors, execution timeout, error
classification). A task answers when it ends: 200 with its output, or 500 with the error
document (type, message, traceback, whether a retry is allowed). A task listed in
``background`` answers 202 at once; its end is reported to the engine through the SDK
(``ReportPushEvents``), as are ``ctx.refresh_timeout`` calls of every attempt.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from stoker._core.push import CANCEL_PATH, MIN_SECRET_CHARS, RUN_PATH, check
from stoker._proto import engine_pb2 as pb
from stoker._proto import push_pb2 as ppb
from stoker._sdk.durable import DurableTask
from stoker._sdk.execution import ExecutorName
from stoker._sdk.task import Task
from stoker._sdk.worker.executors import Executors
from stoker._sdk.worker.runtime import Runtime
from stoker._sdk.worker.session import Outbox
from stoker.errors import DeclarationError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import Receive, Scope, Send

    from stoker._sdk.app import Stoker

log = logging.getLogger("stoker.worker")

REPORT_RETRY_S = 1.0
"""How long reporting waits before trying again after the engine could not be reached."""


class HttpWorker:
    """An ASGI app that runs an app's tasks as the engine POSTs them.

    Serve it with any ASGI server (``uvicorn module:worker``), or mount it in a FastAPI or
    Starlette app (``api.mount("/stoker", worker)``) and pass ``lifespan=worker.lifespan``
    to that app so the endpoint is registered when it starts.
    """

    def __init__(
        self,
        app: Stoker,
        name: str,
        *,
        url: str,
        secret: str,
        slots: int,
        tasks: Sequence[Task[Any, Any]],
        background: Sequence[Task[Any, Any]] = (),
        executor: ExecutorName | None = None,
    ) -> None:
        if not name:
            raise DeclarationError("an HTTP push worker needs a name")
        if slots <= 0:
            raise DeclarationError(f"HTTP push worker {name!r} needs at least one slot")
        if len(secret) < MIN_SECRET_CHARS:
            raise DeclarationError(
                f"the secret of HTTP push worker {name!r} must be at least "
                f"{MIN_SECRET_CHARS} characters long"
            )
        self.app = app
        self.name = name
        self.url = url.rstrip("/")
        self.slots = slots
        self._secret = secret
        self.tasks: dict[str, Task[Any, Any]] = {t.name: t for t in tasks}
        if not self.tasks:
            raise DeclarationError(f"HTTP push worker {name!r} serves no task")
        durable = [t.name for t in self.tasks.values() if isinstance(t, DurableTask)]
        if durable:
            raise DeclarationError(
                f"HTTP push worker {name!r}: durable tasks need a stream worker "
                f"(app.worker): {', '.join(sorted(durable))}"
            )
        unknown = [t.name for t in background if t.name not in self.tasks]
        if unknown:
            raise DeclarationError(
                f"HTTP push worker {name!r}: background tasks it does not serve: "
                f"{', '.join(sorted(unknown))}"
            )
        self.background = frozenset(t.name for t in background)
        self._executor = executor
        self._runtime: Runtime | None = None
        self._outbox = Outbox()
        self._waiters: dict[tuple[int, int], asyncio.Future[pb.TaskEvent | None]] = {}
        self._pump: asyncio.Task[None] | None = None
        self._asgi: Any = None
        self.endpoint: ppb.PushEndpointInfo | None = None
        """What the engine answered the registration (its worker id among others)."""

    # -- lifecycle ----------------------------------------------------------------------

    async def aio_register(self) -> ppb.PushEndpointInfo:
        """Declares the tasks and registers the endpoint (URL, slots, secret) with the
        engine, which starts delivering to it within a second."""
        await self.app.aio_register(list(self.tasks.values()))
        self.endpoint = await self.app.connection.calls.aio_register_push_endpoint(
            ppb.RegisterPushEndpointRequest(
                name=self.name,
                url=self.url,
                slots=self.slots,
                task_names=sorted(self.tasks),
                secret=self._secret,
            )
        )
        return self.endpoint

    async def aio_unregister(self) -> bool:
        """Deletes the endpoint: the engine delivers nothing more to it, and what it still
        ran is requeued at once. False when it was not registered."""
        resp = await self.app.connection.calls.aio_delete_push_endpoint(
            ppb.DeletePushEndpointRequest(name=self.name)
        )
        return resp.deleted

    def lifespan(self, _app: Any = None) -> AbstractAsyncContextManager[None]:
        """An ASGI lifespan: registers the endpoint at start, stops what runs at exit."""
        return self._lifespan()

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        self._start()
        await self.aio_register()
        try:
            yield
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stops the attempts still running and the reporting (what is reported is sent)."""
        runtime, self._runtime = self._runtime, None
        if runtime is not None:
            runtime.hand_back("the HTTP push worker stopped")
            runtime.shutdown()
        pump, self._pump = self._pump, None
        if pump is not None:
            self._outbox.wake.set()
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            await self._report(self._take())

    def _start(self) -> Runtime:
        """The runtime, made on the server's event loop at the first use."""
        if self._runtime is None:
            self._runtime = Runtime(
                name=f"push:{self.name}",
                worker_id=f"push:{self.name}",
                tasks=self.tasks,
                slots=self.slots,
                durable_slots=0,
                max_payload_bytes=self.app.max_payload_bytes,
                outbox=self._outbox,
                changed=asyncio.Event(),
                calls=self.app.connection.calls,
                executors=Executors(self.name, self.tasks.values(), self.slots, self._executor),
            )
            self._pump = asyncio.create_task(self._pump_events(), name="stoker-push-report")
        return self._runtime

    # -- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._asgi is None:
            from starlette.applications import Starlette
            from starlette.routing import Route

            self._asgi = Starlette(
                routes=[
                    Route(RUN_PATH, self._run, methods=["POST"]),
                    Route(CANCEL_PATH, self._cancel, methods=["POST"]),
                ],
                lifespan=lambda _app: self.lifespan(),
            )
        await self._asgi(scope, receive, send)

    async def _signed(self, request: Request) -> tuple[bytes, Response | None]:
        from starlette.responses import JSONResponse

        body = await request.body()
        problem = check(self._secret, request.headers, body)
        if problem is not None:
            log.warning("HTTP push worker %s refused a request: %s", self.name, problem)
            return body, JSONResponse({"error": problem}, status_code=401)
        return body, None

    async def _run(self, request: Request) -> Response:
        from starlette.responses import JSONResponse, Response

        body, refused = await self._signed(request)
        if refused is not None:
            return refused
        try:
            doc = json.loads(body)
            a = _assignment(doc)
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"not a delivery: {exc}"}, status_code=400)
        runtime = self._start()
        key = (a.task_id, a.attempt)
        if a.task_name not in self.background:
            waiter = self._waiters.get(key)
            if waiter is None:
                waiter = self._waiters[key] = asyncio.get_running_loop().create_future()
            runtime.begin(a)
            self._outbox.wake.set()
            try:
                event = await asyncio.shield(waiter)
            finally:
                if waiter.done():
                    self._waiters.pop(key, None)
            if event is None:
                return JSONResponse({"error": "the attempt was cancelled"}, status_code=409)
            if event.kind == pb.COMPLETED:
                return Response(event.output, media_type="application/json")
            return JSONResponse(_error_doc(event), status_code=500)
        runtime.begin(a)
        return JSONResponse({"accepted": True}, status_code=202)

    async def _cancel(self, request: Request) -> Response:
        from starlette.responses import JSONResponse

        body, refused = await self._signed(request)
        if refused is not None:
            return refused
        try:
            doc = json.loads(body)
            task_id, attempt = int(doc["task_id"]), int(doc["attempt"])
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"not a cancellation: {exc}"}, status_code=400)
        if self._runtime is not None:
            self._runtime.cancel(task_id, attempt, str(doc.get("reason") or "cancelled"))
        waiter = self._waiters.pop((task_id, attempt), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return JSONResponse({"cancelled": True})

    # -- events -------------------------------------------------------------------------

    def _take(self) -> list[pb.TaskEvent]:
        """The events to report: ends of background attempts and timeout refreshes (the
        ends of the others answer their requests)."""
        events, self._outbox.events = self._outbox.events, []
        if self._outbox.shipping is not None:
            self._outbox.shipping.take()  # log lines stay on the endpoint (its own logging)
        report = []
        for ev in events:
            if ev.kind in (pb.COMPLETED, pb.FAILED):
                waiter = self._waiters.get((ev.task_id, ev.attempt))
                if waiter is not None:
                    if not waiter.done():
                        waiter.set_result(ev)
                    continue
                report.append(ev)
            elif ev.kind == pb.REFRESH_TIMEOUT:
                report.append(ev)
        return report

    async def _pump_events(self) -> None:
        while True:
            await self._outbox.wake.wait()
            self._outbox.wake.clear()
            pending = self._take()
            while pending:
                if await self._report(pending):
                    break
                await asyncio.sleep(REPORT_RETRY_S)

    async def _report(self, events: list[pb.TaskEvent]) -> bool:
        if not events:
            return True
        try:
            await self.app.connection.calls.aio_report_push_events(
                ppb.ReportPushEventsRequest(endpoint=self.name, events=events)
            )
        except Exception as exc:
            log.warning(
                "HTTP push worker %s could not report %d events: %s", self.name, len(events), exc
            )
            return False
        return True


def _assignment(doc: dict[str, Any]) -> pb.Assignment:
    """The attempt a delivery carries (the body ``engine/push`` makes)."""
    return pb.Assignment(
        task_id=int(doc["task_id"]),
        attempt=int(doc["attempt"]),
        run_id=str(doc["run_id"]),
        task_name=str(doc["task_name"]),
        input=json.dumps(doc.get("input")).encode(),
        additional_metadata=json.dumps(doc.get("additional_metadata") or {}).encode(),
        retry_count=int(doc.get("retry_count", 0)),
        max_attempts=int(doc.get("max_attempts", 1)),
        execution_timeout_ms=int(doc.get("execution_timeout_ms", 0)),
        slot_cost=int(doc.get("slot_cost", 1)),
        parent_run_id=str(doc.get("parent_run_id") or ""),
        child_index=int(doc.get("child_index", 0)),
        child_key=str(doc.get("child_key") or ""),
        workflow_run_id=str(doc.get("workflow_run_id") or ""),
    )


def _error_doc(event: pb.TaskEvent) -> dict[str, Any]:
    """The 500 answer of a failed attempt, as the engine reads it."""
    return {
        "error": {
            "type": event.error.type,
            "message": event.error.message,
            "traceback": event.error.traceback,
        },
        "retryable": not event.non_retryable,
        "retry_after_ms": event.retry_after_ms,
    }


__all__ = ["HttpWorker"]
