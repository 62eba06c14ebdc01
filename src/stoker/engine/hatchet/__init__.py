"""The Hatchet front door: Hatchet's SDK talking to a Stoker engine (docs/hatchet.md).

A separate gRPC server on its own port (``STOKER_HATCHET_ENABLED=true``,
``STOKER_HATCHET_PORT``) answering Hatchet's services with servicers that map each call
onto the engine's own services — not a second engine:

* :mod:`.workers` — Hatchet's ``Dispatcher`` (registration, the action listener, heartbeats,
  step events) over Stoker's dispatcher, one Stoker worker stream per listener;
* :mod:`.runs` — workflow declarations over the definitions registry, triggers over ingest,
  run details over the run reads;
* :mod:`.events` — event pushes through the event ingest (they start ``on_events`` runs);
* :mod:`.tokens` and :mod:`.handlers` — Hatchet tokens carrying a Stoker API token, the
  caller, errors as statuses, ``UNIMPLEMENTED`` naming the feature for what is not mapped.

The messages are those of the ``hatchet-sdk`` package (:mod:`.contracts`).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from types import SimpleNamespace
from typing import Any

import grpc

from stoker._core.wire import message_limit
from stoker.config import EngineSettings
from stoker.db import Executor
from stoker.engine.auth import TokenAuth
from stoker.engine.definitions import Definitions
from stoker.engine.dispatcher import Dispatcher
from stoker.engine.ingest import Ingest
from stoker.engine.ingest.workflows import WorkflowIngest
from stoker.engine.runs.watcher import RunWatcher
from stoker.engine.schedules import Schedules
from stoker.engine.service import Service

log = logging.getLogger("stoker.engine.hatchet")

FEATURES: dict[str, str] = {
    # What each method the front door does not implement belongs to (docs/hatchet.md).
    "Dispatcher.Listen": "the v0 action listener (the SDK 1.4x uses ListenV2)",
    "Dispatcher.SubscribeToWorkflowEvents": "run event subscriptions",
    "Dispatcher.SendBatchActionEvent": "batch tasks",
    "Dispatcher.SendGroupKeyActionEvent": "concurrency group-key runs",
    "Dispatcher.PutOverridesData": "step overrides",
    "Dispatcher.RestoreEvictedTask": "durable task eviction",
    "Dispatcher.UpsertWorkerLabels": "changing worker labels",
    "EventsService.ReplaySingleEvent": "event replay",
    "EventsService.PutLog": "task logs (ctx.log)",
    "EventsService.PutStreamEvent": "streams (ctx.put_stream)",
    "WorkflowService.PutWorkflow": "v0 workflow declarations (the SDK 1.4x uses v1)",
    "WorkflowService.PauseRateLimit": "pausing rate limits",
    "AdminService.CancelTasks": "cancellation",
    "AdminService.ReplayTasks": "replay",
    "AdminService.TriggerWorkflowRun": "v1 triggers",
    "AdminService.BranchDurableTask": "durable tasks",
    "V1Dispatcher.DurableTask": "durable tasks",
    "V1Dispatcher.RegisterDurableEvent": "durable tasks (wait for event)",
    "V1Dispatcher.ListenForDurableEvent": "durable tasks (wait for event)",
}


def _answering(service: Any, servicer: Any) -> SimpleNamespace:
    """Handlers of every method of ``service``: the servicer's own, or one answering
    UNIMPLEMENTED with the feature the method belongs to."""
    from stoker.engine.hatchet.handlers import missing

    handlers = {}
    for method in service.methods:
        own = getattr(type(servicer), method.name, None)
        if own is None:
            key = f"{service.name}.{method.name}"
            own = missing(
                service.name, method.name, FEATURES.get(key, key), method.server_streaming
            )
        handlers[method.name] = own.__get__(servicer)
    return SimpleNamespace(**handlers)


class HatchetFrontDoor(Service):
    """The Hatchet front door's gRPC server, started and stopped with the engine."""

    def __init__(
        self,
        settings: EngineSettings,
        db: Executor,
        auth: TokenAuth,
        definitions: Definitions,
        ingest: Ingest,
        dispatcher: Dispatcher,
        watcher: RunWatcher,
        workflows: WorkflowIngest,
        schedules: Schedules,
    ) -> None:
        self._schedules = schedules
        self._watcher = watcher
        self._workflows = workflows
        self._settings = settings
        self._db = db
        self._auth = auth
        self._definitions = definitions
        self._ingest = ingest
        self._dispatcher = dispatcher
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        # Importing hatchet-sdk imports the whole SDK (seconds on a busy machine): in a
        # thread, so the engine's event loop keeps answering meanwhile.
        await asyncio.to_thread(importlib.import_module, "stoker.engine.hatchet.contracts")
        from stoker.engine.hatchet import contracts as hc
        from stoker.engine.hatchet.events import EventsV0
        from stoker.engine.hatchet.handlers import HatchetAuth, HatchetServicer
        from stoker.engine.hatchet.runs import AdminV1, Targets, WorkflowsV0
        from stoker.engine.hatchet.workers import DispatcherV0

        hc.check_version()
        s = self._settings
        auth = HatchetAuth(self._auth)
        targets = Targets(self._definitions)
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", message_limit(s.max_payload_bytes)),
                ("grpc.max_send_message_length", -1),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.so_reuseport", 0),
            ],
        )
        services: list[tuple[Any, Any, Any]] = [
            (
                hc.dispatcher,
                DispatcherV0(auth, self._dispatcher, self._db, self._watcher),
                hc.dispatcher_grpc,
            ),
            (
                hc.workflows,
                WorkflowsV0(
                    auth,
                    self._ingest,
                    self._workflows,
                    targets,
                    self._definitions,
                    self._db,
                    self._schedules,
                ),
                hc.workflows_grpc,
            ),
            (
                hc.v1_workflows,
                AdminV1(auth, self._db, self._definitions, targets),
                hc.v1_workflows_grpc,
            ),
            (hc.events, EventsV0(auth, self._workflows), hc.events_grpc),
            (hc.v1_dispatcher, HatchetServicer(auth), hc.v1_dispatcher_grpc),
        ]
        for module, servicer, grpc_module in services:
            for service in module.DESCRIPTOR.services_by_name.values():
                add = getattr(grpc_module, f"add_{service.name}Servicer_to_server")
                add(_answering(service, servicer), server)
        address = f"{s.grpc_host}:{s.hatchet_port}"
        try:
            self.port = server.add_insecure_port(address)
            if self.port == 0:
                raise OSError(f"cannot listen for the Hatchet front door on {address}")
            await server.start()
        except BaseException:
            await server.stop(None)
            raise
        self._server = server
        log.info("Hatchet front door listening on %s", address)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace=2)


__all__ = ["HatchetFrontDoor"]
