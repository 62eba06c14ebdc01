"""What an SDK's HTTP push worker calls: the ``Push`` service (docs/http-workers.md)."""

from __future__ import annotations

from stoker._proto import push_pb2 as ppb
from stoker.db import Executor
from stoker.db.store import push as push_store
from stoker.db.store import workers as worker_store
from stoker.engine.auth import Principal, TokenAuth
from stoker.engine.dispatcher import Dispatcher
from stoker.engine.push import PushDelivery, PushEndpoints
from stoker.engine.rpc.handlers import Servicer, rpc
from stoker.errors import NotFoundError


class PushService(Servicer):
    """Registers endpoints and takes the events of attempts they answered with 202."""

    def __init__(
        self,
        auth: TokenAuth,
        db: Executor,
        endpoints: PushEndpoints,
        delivery: PushDelivery,
        dispatcher: Dispatcher,
    ) -> None:
        super().__init__(auth)
        self._db = db
        self._endpoints = endpoints
        self._delivery = delivery
        self._dispatcher = dispatcher

    @rpc
    async def RegisterPushEndpoint(
        self, request: ppb.RegisterPushEndpointRequest, caller: Principal
    ) -> ppb.PushEndpointInfo:
        row = await self._endpoints.register(
            caller.tenant_id,
            request.name,
            request.url,
            request.slots,
            list(request.task_names),
            request.secret,
        )
        return _info(row)

    @rpc
    async def ListPushEndpoints(
        self, request: ppb.ListPushEndpointsRequest, caller: Principal
    ) -> ppb.ListPushEndpointsResponse:
        rows = await self._endpoints.list(caller.tenant_id)
        return ppb.ListPushEndpointsResponse(endpoints=[_info(r) for r in rows])

    @rpc
    async def DeletePushEndpoint(
        self, request: ppb.DeletePushEndpointRequest, caller: Principal
    ) -> ppb.DeletePushEndpointResponse:
        deleted = await self._endpoints.delete(caller.tenant_id, request.name)
        return ppb.DeletePushEndpointResponse(deleted=deleted)

    @rpc
    async def ReportPushEvents(
        self, request: ppb.ReportPushEventsRequest, caller: Principal
    ) -> ppb.ReportPushEventsResponse:
        events = list(request.events)
        link = self._delivery.link(caller.tenant_id, request.endpoint)
        if link is not None:
            self._delivery.reported(link, events)
            return ppb.ReportPushEventsResponse()
        # Attached on another replica (the leader): stored here, checked by Postgres.
        known = await push_store.push_endpoint_id(
            self._db, push_store.PushEndpointName(caller.tenant_id, request.endpoint)
        )
        if known is None:
            raise NotFoundError(f"no push endpoint named {request.endpoint!r}")
        rows = await worker_store.worker_ids_by_external(
            self._db, worker_store.WorkerIdsByExternal(caller.tenant_id, [known["external_id"]])
        )
        if rows:
            self._dispatcher.take_detached(int(rows[0]["id"]), events)
        return ppb.ReportPushEventsResponse()


def _info(row: push_store.PushEndpointRow) -> ppb.PushEndpointInfo:
    return ppb.PushEndpointInfo(
        name=row["name"],
        url=row["url"],
        slots=row["slots"],
        task_names=row["task_names"],
        worker_id=str(row["external_id"]),
    )
