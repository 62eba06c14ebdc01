"""The typed call seam: every call the SDK makes to the engine goes through here.

There is one method per RPC, a blocking one and an ``aio_`` one, each taking the request
message and returning the response. The methods live on :class:`Interceptor`, whose base
implementation passes each call to ``next``; the innermost link
(:class:`TransportCalls`) sends it over the app's :class:`~stoker._sdk.transport.Transport`
(retries, failover between replicas, error mapping). ``Stoker(interceptors=[...])`` wraps
that link with the given interceptors, the first of the list outermost, as Temporal's
Python SDK does with its ``OutboundInterceptor``: tracing, metrics or request logging
override the methods they care about and call ``self.next``::

    class CountTriggers(Interceptor):
        def trigger(self, request: pb.TriggerRequest) -> pb.TriggerResponse:
            TRIGGERS.inc(len(request.items))
            return self.next.trigger(request)

    app = Stoker(interceptors=[CountTriggers])

Besides the client calls, the chain sees each attempt a worker runs: :meth:`Interceptor.
aio_execute` wraps the call of the task function (the innermost link just calls it), which
is where tracing starts an attempt's span (:mod:`stoker._sdk.tracing`). A worker's stream
and heartbeats have their own channels (:mod:`stoker._sdk.worker`).

:class:`Connection` is what declared tasks, workflows, run references, ``app.runs`` and
``app.events`` depend on instead of the :class:`~stoker.Stoker` object itself: the call
chain, the payload limit, which tasks the engine has been told about, and the warnings
about tasks no worker serves.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from stoker._proto import admin_pb2 as apb
from stoker._proto import engine_pb2 as pb
from stoker._proto import events_pb2 as epb
from stoker._proto import observe_pb2 as opb
from stoker._proto import push_pb2 as ppb
from stoker._proto import schedules_pb2 as spb
from stoker._proto import webhooks_pb2 as hpb
from stoker._proto import workflows_pb2 as wpb
from stoker._sdk.transport import Transport, to_stoker_error
from stoker.errors import EngineUnavailableError

if TYPE_CHECKING:
    from stoker._sdk.context import Context
    from stoker._sdk.task import Task

log = logging.getLogger("stoker.client")

# AwaitRuns long-polls for up to its timeout_ms; the call itself may take this much longer.
_AWAIT_SLACK_S = 30.0


async def _server_stream(call: Any, transport: Transport) -> AsyncIterator[Any]:
    """The replies of a server-streaming call, its errors as Stoker errors; the call is
    cancelled when the caller stops reading (the engine then frees what it held)."""
    try:
        async for reply in call:
            yield reply
    except grpc.RpcError as exc:
        raise to_stoker_error(exc, transport.address) from None
    finally:
        call.cancel()


def request_key() -> str:
    """A new idempotency key for one trigger call. It goes in the request message, which
    the transport's retry loop resends as is, so every retry of the call carries the same
    key and the engine answers a retry with the runs of the first attempt
    (docs/idempotency.md)."""
    return uuid.uuid4().hex


class Interceptor:
    """One link of the chain the SDK's calls to the engine go through.

    Each method passes the call on to ``next`` unchanged; a subclass overrides those it
    wants to observe or alter. ``Stoker(interceptors=[...])`` takes the classes (or any
    callable that makes one from ``next``).
    """

    def __init__(self, next: Interceptor) -> None:
        self.next = next

    # -- attempts run by a worker -------------------------------------------------------

    async def aio_execute(self, ctx: Context, run: Callable[[], Awaitable[Any]]) -> Any:
        """Runs one attempt on this worker: ``run()`` calls the task function (with its
        timeout) and returns its result or raises; ``ctx`` says which run and attempt."""
        return await self.next.aio_execute(ctx, run)

    # -- tasks --------------------------------------------------------------------------

    def register_tasks(self, request: pb.RegisterTasksRequest) -> pb.RegisterTasksResponse:
        """Declares task definitions."""
        return self.next.register_tasks(request)

    async def aio_register_tasks(
        self, request: pb.RegisterTasksRequest
    ) -> pb.RegisterTasksResponse:
        return await self.next.aio_register_tasks(request)

    def trigger(self, request: pb.TriggerRequest) -> pb.TriggerResponse:
        """Enqueues task runs."""
        return self.next.trigger(request)

    async def aio_trigger(self, request: pb.TriggerRequest) -> pb.TriggerResponse:
        return await self.next.aio_trigger(request)

    def await_runs(self, request: pb.AwaitRunsRequest) -> pb.AwaitRunsResponse:
        """Long-polls for finished runs."""
        return self.next.await_runs(request)

    async def aio_await_runs(self, request: pb.AwaitRunsRequest) -> pb.AwaitRunsResponse:
        return await self.next.aio_await_runs(request)

    def put_rate_limit(self, request: pb.PutRateLimitRequest) -> pb.PutRateLimitResponse:
        """Creates or updates a static rate limit."""
        return self.next.put_rate_limit(request)

    async def aio_put_rate_limit(self, request: pb.PutRateLimitRequest) -> pb.PutRateLimitResponse:
        return await self.next.aio_put_rate_limit(request)

    def list_crons(self, request: pb.ListCronsRequest) -> pb.ListCronsResponse:
        """Reads the tenant's crons."""
        return self.next.list_crons(request)

    async def aio_list_crons(self, request: pb.ListCronsRequest) -> pb.ListCronsResponse:
        return await self.next.aio_list_crons(request)

    def create_cron(self, request: pb.CreateCronRequest) -> pb.CronResponse:
        """Creates a cron."""
        return self.next.create_cron(request)

    async def aio_create_cron(self, request: pb.CreateCronRequest) -> pb.CronResponse:
        return await self.next.aio_create_cron(request)

    def update_cron(self, request: pb.UpdateCronRequest) -> pb.CronResponse:
        """Changes a cron."""
        return self.next.update_cron(request)

    async def aio_update_cron(self, request: pb.UpdateCronRequest) -> pb.CronResponse:
        return await self.next.aio_update_cron(request)

    def delete_cron(self, request: pb.DeleteCronRequest) -> pb.DeleteCronResponse:
        """Deletes a cron."""
        return self.next.delete_cron(request)

    async def aio_delete_cron(self, request: pb.DeleteCronRequest) -> pb.DeleteCronResponse:
        return await self.next.aio_delete_cron(request)

    def trigger_cron(self, request: pb.TriggerCronRequest) -> pb.TriggerCronResponse:
        """Starts a cron's run now."""
        return self.next.trigger_cron(request)

    async def aio_trigger_cron(self, request: pb.TriggerCronRequest) -> pb.TriggerCronResponse:
        return await self.next.aio_trigger_cron(request)

    def backfill_cron(self, request: pb.BackfillCronRequest) -> pb.BackfillCronResponse:
        """Starts the runs of a cron's past ticks."""
        return self.next.backfill_cron(request)

    async def aio_backfill_cron(self, request: pb.BackfillCronRequest) -> pb.BackfillCronResponse:
        return await self.next.aio_backfill_cron(request)

    def pause(self, request: pb.PauseRequest) -> pb.PauseResponse:
        """Pauses a task or workflow."""
        return self.next.pause(request)

    async def aio_pause(self, request: pb.PauseRequest) -> pb.PauseResponse:
        return await self.next.aio_pause(request)

    def resume(self, request: pb.ResumeRequest) -> pb.ResumeResponse:
        """Resumes a task or workflow."""
        return self.next.resume(request)

    async def aio_resume(self, request: pb.ResumeRequest) -> pb.ResumeResponse:
        return await self.next.aio_resume(request)

    def list_paused(self, request: pb.ListPausedRequest) -> pb.ListPausedResponse:
        """Reads the paused tasks and workflows."""
        return self.next.list_paused(request)

    async def aio_list_paused(self, request: pb.ListPausedRequest) -> pb.ListPausedResponse:
        return await self.next.aio_list_paused(request)

    # -- workflows, children, events, cancel, replay, reset------------------------------

    def register_workflows(
        self, request: wpb.RegisterWorkflowsRequest
    ) -> wpb.RegisterWorkflowsResponse:
        """Declares workflows and their steps."""
        return self.next.register_workflows(request)

    async def aio_register_workflows(
        self, request: wpb.RegisterWorkflowsRequest
    ) -> wpb.RegisterWorkflowsResponse:
        return await self.next.aio_register_workflows(request)

    def trigger_workflows(
        self, request: wpb.TriggerWorkflowsRequest
    ) -> wpb.TriggerWorkflowsResponse:
        """Starts workflow runs."""
        return self.next.trigger_workflows(request)

    async def aio_trigger_workflows(
        self, request: wpb.TriggerWorkflowsRequest
    ) -> wpb.TriggerWorkflowsResponse:
        return await self.next.aio_trigger_workflows(request)

    def spawn_children(self, request: wpb.SpawnChildrenRequest) -> wpb.SpawnChildrenResponse:
        """Creates child runs of a running task."""
        return self.next.spawn_children(request)

    async def aio_spawn_children(
        self, request: wpb.SpawnChildrenRequest
    ) -> wpb.SpawnChildrenResponse:
        return await self.next.aio_spawn_children(request)

    def push_events(self, request: wpb.PushEventsRequest) -> wpb.PushEventsResponse:
        """Pushes user events."""
        return self.next.push_events(request)

    async def aio_push_events(self, request: wpb.PushEventsRequest) -> wpb.PushEventsResponse:
        return await self.next.aio_push_events(request)

    def cancel_runs(self, request: wpb.CancelRunsRequest) -> wpb.CancelRunsResponse:
        """Cancels runs by id or filter."""
        return self.next.cancel_runs(request)

    async def aio_cancel_runs(self, request: wpb.CancelRunsRequest) -> wpb.CancelRunsResponse:
        return await self.next.aio_cancel_runs(request)

    def replay_runs(self, request: wpb.ReplayRunsRequest) -> wpb.ReplayRunsResponse:
        """Replays finished runs by id or filter."""
        return self.next.replay_runs(request)

    async def aio_replay_runs(self, request: wpb.ReplayRunsRequest) -> wpb.ReplayRunsResponse:
        return await self.next.aio_replay_runs(request)

    # -- scheduled runs -----------------------------------------------------------------

    def create_schedules(self, request: spb.CreateSchedulesRequest) -> spb.CreateSchedulesResponse:
        """Stores scheduled runs."""
        return self.next.create_schedules(request)

    async def aio_create_schedules(
        self, request: spb.CreateSchedulesRequest
    ) -> spb.CreateSchedulesResponse:
        return await self.next.aio_create_schedules(request)

    def list_schedules(self, request: spb.ListSchedulesRequest) -> spb.ListSchedulesResponse:
        """Reads scheduled runs by filter."""
        return self.next.list_schedules(request)

    async def aio_list_schedules(
        self, request: spb.ListSchedulesRequest
    ) -> spb.ListSchedulesResponse:
        return await self.next.aio_list_schedules(request)

    def update_schedule(self, request: spb.UpdateScheduleRequest) -> spb.ScheduleInfo:
        """Reschedules a run, or changes its input or metadata."""
        return self.next.update_schedule(request)

    async def aio_update_schedule(self, request: spb.UpdateScheduleRequest) -> spb.ScheduleInfo:
        return await self.next.aio_update_schedule(request)

    def delete_schedules(self, request: spb.DeleteSchedulesRequest) -> spb.DeleteSchedulesResponse:
        """Deletes scheduled runs by id or filter."""
        return self.next.delete_schedules(request)

    async def aio_delete_schedules(
        self, request: spb.DeleteSchedulesRequest
    ) -> spb.DeleteSchedulesResponse:
        return await self.next.aio_delete_schedules(request)

    def reset_run(self, request: wpb.ResetRunRequest) -> wpb.ResetRunResponse:
        """Branches a durable run's log at a position and runs it again from there."""
        return self.next.reset_run(request)

    async def aio_reset_run(self, request: wpb.ResetRunRequest) -> wpb.ResetRunResponse:
        return await self.next.aio_reset_run(request)

    # -- logs, streams and run events ---------------------------------------------------

    def list_logs(self, request: opb.ListLogsRequest) -> opb.ListLogsResponse:
        """Reads a page of a run's log lines."""
        return self.next.list_logs(request)

    async def aio_list_logs(self, request: opb.ListLogsRequest) -> opb.ListLogsResponse:
        return await self.next.aio_list_logs(request)

    def read_stream(self, request: opb.ReadStreamRequest) -> AsyncIterator[opb.StreamChunk]:
        """Reads a run's live stream (server streaming, on the running loop's channel)."""
        return self.next.read_stream(request)

    def watch_runs(self, request: opb.WatchRunsRequest) -> AsyncIterator[opb.RunEvent]:
        """Watches runs' events (server streaming, on the running loop's channel)."""
        return self.next.watch_runs(request)

    # -- stored events and filters --------------------------------------------------------

    def list_events(self, request: epb.ListEventsRequest) -> epb.ListEventsResponse:
        """Reads stored events."""
        return self.next.list_events(request)

    async def aio_list_events(self, request: epb.ListEventsRequest) -> epb.ListEventsResponse:
        return await self.next.aio_list_events(request)

    def get_event(self, request: epb.GetEventRequest) -> epb.EventInfo:
        """Reads one event and the runs it started."""
        return self.next.get_event(request)

    async def aio_get_event(self, request: epb.GetEventRequest) -> epb.EventInfo:
        return await self.next.aio_get_event(request)

    def replay_event(self, request: epb.ReplayEventRequest) -> epb.ReplayEventResponse:
        """Starts an event's runs again."""
        return self.next.replay_event(request)

    async def aio_replay_event(self, request: epb.ReplayEventRequest) -> epb.ReplayEventResponse:
        return await self.next.aio_replay_event(request)

    def create_filter(self, request: epb.CreateFilterRequest) -> epb.FilterInfo:
        """Creates a filter of an event subscriber."""
        return self.next.create_filter(request)

    async def aio_create_filter(self, request: epb.CreateFilterRequest) -> epb.FilterInfo:
        return await self.next.aio_create_filter(request)

    def list_filters(self, request: epb.ListFiltersRequest) -> epb.ListFiltersResponse:
        """Reads filters."""
        return self.next.list_filters(request)

    async def aio_list_filters(self, request: epb.ListFiltersRequest) -> epb.ListFiltersResponse:
        return await self.next.aio_list_filters(request)

    def update_filter(self, request: epb.UpdateFilterRequest) -> epb.FilterInfo:
        """Changes a filter."""
        return self.next.update_filter(request)

    async def aio_update_filter(self, request: epb.UpdateFilterRequest) -> epb.FilterInfo:
        return await self.next.aio_update_filter(request)

    def delete_filter(self, request: epb.DeleteFilterRequest) -> epb.DeleteFilterResponse:
        """Deletes a filter."""
        return self.next.delete_filter(request)

    async def aio_delete_filter(self, request: epb.DeleteFilterRequest) -> epb.DeleteFilterResponse:
        return await self.next.aio_delete_filter(request)

    # -- incoming webhooks --------------------------------------------------------------

    def create_webhook(self, request: hpb.CreateWebhookRequest) -> hpb.WebhookInfo:
        """Stores an incoming webhook."""
        return self.next.create_webhook(request)

    async def aio_create_webhook(self, request: hpb.CreateWebhookRequest) -> hpb.WebhookInfo:
        return await self.next.aio_create_webhook(request)

    # -- HTTP push workers (docs/http-workers.md) ---------------------------------------

    async def aio_register_push_endpoint(
        self, request: ppb.RegisterPushEndpointRequest
    ) -> ppb.PushEndpointInfo:
        """Creates or updates an HTTP push endpoint."""
        return await self.next.aio_register_push_endpoint(request)

    async def aio_report_push_events(
        self, request: ppb.ReportPushEventsRequest
    ) -> ppb.ReportPushEventsResponse:
        """Reports the end of attempts an HTTP push endpoint answered with 202."""
        return await self.next.aio_report_push_events(request)

    async def aio_delete_push_endpoint(
        self, request: ppb.DeletePushEndpointRequest
    ) -> ppb.DeletePushEndpointResponse:
        """Deletes an HTTP push endpoint."""
        return await self.next.aio_delete_push_endpoint(request)

    def list_webhooks(self, request: hpb.ListWebhooksRequest) -> hpb.ListWebhooksResponse:
        """Reads the tenant's webhooks."""
        return self.next.list_webhooks(request)

    async def aio_list_webhooks(self, request: hpb.ListWebhooksRequest) -> hpb.ListWebhooksResponse:
        return await self.next.aio_list_webhooks(request)

    def get_webhook(self, request: hpb.GetWebhookRequest) -> hpb.WebhookInfo:
        """Reads one webhook."""
        return self.next.get_webhook(request)

    async def aio_get_webhook(self, request: hpb.GetWebhookRequest) -> hpb.WebhookInfo:
        return await self.next.aio_get_webhook(request)

    def update_webhook(self, request: hpb.UpdateWebhookRequest) -> hpb.WebhookInfo:
        """Changes a webhook's auth or expressions."""
        return self.next.update_webhook(request)

    async def aio_update_webhook(self, request: hpb.UpdateWebhookRequest) -> hpb.WebhookInfo:
        return await self.next.aio_update_webhook(request)

    def delete_webhook(self, request: hpb.DeleteWebhookRequest) -> hpb.DeleteWebhookResponse:
        """Deletes a webhook."""
        return self.next.delete_webhook(request)

    async def aio_delete_webhook(
        self, request: hpb.DeleteWebhookRequest
    ) -> hpb.DeleteWebhookResponse:
        return await self.next.aio_delete_webhook(request)

    # -- runs, workers, rate limits and bulk operations (Admin) ----------------------

    def list_runs(self, request: apb.ListRunsRequest) -> apb.ListRunsResponse:
        """Reads a page of the tenant's task runs."""
        return self.next.list_runs(request)

    async def aio_list_runs(self, request: apb.ListRunsRequest) -> apb.ListRunsResponse:
        return await self.next.aio_list_runs(request)

    def get_run(self, request: apb.GetRunRequest) -> apb.RunInfo:
        """Reads one task run."""
        return self.next.get_run(request)

    async def aio_get_run(self, request: apb.GetRunRequest) -> apb.RunInfo:
        return await self.next.aio_get_run(request)

    def list_workers(self, request: apb.ListWorkersRequest) -> apb.ListWorkersResponse:
        """Reads the tenant's workers."""
        return self.next.list_workers(request)

    async def aio_list_workers(self, request: apb.ListWorkersRequest) -> apb.ListWorkersResponse:
        return await self.next.aio_list_workers(request)

    def get_worker(self, request: apb.WorkerRequest) -> apb.WorkerInfo:
        """Reads one worker."""
        return self.next.get_worker(request)

    async def aio_get_worker(self, request: apb.WorkerRequest) -> apb.WorkerInfo:
        return await self.next.aio_get_worker(request)

    def pause_worker(self, request: apb.WorkerRequest) -> apb.WorkerInfo:
        """Pauses a worker."""
        return self.next.pause_worker(request)

    async def aio_pause_worker(self, request: apb.WorkerRequest) -> apb.WorkerInfo:
        return await self.next.aio_pause_worker(request)

    def resume_worker(self, request: apb.WorkerRequest) -> apb.WorkerInfo:
        """Resumes a worker."""
        return self.next.resume_worker(request)

    async def aio_resume_worker(self, request: apb.WorkerRequest) -> apb.WorkerInfo:
        return await self.next.aio_resume_worker(request)

    def list_rate_limits(self, request: apb.ListRateLimitsRequest) -> apb.ListRateLimitsResponse:
        """Reads the tenant's rate limits."""
        return self.next.list_rate_limits(request)

    async def aio_list_rate_limits(
        self, request: apb.ListRateLimitsRequest
    ) -> apb.ListRateLimitsResponse:
        return await self.next.aio_list_rate_limits(request)

    def delete_rate_limit(self, request: apb.DeleteRateLimitRequest) -> apb.DeleteRateLimitResponse:
        """Deletes a rate limit."""
        return self.next.delete_rate_limit(request)

    async def aio_delete_rate_limit(
        self, request: apb.DeleteRateLimitRequest
    ) -> apb.DeleteRateLimitResponse:
        return await self.next.aio_delete_rate_limit(request)

    def start_bulk_operation(self, request: apb.StartBulkOperationRequest) -> apb.BulkOperationInfo:
        """Starts a bulk cancel or replay."""
        return self.next.start_bulk_operation(request)

    async def aio_start_bulk_operation(
        self, request: apb.StartBulkOperationRequest
    ) -> apb.BulkOperationInfo:
        return await self.next.aio_start_bulk_operation(request)

    def get_bulk_operation(self, request: apb.GetBulkOperationRequest) -> apb.BulkOperationInfo:
        """Reads a bulk operation's progress."""
        return self.next.get_bulk_operation(request)

    async def aio_get_bulk_operation(
        self, request: apb.GetBulkOperationRequest
    ) -> apb.BulkOperationInfo:
        return await self.next.aio_get_bulk_operation(request)


InterceptorFactory = Callable[[Interceptor], Interceptor]
"""Makes a link of the chain around ``next``: an :class:`Interceptor` subclass will do."""


class TransportCalls(Interceptor):
    """The innermost link: sends each call over the transport."""

    def __init__(self, transport: Callable[[], Transport]) -> None:  # no next: the end
        self._transport = transport

    async def aio_execute(self, ctx: Context, run: Callable[[], Awaitable[Any]]) -> Any:
        return await run()

    def register_tasks(self, request: pb.RegisterTasksRequest) -> pb.RegisterTasksResponse:
        resp: pb.RegisterTasksResponse = self._transport().call(
            lambda s: s.engine.RegisterTasks, request
        )
        return resp

    async def aio_register_tasks(
        self, request: pb.RegisterTasksRequest
    ) -> pb.RegisterTasksResponse:
        resp: pb.RegisterTasksResponse = await self._transport().acall(
            lambda s: s.engine.RegisterTasks, request
        )
        return resp

    def trigger(self, request: pb.TriggerRequest) -> pb.TriggerResponse:
        resp: pb.TriggerResponse = self._transport().call(lambda s: s.engine.Trigger, request)
        return resp

    async def aio_trigger(self, request: pb.TriggerRequest) -> pb.TriggerResponse:
        resp: pb.TriggerResponse = await self._transport().acall(
            lambda s: s.engine.Trigger, request
        )
        return resp

    def await_runs(self, request: pb.AwaitRunsRequest) -> pb.AwaitRunsResponse:
        timeout = request.timeout_ms / 1000 + _AWAIT_SLACK_S
        resp: pb.AwaitRunsResponse = self._transport().call(
            lambda s: s.engine.AwaitRuns, request, timeout=timeout
        )
        return resp

    async def aio_await_runs(self, request: pb.AwaitRunsRequest) -> pb.AwaitRunsResponse:
        timeout = request.timeout_ms / 1000 + _AWAIT_SLACK_S
        resp: pb.AwaitRunsResponse = await self._transport().acall(
            lambda s: s.engine.AwaitRuns, request, timeout=timeout
        )
        return resp

    def put_rate_limit(self, request: pb.PutRateLimitRequest) -> pb.PutRateLimitResponse:
        resp: pb.PutRateLimitResponse = self._transport().call(
            lambda s: s.engine.PutRateLimit, request
        )
        return resp

    async def aio_put_rate_limit(self, request: pb.PutRateLimitRequest) -> pb.PutRateLimitResponse:
        resp: pb.PutRateLimitResponse = await self._transport().acall(
            lambda s: s.engine.PutRateLimit, request
        )
        return resp

    def list_crons(self, request: pb.ListCronsRequest) -> pb.ListCronsResponse:
        resp: pb.ListCronsResponse = self._transport().call(lambda s: s.engine.ListCrons, request)
        return resp

    async def aio_list_crons(self, request: pb.ListCronsRequest) -> pb.ListCronsResponse:
        resp: pb.ListCronsResponse = await self._transport().acall(
            lambda s: s.engine.ListCrons, request
        )
        return resp

    def create_cron(self, request: pb.CreateCronRequest) -> pb.CronResponse:
        resp: pb.CronResponse = self._transport().call(lambda s: s.engine.CreateCron, request)
        return resp

    async def aio_create_cron(self, request: pb.CreateCronRequest) -> pb.CronResponse:
        resp: pb.CronResponse = await self._transport().acall(
            lambda s: s.engine.CreateCron, request
        )
        return resp

    def update_cron(self, request: pb.UpdateCronRequest) -> pb.CronResponse:
        resp: pb.CronResponse = self._transport().call(lambda s: s.engine.UpdateCron, request)
        return resp

    async def aio_update_cron(self, request: pb.UpdateCronRequest) -> pb.CronResponse:
        resp: pb.CronResponse = await self._transport().acall(
            lambda s: s.engine.UpdateCron, request
        )
        return resp

    def delete_cron(self, request: pb.DeleteCronRequest) -> pb.DeleteCronResponse:
        resp: pb.DeleteCronResponse = self._transport().call(lambda s: s.engine.DeleteCron, request)
        return resp

    async def aio_delete_cron(self, request: pb.DeleteCronRequest) -> pb.DeleteCronResponse:
        resp: pb.DeleteCronResponse = await self._transport().acall(
            lambda s: s.engine.DeleteCron, request
        )
        return resp

    def trigger_cron(self, request: pb.TriggerCronRequest) -> pb.TriggerCronResponse:
        resp: pb.TriggerCronResponse = self._transport().call(
            lambda s: s.engine.TriggerCron, request
        )
        return resp

    async def aio_trigger_cron(self, request: pb.TriggerCronRequest) -> pb.TriggerCronResponse:
        resp: pb.TriggerCronResponse = await self._transport().acall(
            lambda s: s.engine.TriggerCron, request
        )
        return resp

    def backfill_cron(self, request: pb.BackfillCronRequest) -> pb.BackfillCronResponse:
        resp: pb.BackfillCronResponse = self._transport().call(
            lambda s: s.engine.BackfillCron, request
        )
        return resp

    async def aio_backfill_cron(self, request: pb.BackfillCronRequest) -> pb.BackfillCronResponse:
        resp: pb.BackfillCronResponse = await self._transport().acall(
            lambda s: s.engine.BackfillCron, request
        )
        return resp

    def pause(self, request: pb.PauseRequest) -> pb.PauseResponse:
        resp: pb.PauseResponse = self._transport().call(lambda s: s.engine.Pause, request)
        return resp

    async def aio_pause(self, request: pb.PauseRequest) -> pb.PauseResponse:
        resp: pb.PauseResponse = await self._transport().acall(lambda s: s.engine.Pause, request)
        return resp

    def resume(self, request: pb.ResumeRequest) -> pb.ResumeResponse:
        resp: pb.ResumeResponse = self._transport().call(lambda s: s.engine.Resume, request)
        return resp

    async def aio_resume(self, request: pb.ResumeRequest) -> pb.ResumeResponse:
        resp: pb.ResumeResponse = await self._transport().acall(lambda s: s.engine.Resume, request)
        return resp

    def list_paused(self, request: pb.ListPausedRequest) -> pb.ListPausedResponse:
        resp: pb.ListPausedResponse = self._transport().call(lambda s: s.engine.ListPaused, request)
        return resp

    async def aio_list_paused(self, request: pb.ListPausedRequest) -> pb.ListPausedResponse:
        resp: pb.ListPausedResponse = await self._transport().acall(
            lambda s: s.engine.ListPaused, request
        )
        return resp

    def register_workflows(
        self, request: wpb.RegisterWorkflowsRequest
    ) -> wpb.RegisterWorkflowsResponse:
        resp: wpb.RegisterWorkflowsResponse = self._transport().call(
            lambda s: s.workflows.RegisterWorkflows, request
        )
        return resp

    async def aio_register_workflows(
        self, request: wpb.RegisterWorkflowsRequest
    ) -> wpb.RegisterWorkflowsResponse:
        resp: wpb.RegisterWorkflowsResponse = await self._transport().acall(
            lambda s: s.workflows.RegisterWorkflows, request
        )
        return resp

    def trigger_workflows(
        self, request: wpb.TriggerWorkflowsRequest
    ) -> wpb.TriggerWorkflowsResponse:
        resp: wpb.TriggerWorkflowsResponse = self._transport().call(
            lambda s: s.workflows.TriggerWorkflows, request
        )
        return resp

    async def aio_trigger_workflows(
        self, request: wpb.TriggerWorkflowsRequest
    ) -> wpb.TriggerWorkflowsResponse:
        resp: wpb.TriggerWorkflowsResponse = await self._transport().acall(
            lambda s: s.workflows.TriggerWorkflows, request
        )
        return resp

    def spawn_children(self, request: wpb.SpawnChildrenRequest) -> wpb.SpawnChildrenResponse:
        resp: wpb.SpawnChildrenResponse = self._transport().call(
            lambda s: s.workflows.SpawnChildren, request
        )
        return resp

    async def aio_spawn_children(
        self, request: wpb.SpawnChildrenRequest
    ) -> wpb.SpawnChildrenResponse:
        resp: wpb.SpawnChildrenResponse = await self._transport().acall(
            lambda s: s.workflows.SpawnChildren, request
        )
        return resp

    def push_events(self, request: wpb.PushEventsRequest) -> wpb.PushEventsResponse:
        resp: wpb.PushEventsResponse = self._transport().call(
            lambda s: s.workflows.PushEvents, request
        )
        return resp

    async def aio_push_events(self, request: wpb.PushEventsRequest) -> wpb.PushEventsResponse:
        resp: wpb.PushEventsResponse = await self._transport().acall(
            lambda s: s.workflows.PushEvents, request
        )
        return resp

    def cancel_runs(self, request: wpb.CancelRunsRequest) -> wpb.CancelRunsResponse:
        resp: wpb.CancelRunsResponse = self._transport().call(
            lambda s: s.workflows.CancelRuns, request
        )
        return resp

    async def aio_cancel_runs(self, request: wpb.CancelRunsRequest) -> wpb.CancelRunsResponse:
        resp: wpb.CancelRunsResponse = await self._transport().acall(
            lambda s: s.workflows.CancelRuns, request
        )
        return resp

    def replay_runs(self, request: wpb.ReplayRunsRequest) -> wpb.ReplayRunsResponse:
        resp: wpb.ReplayRunsResponse = self._transport().call(
            lambda s: s.workflows.ReplayRuns, request
        )
        return resp

    async def aio_replay_runs(self, request: wpb.ReplayRunsRequest) -> wpb.ReplayRunsResponse:
        resp: wpb.ReplayRunsResponse = await self._transport().acall(
            lambda s: s.workflows.ReplayRuns, request
        )
        return resp

    def create_schedules(self, request: spb.CreateSchedulesRequest) -> spb.CreateSchedulesResponse:
        resp: spb.CreateSchedulesResponse = self._transport().call(
            lambda s: s.schedules.CreateSchedules, request
        )
        return resp

    async def aio_create_schedules(
        self, request: spb.CreateSchedulesRequest
    ) -> spb.CreateSchedulesResponse:
        resp: spb.CreateSchedulesResponse = await self._transport().acall(
            lambda s: s.schedules.CreateSchedules, request
        )
        return resp

    def list_schedules(self, request: spb.ListSchedulesRequest) -> spb.ListSchedulesResponse:
        resp: spb.ListSchedulesResponse = self._transport().call(
            lambda s: s.schedules.ListSchedules, request
        )
        return resp

    async def aio_list_schedules(
        self, request: spb.ListSchedulesRequest
    ) -> spb.ListSchedulesResponse:
        resp: spb.ListSchedulesResponse = await self._transport().acall(
            lambda s: s.schedules.ListSchedules, request
        )
        return resp

    def update_schedule(self, request: spb.UpdateScheduleRequest) -> spb.ScheduleInfo:
        resp: spb.ScheduleInfo = self._transport().call(
            lambda s: s.schedules.UpdateSchedule, request
        )
        return resp

    async def aio_update_schedule(self, request: spb.UpdateScheduleRequest) -> spb.ScheduleInfo:
        resp: spb.ScheduleInfo = await self._transport().acall(
            lambda s: s.schedules.UpdateSchedule, request
        )
        return resp

    def delete_schedules(self, request: spb.DeleteSchedulesRequest) -> spb.DeleteSchedulesResponse:
        resp: spb.DeleteSchedulesResponse = self._transport().call(
            lambda s: s.schedules.DeleteSchedules, request
        )
        return resp

    async def aio_delete_schedules(
        self, request: spb.DeleteSchedulesRequest
    ) -> spb.DeleteSchedulesResponse:
        resp: spb.DeleteSchedulesResponse = await self._transport().acall(
            lambda s: s.schedules.DeleteSchedules, request
        )
        return resp

    def reset_run(self, request: wpb.ResetRunRequest) -> wpb.ResetRunResponse:
        resp: wpb.ResetRunResponse = self._transport().call(lambda s: s.workflows.ResetRun, request)
        return resp

    async def aio_reset_run(self, request: wpb.ResetRunRequest) -> wpb.ResetRunResponse:
        resp: wpb.ResetRunResponse = await self._transport().acall(
            lambda s: s.workflows.ResetRun, request
        )
        return resp

    def list_logs(self, request: opb.ListLogsRequest) -> opb.ListLogsResponse:
        resp: opb.ListLogsResponse = self._transport().call(lambda s: s.observe.ListLogs, request)
        return resp

    async def aio_list_logs(self, request: opb.ListLogsRequest) -> opb.ListLogsResponse:
        resp: opb.ListLogsResponse = await self._transport().acall(
            lambda s: s.observe.ListLogs, request
        )
        return resp

    async def read_stream(self, request: opb.ReadStreamRequest) -> AsyncIterator[opb.StreamChunk]:
        transport = self._transport()
        address = transport.address
        call = transport.aio_stubs(address).observe.ReadStream(request, metadata=transport.metadata)
        try:
            async for chunk in _server_stream(call, transport):
                yield chunk
        except EngineUnavailableError:
            transport.next_address(after=address)  # the caller may resume on the next
            raise

    async def watch_runs(self, request: opb.WatchRunsRequest) -> AsyncIterator[opb.RunEvent]:
        transport = self._transport()
        address = transport.address
        call = transport.aio_stubs(address).observe.WatchRuns(request, metadata=transport.metadata)
        try:
            async for event in _server_stream(call, transport):
                yield event
        except EngineUnavailableError:
            transport.next_address(after=address)
            raise

    def list_events(self, request: epb.ListEventsRequest) -> epb.ListEventsResponse:
        resp: epb.ListEventsResponse = self._transport().call(
            lambda s: s.events.ListEvents, request
        )
        return resp

    async def aio_list_events(self, request: epb.ListEventsRequest) -> epb.ListEventsResponse:
        resp: epb.ListEventsResponse = await self._transport().acall(
            lambda s: s.events.ListEvents, request
        )
        return resp

    def get_event(self, request: epb.GetEventRequest) -> epb.EventInfo:
        resp: epb.EventInfo = self._transport().call(lambda s: s.events.GetEvent, request)
        return resp

    async def aio_get_event(self, request: epb.GetEventRequest) -> epb.EventInfo:
        resp: epb.EventInfo = await self._transport().acall(lambda s: s.events.GetEvent, request)
        return resp

    def replay_event(self, request: epb.ReplayEventRequest) -> epb.ReplayEventResponse:
        resp: epb.ReplayEventResponse = self._transport().call(
            lambda s: s.events.ReplayEvent, request
        )
        return resp

    async def aio_replay_event(self, request: epb.ReplayEventRequest) -> epb.ReplayEventResponse:
        resp: epb.ReplayEventResponse = await self._transport().acall(
            lambda s: s.events.ReplayEvent, request
        )
        return resp

    def create_filter(self, request: epb.CreateFilterRequest) -> epb.FilterInfo:
        resp: epb.FilterInfo = self._transport().call(lambda s: s.events.CreateFilter, request)
        return resp

    async def aio_create_filter(self, request: epb.CreateFilterRequest) -> epb.FilterInfo:
        resp: epb.FilterInfo = await self._transport().acall(
            lambda s: s.events.CreateFilter, request
        )
        return resp

    def list_filters(self, request: epb.ListFiltersRequest) -> epb.ListFiltersResponse:
        resp: epb.ListFiltersResponse = self._transport().call(
            lambda s: s.events.ListFilters, request
        )
        return resp

    async def aio_list_filters(self, request: epb.ListFiltersRequest) -> epb.ListFiltersResponse:
        resp: epb.ListFiltersResponse = await self._transport().acall(
            lambda s: s.events.ListFilters, request
        )
        return resp

    def update_filter(self, request: epb.UpdateFilterRequest) -> epb.FilterInfo:
        resp: epb.FilterInfo = self._transport().call(lambda s: s.events.UpdateFilter, request)
        return resp

    async def aio_update_filter(self, request: epb.UpdateFilterRequest) -> epb.FilterInfo:
        resp: epb.FilterInfo = await self._transport().acall(
            lambda s: s.events.UpdateFilter, request
        )
        return resp

    def delete_filter(self, request: epb.DeleteFilterRequest) -> epb.DeleteFilterResponse:
        resp: epb.DeleteFilterResponse = self._transport().call(
            lambda s: s.events.DeleteFilter, request
        )
        return resp

    async def aio_delete_filter(self, request: epb.DeleteFilterRequest) -> epb.DeleteFilterResponse:
        resp: epb.DeleteFilterResponse = await self._transport().acall(
            lambda s: s.events.DeleteFilter, request
        )
        return resp

    def create_webhook(self, request: hpb.CreateWebhookRequest) -> hpb.WebhookInfo:
        resp: hpb.WebhookInfo = self._transport().call(lambda s: s.webhooks.CreateWebhook, request)
        return resp

    async def aio_create_webhook(self, request: hpb.CreateWebhookRequest) -> hpb.WebhookInfo:
        resp: hpb.WebhookInfo = await self._transport().acall(
            lambda s: s.webhooks.CreateWebhook, request
        )
        return resp

    async def aio_register_push_endpoint(
        self, request: ppb.RegisterPushEndpointRequest
    ) -> ppb.PushEndpointInfo:
        resp: ppb.PushEndpointInfo = await self._transport().acall(
            lambda s: s.push.RegisterPushEndpoint, request
        )
        return resp

    async def aio_report_push_events(
        self, request: ppb.ReportPushEventsRequest
    ) -> ppb.ReportPushEventsResponse:
        resp: ppb.ReportPushEventsResponse = await self._transport().acall(
            lambda s: s.push.ReportPushEvents, request
        )
        return resp

    async def aio_delete_push_endpoint(
        self, request: ppb.DeletePushEndpointRequest
    ) -> ppb.DeletePushEndpointResponse:
        resp: ppb.DeletePushEndpointResponse = await self._transport().acall(
            lambda s: s.push.DeletePushEndpoint, request
        )
        return resp

    def list_webhooks(self, request: hpb.ListWebhooksRequest) -> hpb.ListWebhooksResponse:
        resp: hpb.ListWebhooksResponse = self._transport().call(
            lambda s: s.webhooks.ListWebhooks, request
        )
        return resp

    async def aio_list_webhooks(self, request: hpb.ListWebhooksRequest) -> hpb.ListWebhooksResponse:
        resp: hpb.ListWebhooksResponse = await self._transport().acall(
            lambda s: s.webhooks.ListWebhooks, request
        )
        return resp

    def get_webhook(self, request: hpb.GetWebhookRequest) -> hpb.WebhookInfo:
        resp: hpb.WebhookInfo = self._transport().call(lambda s: s.webhooks.GetWebhook, request)
        return resp

    async def aio_get_webhook(self, request: hpb.GetWebhookRequest) -> hpb.WebhookInfo:
        resp: hpb.WebhookInfo = await self._transport().acall(
            lambda s: s.webhooks.GetWebhook, request
        )
        return resp

    def update_webhook(self, request: hpb.UpdateWebhookRequest) -> hpb.WebhookInfo:
        resp: hpb.WebhookInfo = self._transport().call(lambda s: s.webhooks.UpdateWebhook, request)
        return resp

    async def aio_update_webhook(self, request: hpb.UpdateWebhookRequest) -> hpb.WebhookInfo:
        resp: hpb.WebhookInfo = await self._transport().acall(
            lambda s: s.webhooks.UpdateWebhook, request
        )
        return resp

    def delete_webhook(self, request: hpb.DeleteWebhookRequest) -> hpb.DeleteWebhookResponse:
        resp: hpb.DeleteWebhookResponse = self._transport().call(
            lambda s: s.webhooks.DeleteWebhook, request
        )
        return resp

    async def aio_delete_webhook(
        self, request: hpb.DeleteWebhookRequest
    ) -> hpb.DeleteWebhookResponse:
        resp: hpb.DeleteWebhookResponse = await self._transport().acall(
            lambda s: s.webhooks.DeleteWebhook, request
        )
        return resp

    def list_runs(self, request: apb.ListRunsRequest) -> apb.ListRunsResponse:
        resp: apb.ListRunsResponse = self._transport().call(lambda s: s.admin.ListRuns, request)
        return resp

    async def aio_list_runs(self, request: apb.ListRunsRequest) -> apb.ListRunsResponse:
        resp: apb.ListRunsResponse = await self._transport().acall(
            lambda s: s.admin.ListRuns, request
        )
        return resp

    def get_run(self, request: apb.GetRunRequest) -> apb.RunInfo:
        resp: apb.RunInfo = self._transport().call(lambda s: s.admin.GetRun, request)
        return resp

    async def aio_get_run(self, request: apb.GetRunRequest) -> apb.RunInfo:
        resp: apb.RunInfo = await self._transport().acall(lambda s: s.admin.GetRun, request)
        return resp

    def list_workers(self, request: apb.ListWorkersRequest) -> apb.ListWorkersResponse:
        resp: apb.ListWorkersResponse = self._transport().call(
            lambda s: s.admin.ListWorkers, request
        )
        return resp

    async def aio_list_workers(self, request: apb.ListWorkersRequest) -> apb.ListWorkersResponse:
        resp: apb.ListWorkersResponse = await self._transport().acall(
            lambda s: s.admin.ListWorkers, request
        )
        return resp

    def get_worker(self, request: apb.WorkerRequest) -> apb.WorkerInfo:
        resp: apb.WorkerInfo = self._transport().call(lambda s: s.admin.GetWorker, request)
        return resp

    async def aio_get_worker(self, request: apb.WorkerRequest) -> apb.WorkerInfo:
        resp: apb.WorkerInfo = await self._transport().acall(lambda s: s.admin.GetWorker, request)
        return resp

    def pause_worker(self, request: apb.WorkerRequest) -> apb.WorkerInfo:
        resp: apb.WorkerInfo = self._transport().call(lambda s: s.admin.PauseWorker, request)
        return resp

    async def aio_pause_worker(self, request: apb.WorkerRequest) -> apb.WorkerInfo:
        resp: apb.WorkerInfo = await self._transport().acall(lambda s: s.admin.PauseWorker, request)
        return resp

    def resume_worker(self, request: apb.WorkerRequest) -> apb.WorkerInfo:
        resp: apb.WorkerInfo = self._transport().call(lambda s: s.admin.ResumeWorker, request)
        return resp

    async def aio_resume_worker(self, request: apb.WorkerRequest) -> apb.WorkerInfo:
        resp: apb.WorkerInfo = await self._transport().acall(
            lambda s: s.admin.ResumeWorker, request
        )
        return resp

    def list_rate_limits(self, request: apb.ListRateLimitsRequest) -> apb.ListRateLimitsResponse:
        resp: apb.ListRateLimitsResponse = self._transport().call(
            lambda s: s.admin.ListRateLimits, request
        )
        return resp

    async def aio_list_rate_limits(
        self, request: apb.ListRateLimitsRequest
    ) -> apb.ListRateLimitsResponse:
        resp: apb.ListRateLimitsResponse = await self._transport().acall(
            lambda s: s.admin.ListRateLimits, request
        )
        return resp

    def delete_rate_limit(self, request: apb.DeleteRateLimitRequest) -> apb.DeleteRateLimitResponse:
        resp: apb.DeleteRateLimitResponse = self._transport().call(
            lambda s: s.admin.DeleteRateLimit, request
        )
        return resp

    async def aio_delete_rate_limit(
        self, request: apb.DeleteRateLimitRequest
    ) -> apb.DeleteRateLimitResponse:
        resp: apb.DeleteRateLimitResponse = await self._transport().acall(
            lambda s: s.admin.DeleteRateLimit, request
        )
        return resp

    def start_bulk_operation(self, request: apb.StartBulkOperationRequest) -> apb.BulkOperationInfo:
        resp: apb.BulkOperationInfo = self._transport().call(
            lambda s: s.admin.StartBulkOperation, request
        )
        return resp

    async def aio_start_bulk_operation(
        self, request: apb.StartBulkOperationRequest
    ) -> apb.BulkOperationInfo:
        resp: apb.BulkOperationInfo = await self._transport().acall(
            lambda s: s.admin.StartBulkOperation, request
        )
        return resp

    def get_bulk_operation(self, request: apb.GetBulkOperationRequest) -> apb.BulkOperationInfo:
        resp: apb.BulkOperationInfo = self._transport().call(
            lambda s: s.admin.GetBulkOperation, request
        )
        return resp

    async def aio_get_bulk_operation(
        self, request: apb.GetBulkOperationRequest
    ) -> apb.BulkOperationInfo:
        resp: apb.BulkOperationInfo = await self._transport().acall(
            lambda s: s.admin.GetBulkOperation, request
        )
        return resp


def chain(innermost: Interceptor, interceptors: Sequence[InterceptorFactory]) -> Interceptor:
    """``innermost`` wrapped by each interceptor, the first of the list outermost."""
    calls = innermost
    for make in reversed(interceptors):
        calls = make(calls)
        if not isinstance(calls, Interceptor):
            raise TypeError(
                f"interceptors=: {make!r} made {type(calls).__name__}, not an Interceptor"
            )
    return calls


class Triggered(list[str]):
    """The run ids a trigger call answered, with ``deduplicated[i]`` True where an
    idempotency key named an existing run (an engine that does not know keys sends none:
    all False)."""

    def __init__(self, ids: Iterable[str], deduplicated: Iterable[bool] = ()) -> None:
        super().__init__(ids)
        flags = list(deduplicated)
        self.deduplicated: list[bool] = flags if len(flags) == len(self) else [False] * len(self)


class Connection:
    """An app's side of the engine, as its declared objects use it: the call chain, the
    payload limit, which tasks the engine was told about, and the one-time warnings about
    tasks that no connected worker serves."""

    def __init__(
        self,
        transport: Callable[[], Transport],
        max_payload_bytes: Callable[[], int],
        interceptors: Sequence[InterceptorFactory] = (),
        schema_name: Callable[[], str] = lambda: "stoker",
    ) -> None:
        self.calls: Interceptor = chain(TransportCalls(transport), interceptors)
        """Every call to the engine: ``connection.calls.trigger(request)``."""
        self._max_payload_bytes = max_payload_bytes
        self._schema_name = schema_name
        self._lock = threading.Lock()
        self._registered: set[str] = set()
        self._warned_unserved: set[str] = set()

    @property
    def max_payload_bytes(self) -> int:
        """The largest input or output the engine accepts, in bytes."""
        return self._max_payload_bytes()

    @property
    def schema_name(self) -> str:
        """The engine's Postgres schema, for transactional enqueue."""
        return self._schema_name()

    # -- registration -------------------------------------------------------------------

    @staticmethod
    def _definitions(tasks: Sequence[Task[Any, Any]]) -> pb.RegisterTasksRequest:
        return pb.RegisterTasksRequest(
            tasks=[
                pb.TaskDefinition(
                    name=t.name, config=t.definition_config().model_dump_json().encode()
                )
                for t in tasks
            ]
        )

    def register(self, tasks: Sequence[Task[Any, Any]]) -> None:
        """Declares ``tasks`` to the engine."""
        self.calls.register_tasks(self._definitions(tasks))
        self.mark_registered(t.name for t in tasks)

    async def aio_register(self, tasks: Sequence[Task[Any, Any]]) -> None:
        await self.calls.aio_register_tasks(self._definitions(tasks))
        self.mark_registered(t.name for t in tasks)

    def is_registered(self, task_name: str) -> bool:
        """Whether this app already declared the task to the engine."""
        return task_name in self._registered

    def mark_registered(self, task_names: Iterable[str]) -> None:
        """Notes tasks declared to the engine (workflows register their steps themselves)."""
        with self._lock:
            self._registered.update(task_names)

    # -- triggering ---------------------------------------------------------------------

    def trigger(self, task: Task[Any, Any] | None, items: list[pb.TriggerItem]) -> Triggered:
        """Enqueues runs (declaring ``task`` first if the engine was not told of it yet);
        their run ids."""
        if task is not None and not self.is_registered(task.name):
            self.register([task])
        resp = self.calls.trigger(pb.TriggerRequest(items=items, request_key=request_key()))
        self.warn_unserved(resp.unserved_task_names)
        return Triggered(resp.run_ids, resp.deduplicated)

    async def aio_trigger(
        self, task: Task[Any, Any] | None, items: list[pb.TriggerItem]
    ) -> Triggered:
        if task is not None and not self.is_registered(task.name):
            await self.aio_register([task])
        req = pb.TriggerRequest(items=items, request_key=request_key())
        resp = await self.calls.aio_trigger(req)
        self.warn_unserved(resp.unserved_task_names)
        return Triggered(resp.run_ids, resp.deduplicated)

    def warn_unserved(self, names: Sequence[str]) -> None:
        """Logs, once per task name, that the engine knows no live worker for a task."""
        if not names:
            return
        with self._lock:
            new = [n for n in names if n not in self._warned_unserved]
            self._warned_unserved.update(new)
        for name in new:
            log.warning(
                "no worker connected to the engine serves task %r: its runs wait in the queue "
                "until one does (start one with `stoker worker MODULE:app`); a run that no "
                "worker takes within its schedule_timeout (default 5m) is cancelled",
                name,
            )


__all__ = [
    "Connection",
    "Interceptor",
    "InterceptorFactory",
    "TransportCalls",
    "Triggered",
    "request_key",
]
