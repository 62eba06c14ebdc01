"""The engine's gRPC front: one server, servicers split by who calls them.

* :mod:`~stoker.engine.rpc.worker_service` — what a worker calls: its stream and heartbeats;
* :mod:`~stoker.engine.rpc.client_service` — what an SDK client calls: task definitions,
  triggers and results, workflows, children, events, cancel and replay;
* :mod:`~stoker.engine.rpc.schedule_service` — scheduled runs (the ``Schedules`` service);
* :mod:`~stoker.engine.rpc.webhook_service` — incoming webhooks (the ``Webhooks`` service);
* :mod:`~stoker.engine.rpc.event_service` — stored events and filters (``Events``);
* :mod:`~stoker.engine.rpc.admin_service` — runs, workers, rate limits and bulk
  operations as an operator reads and steers them (``Admin``);
* :mod:`~stoker.engine.rpc.handlers` — what every handler shares: authentication, errors
  answered as statuses (the ``@rpc`` decorator), and the interceptor that refuses calls
  without a valid token before their request is read.

The wire has six services, ``Engine``, ``Workflows``, ``Schedules``, ``Events``,
``Webhooks`` and ``Admin``; :func:`open_server` answers each of their methods with the one
servicer that defines it, so which servicer answers a method is a matter of who calls it,
not of which ``.proto`` service declares it.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import cast

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from stoker._core.wire import message_limit
from stoker._proto import admin_pb2 as apb
from stoker._proto import admin_pb2_grpc as apb_grpc
from stoker._proto import engine_pb2 as pb
from stoker._proto import engine_pb2_grpc as pb_grpc
from stoker._proto import events_pb2 as epb
from stoker._proto import events_pb2_grpc as epb_grpc
from stoker._proto import observe_pb2 as opb
from stoker._proto import observe_pb2_grpc as opb_grpc
from stoker._proto import push_pb2 as ppb
from stoker._proto import push_pb2_grpc as ppb_grpc
from stoker._proto import schedules_pb2 as spb
from stoker._proto import schedules_pb2_grpc as spb_grpc
from stoker._proto import webhooks_pb2 as hpb
from stoker._proto import webhooks_pb2_grpc as hpb_grpc
from stoker._proto import workflows_pb2 as wpb
from stoker._proto import workflows_pb2_grpc as wpb_grpc
from stoker.config import EngineSettings, read_pem
from stoker.engine.auth import TokenAuth
from stoker.engine.rpc.handlers import AuthInterceptor, Servicer


async def open_server(
    settings: EngineSettings, auth: TokenAuth, servicers: Sequence[Servicer]
) -> grpc.aio.Server:
    """A started gRPC server on ``settings.grpc_host:grpc_port`` (over TLS when configured)
    answering every method of the services with ``servicers``; OSError when the address
    cannot be bound."""
    s = settings
    # Requests larger than one payload plus headroom are refused by gRPC before they are
    # held whole (the SDK splits its batches to fit); responses (results, assignments)
    # are not capped here: the receiving client bounds them.
    server = grpc.aio.server(
        interceptors=[AuthInterceptor(auth)],
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
    engine = answering(pb.DESCRIPTOR.services_by_name["Engine"], servicers)
    pb_grpc.add_EngineServicer_to_server(cast(pb_grpc.EngineServicer, engine), server)
    workflows = answering(wpb.DESCRIPTOR.services_by_name["Workflows"], servicers)
    wpb_grpc.add_WorkflowsServicer_to_server(cast(wpb_grpc.WorkflowsServicer, workflows), server)
    schedules = answering(spb.DESCRIPTOR.services_by_name["Schedules"], servicers)
    spb_grpc.add_SchedulesServicer_to_server(cast(spb_grpc.SchedulesServicer, schedules), server)
    events = answering(epb.DESCRIPTOR.services_by_name["Events"], servicers)
    epb_grpc.add_EventsServicer_to_server(cast(epb_grpc.EventsServicer, events), server)
    webhooks = answering(hpb.DESCRIPTOR.services_by_name["Webhooks"], servicers)
    hpb_grpc.add_WebhooksServicer_to_server(cast(hpb_grpc.WebhooksServicer, webhooks), server)
    observe = answering(opb.DESCRIPTOR.services_by_name["Observe"], servicers)
    opb_grpc.add_ObserveServicer_to_server(cast(opb_grpc.ObserveServicer, observe), server)
    admin = answering(apb.DESCRIPTOR.services_by_name["Admin"], servicers)
    apb_grpc.add_AdminServicer_to_server(cast(apb_grpc.AdminServicer, admin), server)
    push = answering(ppb.DESCRIPTOR.services_by_name["Push"], servicers)
    ppb_grpc.add_PushServicer_to_server(cast(ppb_grpc.PushServicer, push), server)
    address = f"{s.grpc_host}:{s.grpc_port}"
    try:
        if s.tls:
            port = server.add_secure_port(address, _server_credentials(s))
        else:
            port = server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"cannot listen for gRPC on {address}")
        await server.start()
    except BaseException:
        await server.stop(None)
        raise
    return server


def answering(service: ServiceDescriptor, servicers: Sequence[Servicer]) -> SimpleNamespace:
    """The handlers of ``service``'s methods, each taken from the one servicer that defines
    it (what the generated ``add_*Servicer_to_server`` reads); TypeError, at start, for a
    method that no servicer or more than one answers."""
    handlers = {}
    for method in service.methods:
        owners = [s for s in servicers if callable(getattr(s, method.name, None))]
        if len(owners) != 1:
            names = [type(s).__name__ for s in owners] or ["no servicer"]
            raise TypeError(f"{service.name}.{method.name} is answered by {', '.join(names)}")
        handlers[method.name] = getattr(owners[0], method.name)
    return SimpleNamespace(**handlers)


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


__all__ = ["open_server"]
