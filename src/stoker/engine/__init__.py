"""The Stoker engine: one asyncio program made of services with one start/stop contract.

* ingest — accepts task definitions and triggers, writes runs in batches;
* scheduler — turns queued attempts into assignments on workers with free slots;
* dispatcher — owns worker streams, slot accounting and batched task events;
* controllers — timeouts, worker liveness and leadership (on the leader replica only);
* api — the REST API over HTTP.

The gRPC server (:mod:`stoker.engine.server`) is the front door of ingest and dispatcher.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from psycopg_pool import AsyncConnectionPool

from stoker import __version__
from stoker._proto import engine_pb2_grpc as pb_grpc
from stoker._proto import workflows_pb2_grpc as wpb_grpc
from stoker.config import EngineSettings
from stoker.db import Executor, open_pool
from stoker.engine.attempts import Attempts
from stoker.engine.auth import TokenAuth
from stoker.engine.controllers import Controllers
from stoker.engine.dispatcher import Dispatcher, Reconciler
from stoker.engine.dispatcher.served import ServedTasks
from stoker.engine.ingest import Ingest
from stoker.engine.notify import CANCEL, FINISHED, QUEUE, Listener
from stoker.engine.retention import Retention
from stoker.engine.runs import RunWatcher
from stoker.engine.scheduler import Scheduler
from stoker.engine.server import EngineServicer
from stoker.engine.service import Service

log = logging.getLogger("stoker.engine")

# gRPC messages may carry batches of payloads, each up to max_payload_bytes.
_MESSAGE_HEADROOM = 64 * 1024 * 1024


class Engine:
    """Owns the database pool, the services and the gRPC server of one engine replica."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings.validate_settings()
        self.engine_id = settings.engine_id or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self.pool: AsyncConnectionPool[Any] | None = None
        self.services: list[Service] = []
        self._grpc: grpc.aio.Server | None = None

    async def start(self) -> None:
        s = self.settings
        self.pool = await open_pool(
            s.database_url, s.schema_name, max_size=s.pool_size, name="stoker-engine"
        )
        db = Executor(self.pool)
        self.watcher = RunWatcher(db)
        scheduler_wake: list[Scheduler] = []

        def wake(*_: object) -> None:
            for sch in scheduler_wake:
                sch.wake()

        self.attempts = Attempts(db, self.watcher, max_requeues=s.max_requeues, on_requeued=wake)
        self.ingest = Ingest(
            db,
            max_payload_bytes=s.max_payload_bytes,
            flush_interval_ms=s.flush_interval_ms,
            flush_max_items=s.flush_max_items,
            on_enqueued=wake,
        )
        self.dispatcher = Dispatcher(
            db,
            self.attempts,
            max_payload_bytes=s.max_payload_bytes,
            flush_interval_ms=s.flush_interval_ms,
            flush_max_items=s.flush_max_items,
            on_slots_freed=wake,
        )
        self.scheduler = Scheduler(
            db,
            self.dispatcher,
            self.attempts,
            self.ingest.task_defs,
            self.ingest.gated_tenants,
            batch=s.scheduler_batch,
            poll_s=s.scheduler_poll_s,
            defer_ms=s.scheduler_defer_ms,
        )
        scheduler_wake.append(self.scheduler)
        self.controllers = Controllers(
            db,
            self.dispatcher,
            self.attempts,
            engine_id=self.engine_id,
            interval_s=s.controller_interval_s,
            worker_dead_after_s=s.worker_dead_after_s,
            lease_ttl_s=s.lease_ttl_s,
        )
        self.auth = TokenAuth(db)
        for part in (self.ingest, self.dispatcher, self.attempts):
            part.engine_id = self.engine_id
        self.served = ServedTasks(
            db, lambda tenant_id: (c.task_names for c in self.dispatcher.conns_of(tenant_id))
        )
        self._start_workflows(db, wake)
        self.listener = Listener(
            s.database_url,
            s.schema_name,
            self.engine_id,
            {QUEUE: self.scheduler.wake, FINISHED: self.watcher.tenant_finished},
            {CANCEL: self.dispatcher.cancel_remote},
        )
        self.reconciler = Reconciler(db, self.dispatcher, interval_s=s.reconcile_interval_s)
        self.retention = Retention(
            db,
            is_leader=lambda: self.controllers.is_leader,
            history_after_s=s.history_after_s,
            retention_days=s.retention_days,
            partitions_ahead_days=s.partitions_ahead_days,
            interval_s=s.archive_interval_s,
        )
        self.services = [
            self.listener,
            self.ingest,
            self.dispatcher,
            self.reconciler,
            self.scheduler,
            self.controllers,
            self.dags,
            self.retention,
        ]
        if s.http_enabled:
            from stoker.engine.api.app import create_app
            from stoker.engine.api.service import ApiService

            app = create_app(db, self.auth, version=__version__, served=self.served)
            self.services.append(ApiService(app, s.http_host, s.http_port))
        for service in self.services:
            await service.start()

        limit = s.max_payload_bytes + _MESSAGE_HEADROOM
        self._grpc = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.so_reuseport", 0),
            ]
        )
        pb_grpc.add_EngineServicer_to_server(
            EngineServicer(self.auth, self.ingest, self.dispatcher, self.watcher, self.served),
            self._grpc,
        )
        wpb_grpc.add_WorkflowsServicer_to_server(self.workflows_servicer, self._grpc)
        address = f"{s.grpc_host}:{s.grpc_port}"
        if self._grpc.add_insecure_port(address) == 0:
            raise OSError(f"cannot listen for gRPC on {address}")
        await self._grpc.start()
        log.info(
            "stoker engine %s ready: grpc=%s http=%s:%d",
            self.engine_id,
            address,
            s.http_host,
            s.http_port,
        )

    def _start_workflows(self, db: Executor, wake: Callable[..., None]) -> None:
        """Workflows: DAG progression (hooked into every transaction that ends attempts),
        its sweeper, the workflow/child/event ingest, cancel and replay."""
        from stoker.engine.controllers.cancel import RunOps
        from stoker.engine.controllers.dags import Dags
        from stoker.engine.ingest.workflows import WorkflowIngest
        from stoker.engine.workflows_server import WorkflowsServicer

        s = self.settings
        self.dags = Dags(
            db,
            self.dispatcher,
            self.watcher,
            engine_id=self.engine_id,
            is_leader=lambda: self.controllers.is_leader,
            on_enqueued=wake,
            gated_tenants=self.ingest.gated_tenants,
            interval_s=min(1.0, s.controller_interval_s),
        )
        self.attempts.dag_hooks.append(self.dags.on_finals)
        self.workflows_servicer = WorkflowsServicer(
            self.auth,
            WorkflowIngest(db, self.ingest, self.dags),
            RunOps(
                db,
                self.dispatcher,
                self.watcher,
                self.dags,
                engine_id=self.engine_id,
                on_enqueued=wake,
            ),
            self.served,
        )

    async def stop(self) -> None:
        """Stops accepting work, flushes buffers, then closes everything (safe to repeat)."""
        server, self._grpc = self._grpc, None
        if server is not None:
            await server.stop(grace=2)
        for service in reversed(self.services):
            await service.stop()
        self.services = []
        pool, self.pool = self.pool, None
        if pool is not None:
            await pool.close()


async def serve(settings: EngineSettings) -> None:
    """Runs an engine until SIGINT or SIGTERM, then stops it cleanly."""
    engine = Engine(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await engine.start()
        await stop.wait()
    finally:
        await engine.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


__all__ = ["Engine", "serve"]
