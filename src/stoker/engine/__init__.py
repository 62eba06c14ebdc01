"""The Stoker engine: one asyncio program made of services with one start/stop contract.

* ingest — accepts task definitions and triggers, writes runs in batches;
* scheduler — turns queued attempts into assignments on workers with free slots;
* dispatcher — owns worker streams, slot accounting and batched task events;
* flows — workflow logic run inline in the others' transactions (DAG progression, waits);
* runs — waiting for results, cancel and replay;
* controllers — the leader loops, one per module: leadership, timeouts, worker liveness,
  the DAG sweeper, retention (their rounds run on the leader replica only);
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
from stoker._core.wire import message_limit
from stoker._proto import engine_pb2_grpc as pb_grpc
from stoker._proto import workflows_pb2_grpc as wpb_grpc
from stoker.config import EngineSettings, read_pem
from stoker.db import Executor, open_pool
from stoker.engine.attempts import Attempts
from stoker.engine.auth import TOKEN_CHANNEL, TokenAuth
from stoker.engine.controllers.leadership import Leadership
from stoker.engine.controllers.liveness import Liveness
from stoker.engine.controllers.retention import Retention
from stoker.engine.controllers.timeouts import Timeouts
from stoker.engine.dispatcher import Dispatcher
from stoker.engine.dispatcher.reconciler import Reconciler
from stoker.engine.dispatcher.served import ServedTasks
from stoker.engine.ingest import Ingest
from stoker.engine.notify import CANCEL, FINISHED, QUEUE, Listener
from stoker.engine.runs.watcher import RunWatcher
from stoker.engine.scheduler import Scheduler
from stoker.engine.server import AuthInterceptor, EngineServicer
from stoker.engine.service import Service

log = logging.getLogger("stoker.engine")


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
        self.leadership = Leadership(
            db,
            engine_id=self.engine_id,
            interval_s=s.controller_interval_s,
            lease_ttl_s=s.lease_ttl_s,
        )
        self.timeouts = Timeouts(
            db,
            self.dispatcher,
            self.attempts,
            self.leadership,
            engine_id=self.engine_id,
            interval_s=s.controller_interval_s,
            worker_dead_after_s=s.worker_dead_after_s,
        )
        self.liveness = Liveness(
            db,
            self.dispatcher,
            self.attempts,
            self.leadership,
            interval_s=s.controller_interval_s,
            worker_dead_after_s=s.worker_dead_after_s,
        )
        self.auth = TokenAuth(
            db,
            cache_ttl_s=s.auth_cache_ttl_s,
            last_used_interval_s=s.token_last_used_interval_s,
        )
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
            {CANCEL: self.dispatcher.cancel_remote, TOKEN_CHANNEL: self.auth.on_revoked},
        )
        self.reconciler = Reconciler(db, self.dispatcher, interval_s=s.reconcile_interval_s)
        self.retention = Retention(
            db,
            self.leadership,
            history_after_s=s.history_after_s,
            retention_days=s.retention_days,
            partitions_ahead_days=s.partitions_ahead_days,
            interval_s=s.archive_interval_s,
            request_key_ttl_s=s.request_key_ttl_s,
        )
        self.services = [
            self.auth,
            self.listener,
            self.ingest,
            self.dispatcher,
            self.reconciler,
            self.scheduler,
            self.leadership,
            self.timeouts,
            self.liveness,
            self.sweeper,
            self.retention,
        ]
        if s.http_enabled:
            from stoker.engine.api.app import create_app
            from stoker.engine.api.service import ApiService

            app = create_app(
                db,
                self.auth,
                version=__version__,
                served=self.served,
                engine_id=self.engine_id,
                max_body_bytes=message_limit(s.max_payload_bytes),
            )
            self.services.append(
                ApiService(
                    app,
                    s.http_host,
                    s.http_port,
                    cert_file=s.tls_cert_file,
                    key_file=s.tls_key_file,
                    client_ca_file=s.tls_client_ca_file,
                )
            )
        for service in self.services:
            await service.start()

        # Requests larger than one payload plus headroom are refused by gRPC before they are
        # held whole (the SDK splits its batches to fit); responses (results, assignments)
        # are not capped here: the receiving client bounds them.
        self._grpc = grpc.aio.server(
            interceptors=[AuthInterceptor(self.auth)],
            options=[
                ("grpc.max_receive_message_length", message_limit(s.max_payload_bytes)),
                ("grpc.max_send_message_length", -1),
                ("grpc.max_concurrent_streams", s.grpc_max_concurrent_streams),
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.so_reuseport", 0),
            ],
        )
        pb_grpc.add_EngineServicer_to_server(
            EngineServicer(self.auth, self.ingest, self.dispatcher, self.watcher, self.served),
            self._grpc,
        )
        wpb_grpc.add_WorkflowsServicer_to_server(self.workflows_servicer, self._grpc)
        address = f"{s.grpc_host}:{s.grpc_port}"
        if s.tls:
            port = self._grpc.add_secure_port(address, _server_credentials(s))
        else:
            port = self._grpc.add_insecure_port(address)
        if port == 0:
            raise OSError(f"cannot listen for gRPC on {address}")
        await self._grpc.start()
        log.info(
            "stoker engine %s ready: grpc=%s http=%s:%d tls=%s",
            self.engine_id,
            address,
            s.http_host,
            s.http_port,
            ("mutual" if s.tls_client_ca_file else "on") if s.tls else "off",
        )

    def _start_workflows(self, db: Executor, wake: Callable[..., None]) -> None:
        """Workflows: DAG progression (hooked into every transaction that ends attempts),
        the wait registry and its sweeper, the workflow/child/event ingest, cancel and
        replay."""
        from stoker.engine.controllers.sweeper import Sweeper
        from stoker.engine.flows.conditions import Conditions
        from stoker.engine.flows.progression import Progression
        from stoker.engine.ingest.workflows import WorkflowIngest
        from stoker.engine.runs.ops import RunOps
        from stoker.engine.workflows_server import WorkflowsServicer

        s = self.settings
        self.progression = Progression(
            db,
            self.watcher,
            engine_id=self.engine_id,
            on_enqueued=wake,
            gated_tenants=self.ingest.gated_tenants,
        )
        self.conditions = Conditions(db, self.progression.progress)
        self.sweeper = Sweeper(
            db,
            self.conditions,
            self.progression,
            self.leadership,
            interval_s=min(1.0, s.controller_interval_s),
        )
        self.attempts.dag_hooks.append(self.progression.on_finals)
        self.workflows_servicer = WorkflowsServicer(
            self.auth,
            WorkflowIngest(db, self.ingest, self.progression),
            RunOps(
                db,
                self.dispatcher,
                self.watcher,
                self.progression,
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


def _server_credentials(s: EngineSettings) -> grpc.ServerCredentials:
    """TLS for the gRPC port; with a client CA, clients must present a certificate it
    signed (mutual TLS)."""
    ca = s.tls_client_ca_file
    return grpc.ssl_server_credentials(
        [
            (
                read_pem(s.tls_key_file, "STOKER_TLS_KEY_FILE"),
                read_pem(s.tls_cert_file, "STOKER_TLS_CERT_FILE"),
            )
        ],
        root_certificates=read_pem(ca, "STOKER_TLS_CLIENT_CA_FILE") if ca else None,
        require_client_auth=bool(ca),
    )


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
