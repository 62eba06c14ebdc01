"""The Stoker engine: one asyncio program made of services with one start/stop contract.

* definitions — task and workflow definitions, strategies, rate-limit keys, policy;
* ingest — accepts triggers, workflow runs and child spawns, writes runs in batches;
* inbox — drains the runs applications enqueued in their own transactions (every replica);
* scheduler — turns queued attempts into assignments on workers with free slots;
* dispatcher — owns worker streams, slot accounting and batched task events;
* flows — workflow logic run inline in the others' transactions (DAG progression, waits);
* runs — waiting for results, cancel and replay;
* controllers — the leader loops, one per module: leadership, timeouts, worker liveness,
  the DAG sweeper, durable timers, crons, scheduled runs, retention (their rounds run on
  the leader replica only);
* durable — durable tasks' logs, read and appended over the worker streams, and the
  wake-up hints sent to workers when a log is settled;
* api — the REST API over HTTP.

The gRPC server (:mod:`stoker.engine.rpc`) is the front door of ingest and dispatcher.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import uuid
from datetime import timedelta
from typing import Any

import grpc
from psycopg_pool import AsyncConnectionPool

from stoker import __version__
from stoker._core.wire import message_limit
from stoker.config import EngineSettings
from stoker.db import Executor, open_pool
from stoker.engine import metrics, watchdog
from stoker.engine.attempts import Attempts
from stoker.engine.auth import TOKEN_CHANNEL, TokenAuth
from stoker.engine.controllers.crons import Crons
from stoker.engine.controllers.durable_timers import DurableTimers
from stoker.engine.controllers.leadership import Leadership
from stoker.engine.controllers.liveness import Liveness
from stoker.engine.controllers.retention import Retention
from stoker.engine.controllers.timeouts import Timeouts
from stoker.engine.crons import CronAdmin, CronRuns
from stoker.engine.definitions import CRONS_CHANNEL, Definitions
from stoker.engine.dispatcher import Dispatcher
from stoker.engine.dispatcher.reconciler import Reconciler
from stoker.engine.dispatcher.served import ServedTasks
from stoker.engine.durable.children import ChildEnds
from stoker.engine.durable.log import DurableLogs
from stoker.engine.durable.waits import DurableWaits
from stoker.engine.durable.wake import CHANNEL as DURABLE_CHANNEL
from stoker.engine.durable.wake import Wakes
from stoker.engine.flows.progression import Progression
from stoker.engine.inbox import CHANNEL as INBOX_CHANNEL
from stoker.engine.inbox import InboxDrainer
from stoker.engine.ingest import Ingest
from stoker.engine.ingest.workflows import WorkflowIngest
from stoker.engine.notify import CANCEL, FINISHED, QUEUE, SCHEDULES, WORKER_PAUSE, Listener
from stoker.engine.observe import Observe
from stoker.engine.observe.streams import CHANNEL as STREAM_CHANNEL
from stoker.engine.push import PushDelivery, PushEndpoints
from stoker.engine.rpc import open_server
from stoker.engine.rpc.admin_service import AdminService
from stoker.engine.rpc.event_service import EventService
from stoker.engine.rpc.observe_service import ObserveService
from stoker.engine.rpc.push_service import PushService
from stoker.engine.rpc.schedule_service import ScheduleService
from stoker.engine.rpc.webhook_service import WebhookService
from stoker.engine.rpc.worker_service import WorkerService
from stoker.engine.runs.watcher import RunWatcher
from stoker.engine.scheduler import TIMEOUT_GRACE_MS, Scheduler
from stoker.engine.service import Service
from stoker.engine.signals import Signals
from stoker.engine.webhooks.secrets import SecretBox
from stoker.errors import ConfigError

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
        # Composition: each object gets what it uses through its constructor. Whatever
        # queues or finishes runs says so through ``signals`` (NOTIFY in the transaction,
        # local wake-ups after commit); the scheduler and the run watcher subscribe there.
        self.signals = Signals(self.engine_id)
        metrics.set_max_series(s.metrics_max_series)
        metrics.set_metadata_labels(
            s.metadata_label_keys(), s.metrics_metadata_max_values, s.metrics_max_series
        )
        self.watcher = RunWatcher(db, self.signals)
        self.progression = Progression(db, self.signals)
        self.attempts = Attempts(db, self.signals, self.progression, max_requeues=s.max_requeues)
        # A rate limit that changed may let deferred runs start: the scheduler looks again.
        self.definitions = Definitions(
            db,
            on_limits_changed=self.signals.capacity,
            on_crons_changed=lambda tenant_id: self._crons_changed(tenant_id),
            engine_id=self.engine_id,
        )
        self.ingest = Ingest(
            db,
            self.signals,
            self.definitions,
            max_payload_bytes=s.max_payload_bytes,
            flush_interval_ms=s.flush_interval_ms,
            flush_max_items=s.flush_max_items,
            analyze_after=s.queue_analyze_after_runs,
        )
        self.leadership = Leadership(
            db,
            engine_id=self.engine_id,
            interval_s=s.controller_interval_s,
            lease_ttl_s=s.lease_ttl_s,
        )
        # Durable tasks: the dispatcher hands their requests to the logs; the timers hint
        # workers through the dispatcher's streams (built next, hence the late lookup).
        self.wakes = Wakes(
            db, lambda worker, msg: self.dispatcher.push_here(worker, msg), engine_id=self.engine_id
        )
        self.durable_waits = DurableWaits()
        self.durable_timers = DurableTimers(
            db,
            self.wakes,
            self.durable_waits,
            self.leadership,
            self.signals,
            interval_s=min(1.0, s.controller_interval_s),
        )
        self.workflow_ingest = WorkflowIngest(
            db,
            self.signals,
            self.definitions,
            self.ingest,
            self.progression,
            max_payload_bytes=s.max_payload_bytes,
            durable_waits=self.durable_waits,
            wakes=self.wakes,
        )
        self.durable_logs = DurableLogs(
            db,
            self.durable_waits,
            on_timer=self.durable_timers.wake,
            timeout_grace_ms=TIMEOUT_GRACE_MS,
            children=self.workflow_ingest,
        )
        # A durable parent's entry waiting for a child settles in the transaction that
        # finished the child, whichever path finished it (engine/durable/children.py).
        self.signals.on_finishing(ChildEnds(self.wakes, self.signals).on_finishing)
        # Logs, streams and run events: the dispatcher hands workers' lines and chunks over.
        self.observe = Observe(
            db,
            signals=self.signals,
            engine_id=self.engine_id,
            max_chunk_bytes=message_limit(s.max_payload_bytes),
            stream_retention_s=s.stream_retention_s,
            stream_attempt_max_bytes=s.stream_attempt_max_bytes,
        )
        self.dispatcher = Dispatcher(
            db,
            self.signals,
            self.attempts,
            engine_id=self.engine_id,
            max_payload_bytes=s.max_payload_bytes,
            flush_interval_ms=s.flush_interval_ms,
            flush_max_items=s.flush_max_items,
            durable=self.durable_logs.handle,
            on_logs=self.observe.logs.take,
            on_stream=self.observe.streams.take,
        )
        self.scheduler = Scheduler(
            db,
            self.signals,
            self.dispatcher,
            self.attempts,
            self.definitions,
            batch=s.scheduler_batch,
            poll_s=s.scheduler_poll_s,
            defer_ms=s.scheduler_defer_ms,
        )
        self.timeouts = Timeouts(
            db,
            self.dispatcher,
            self.attempts,
            self.leadership,
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
        self.served = ServedTasks(
            db, lambda tenant_id: (c.task_names for c in self.dispatcher.conns_of(tenant_id))
        )
        self._start_workflows(db)
        self.listener = Listener(
            s.database_url,
            s.schema_name,
            self.engine_id,
            {
                QUEUE: self.signals.remote_queued,
                FINISHED: self.signals.remote_finished,
                CRONS_CHANNEL: self._crons_changed,
            },
            {
                CANCEL: self.dispatcher.cancel_remote,
                WORKER_PAUSE: self.dispatcher.pause_remote,
                TOKEN_CHANNEL: self.auth.on_revoked,
                DURABLE_CHANNEL: self.wakes.on_remote,
                SCHEDULES: self.schedule_timers.on_remote,
                INBOX_CHANNEL: self.inbox.on_remote,
                STREAM_CHANNEL: self.observe.streams.on_remote,
            },
            on_connect=self.inbox.on_listening,
        )
        # HTTP push endpoints: workers to the scheduler, attached and delivered to by the
        # leader (engine/push, docs/http-workers.md).
        push_box = SecretBox(s.webhook_keys())  # sealed like webhook secrets
        self.push = PushDelivery(
            db,
            self.dispatcher,
            self.leadership,
            push_box,
            interval_s=min(1.0, s.controller_interval_s),
        )
        self.push_endpoints = PushEndpoints(db, push_box, self.push.changed)
        self.reconciler = Reconciler(db, self.dispatcher, interval_s=s.reconcile_interval_s)
        self.retention = Retention(
            db,
            self.leadership,
            history_after_s=s.history_after_s,
            retention_days=s.retention_days,
            partitions_ahead_days=s.partitions_ahead_days,
            interval_s=s.archive_interval_s,
            request_key_ttl_s=s.request_key_ttl_s,
            vacuum_after=s.vacuum_after_moved_runs,
        )
        self.services = [
            self.auth,
            self.listener,
            self.ingest,
            self.dispatcher,
            self.observe.logs,
            self.observe.streams,
            self.reconciler,
            self.scheduler,
            self.leadership,
            self.timeouts,
            self.liveness,
            self.push,
            self.sweeper,
            self.durable_timers,
            self.crons,
            self.schedule_timers,
            self.inbox,
            self.retention,
            self.bulk,
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
                schedules=self.schedules,
                ops=self.run_ops,
                crons=self.cron_admin,
                events=self.event_admin,
                webhooks=self.webhooks,
                signals=self.signals,
                secure_cookies=s.tls,
                bulk=self.bulk,
                dispatcher=self.dispatcher,
                observe=self.observe,
                ingest=self.ingest,
                workflow_ingest=self.workflow_ingest,
                definitions=self.definitions,
                metrics_cache_s=s.metrics_cache_s,
                metrics_max_series=s.metrics_max_series,
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
        try:
            # Secrets sealed by a key now in STOKER_WEBHOOK_OLD_SECRET_KEYS move to the
            # current one, so the old key can be dropped after this start.
            await self.webhooks.rekey()
        except ConfigError as exc:
            log.warning("webhook secrets: %s", exc)
        try:
            await self.push_endpoints.rekey()  # sealed with the same keys
        except ConfigError as exc:
            log.warning("push endpoint secrets: %s", exc)
        for service in self.services:
            await service.start()

        self._grpc = await open_server(
            s,
            self.auth,
            [
                WorkerService(self.auth, self.dispatcher),
                self.client_service,
                ScheduleService(self.auth, self.schedules),
                EventService(self.auth, self.event_admin),
                WebhookService(self.auth, self.webhooks),
                ObserveService(self.auth, self.observe),
                AdminService(self.auth, db, self.dispatcher, self.bulk),
                PushService(self.auth, db, self.push_endpoints, self.push, self.dispatcher),
            ],
        )
        if s.hatchet_enabled:
            from stoker.engine.hatchet import HatchetFrontDoor

            self.hatchet = HatchetFrontDoor(
                s,
                db,
                self.auth,
                self.definitions,
                self.ingest,
                self.dispatcher,
                self.watcher,
                self.workflow_ingest,
                self.schedules,
            )
            await self.hatchet.start()
            self.services.append(self.hatchet)
        address = f"{s.grpc_host}:{s.grpc_port}"
        log.info(
            "stoker engine %s ready: grpc=%s http=%s:%d tls=%s",
            self.engine_id,
            address,
            s.http_host,
            s.http_port,
            ("mutual" if s.tls_client_ca_file else "on") if s.tls else "off",
        )

    def _start_workflows(self, db: Executor) -> None:
        """Workflows: the wait registry and its sweeper, the workflow/child/event ingest,
        cancel and replay (DAG progression itself is made with the attempts that call it)."""
        from stoker.engine.controllers.schedules import ScheduleTimers
        from stoker.engine.controllers.sweeper import Sweeper
        from stoker.engine.events import EventAdmin
        from stoker.engine.flows.conditions import Conditions
        from stoker.engine.rpc.client_service import ClientService
        from stoker.engine.runs.bulk import BulkOps
        from stoker.engine.runs.ops import RunOps
        from stoker.engine.schedules import Schedules
        from stoker.engine.webhooks import Webhooks

        s = self.settings
        self.conditions = Conditions(db, self.signals, self.progression.progress)
        self.sweeper = Sweeper(
            db,
            self.conditions,
            self.progression,
            self.leadership,
            interval_s=min(1.0, s.controller_interval_s),
        )
        workflows = self.workflow_ingest
        # Scheduled runs: stored by request, fired by the leader through ingest.
        self.schedule_timers = ScheduleTimers(
            db,
            self.signals,
            self.ingest,
            workflows,
            self.leadership,
            interval_s=min(1.0, s.controller_interval_s),
        )
        self.schedules = Schedules(
            db,
            self.definitions,
            engine_id=self.engine_id,
            max_payload_bytes=s.max_payload_bytes,
            on_changed=self.schedule_timers.wake,
        )
        self.event_admin = EventAdmin(
            db, self.definitions, workflows, max_payload_bytes=s.max_payload_bytes
        )
        self.run_ops = RunOps(db, self.signals, self.dispatcher, self.attempts, self.progression)
        self.bulk = BulkOps(db, self.run_ops, engine_id=self.engine_id, cap=s.bulk_cap)
        # Transactional enqueue: runs applications committed into the inbox, on every replica.
        self.inbox = InboxDrainer(db, self.signals, self.definitions, self.ingest, workflows)
        cron_runs = CronRuns(self.ingest, self.workflow_ingest)
        self.crons = Crons(
            db,
            cron_runs,
            self.run_ops,
            self.leadership,
            self.definitions.paused_queues,
            interval_s=min(1.0, s.controller_interval_s),
        )
        self.signals.on_queued(self.crons.queued)
        self.cron_admin = CronAdmin(
            db,
            self.definitions,
            cron_runs,
            self.run_ops,
            engine_id=self.engine_id,
            on_change=self._crons_changed,
            horizon=timedelta(days=s.retention_days),
        )
        # Incoming webhooks: their events go through the same ingest as app.events.push.
        self.webhooks = Webhooks(db, workflows, SecretBox(s.webhook_keys()))
        self.client_service = ClientService(
            self.auth,
            self.definitions,
            self.ingest,
            self.workflow_ingest,
            self.watcher,
            self.run_ops,
            self.served,
            self.cron_admin,
        )

    def _crons_changed(self, tenant_id: int) -> None:
        """A tenant's crons or pauses changed (here, or on a replica that said so): the
        crons controller looks again, the definitions cache forgets the pauses, and the
        scheduler looks again (a resumed task's runs can be assigned)."""
        self.definitions.forget(tenant_id)
        self.crons.changed(tenant_id)
        self.signals.capacity(tenant_id)

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
    watchdog.enable_stack_dumps()
    watchdog.enable_task_dumps(loop)
    stalls = asyncio.create_task(watchdog.watch(settings.loop_stall_s), name="stoker-watchdog")
    try:
        await engine.start()
        await stop.wait()
    finally:
        await engine.stop()
        stalls.cancel()
        await asyncio.gather(stalls, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


__all__ = ["Engine", "serve"]
