"""What an SDK client calls to manage incoming webhooks: the ``Webhooks`` service."""

from __future__ import annotations

from datetime import datetime

from stoker._proto import webhooks_pb2 as hpb
from stoker.db.store.webhooks import WebhookRow
from stoker.engine.auth import Principal, TokenAuth
from stoker.engine.rpc.handlers import Servicer, rpc
from stoker.engine.webhooks import Webhooks, WebhookSpec, webhook_path
from stoker.engine.webhooks.verify import AuthSpec


class WebhookService(Servicer):
    """Hands each call to :class:`~stoker.engine.webhooks.Webhooks`."""

    def __init__(self, auth: TokenAuth, webhooks: Webhooks) -> None:
        super().__init__(auth)
        self._webhooks = webhooks

    @rpc
    async def CreateWebhook(
        self, request: hpb.CreateWebhookRequest, caller: Principal
    ) -> hpb.WebhookInfo:
        row = await self._webhooks.create(
            caller.tenant_id,
            request.name,
            WebhookSpec(
                _auth(request.auth) if request.HasField("auth") else None,
                request.event_key_expression or None,
                request.scope_expression or None,
                request.dedup_expression if request.HasField("dedup_expression") else None,
            ),
        )
        return info(row)

    @rpc
    async def ListWebhooks(
        self, request: hpb.ListWebhooksRequest, caller: Principal
    ) -> hpb.ListWebhooksResponse:
        rows = await self._webhooks.list(caller.tenant_id)
        return hpb.ListWebhooksResponse(webhooks=[info(r) for r in rows])

    @rpc
    async def GetWebhook(
        self, request: hpb.GetWebhookRequest, caller: Principal
    ) -> hpb.WebhookInfo:
        return info(await self._webhooks.get(caller.tenant_id, request.name))

    @rpc
    async def UpdateWebhook(
        self, request: hpb.UpdateWebhookRequest, caller: Principal
    ) -> hpb.WebhookInfo:
        row = await self._webhooks.update(
            caller.tenant_id,
            request.name,
            WebhookSpec(
                _auth(request.auth) if request.HasField("auth") else None,
                request.event_key_expression if request.HasField("event_key_expression") else None,
                request.scope_expression if request.HasField("scope_expression") else None,
                request.dedup_expression if request.HasField("dedup_expression") else None,
            ),
        )
        return info(row)

    @rpc
    async def DeleteWebhook(
        self, request: hpb.DeleteWebhookRequest, caller: Principal
    ) -> hpb.DeleteWebhookResponse:
        await self._webhooks.delete(caller.tenant_id, request.name)
        return hpb.DeleteWebhookResponse()


def _auth(a: hpb.WebhookAuth) -> AuthSpec:
    return AuthSpec(
        a.kind, a.secret, a.header, a.algorithm, a.encoding, a.prefix, a.username, a.tolerance_s
    )


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def info(r: WebhookRow) -> hpb.WebhookInfo:
    """A stored webhook on the wire (without its secret)."""
    o = r["auth_options"]
    return hpb.WebhookInfo(
        id=str(r["external_id"]),
        name=r["name"],
        auth=hpb.WebhookAuth(
            kind=r["auth_kind"],
            header=o.get("header", ""),
            algorithm=o.get("algorithm", ""),
            encoding=o.get("encoding", ""),
            prefix=o.get("prefix", ""),
            username=o.get("username", ""),
            tolerance_s=int(o.get("tolerance_s", 0)),
        ),
        event_key_expression=r["event_key_expression"],
        scope_expression=r["scope_expression"] or "",
        dedup_expression=r["dedup_expression"] or "",
        path=webhook_path(r["tenant_external_id"], r["name"]),
        created_at_ms=_ms(r["created_at"]),
        updated_at_ms=_ms(r["updated_at"]),
    )
