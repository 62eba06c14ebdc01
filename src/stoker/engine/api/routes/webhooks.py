"""Incoming webhooks over HTTP.

``/api/v1/webhooks``: the tenant's webhooks — create, list, read, update, delete (the same
operations as the SDK's ``app.webhooks``). Secrets are write-only.

``POST /webhooks/{tenant}/{name}`` (:data:`incoming`): where other services send their
webhooks. It needs no Stoker token — the webhook's signature or credential is the
authentication — and answers 202 with the event the request became (200 with the
challenge to Slack's URL check); 401/403 for a missing
or wrong credential, 404 for an unknown webhook, 400 for a body that is not JSON, 413 for
one over the payload limit; nothing is stored then.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from stoker.db.store.webhooks import WebhookRow
from stoker.engine.api.deps import ApiState, Auth, StateDep, api_state
from stoker.engine.api.errors import ERROR_RESPONSES, error_response
from stoker.engine.api.models import ErrorBody
from stoker.engine.webhooks import Webhooks, WebhookSpec, webhook_path
from stoker.engine.webhooks.verify import AuthSpec
from stoker.errors import EngineUnavailableError, StokerError

router = APIRouter(prefix="/api/v1/webhooks", responses=ERROR_RESPONSES, tags=["webhooks"])
incoming = APIRouter(tags=["webhooks"])

Kind = Literal["HMAC", "STRIPE", "GITHUB", "SLACK", "BASIC", "API_KEY"]


class WebhookAuthIn(BaseModel):
    """How the webhook authenticates requests. ``secret``: the HMAC secret (HMAC, STRIPE,
    GITHUB) or signing secret (SLACK), the password (BASIC) or the key (API_KEY); stored
    encrypted, never returned."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    secret: str
    header: str = Field(default="", description="HMAC and API_KEY: the header to read")
    algorithm: str = Field(default="", description="HMAC: sha1, sha256 (default), sha512")
    encoding: str = Field(default="", description="HMAC: hex (default) or base64")
    prefix: str = Field(default="", description="HMAC: text before the signature")
    username: str = Field(default="", description="BASIC: the user name")
    tolerance_s: int = Field(default=0, description="STRIPE, SLACK: replay tolerance (0: 300 s)")

    def spec(self) -> AuthSpec:
        return AuthSpec(
            self.kind,
            self.secret,
            self.header,
            self.algorithm,
            self.encoding,
            self.prefix,
            self.username,
            self.tolerance_s,
        )


class WebhookAuthOut(BaseModel):
    """A webhook's authentication, without its secret."""

    kind: str
    header: str = ""
    algorithm: str = ""
    encoding: str = ""
    prefix: str = ""
    username: str = ""
    tolerance_s: int = 0


class Webhook(BaseModel):
    """A webhook: how it authenticates, how it names its events, and its path."""

    model_config = ConfigDict(frozen=True)

    id: uuid.UUID
    name: str
    auth: WebhookAuthOut
    event_key_expression: str
    scope_expression: str | None
    dedup_expression: str | None = Field(
        description="CEL naming a request's delivery; a delivery seen again is not stored"
    )
    path: str = Field(description="Where it receives POSTs on this port")
    created_at: datetime
    updated_at: datetime


class WebhookList(BaseModel):
    items: list[Webhook]


class CreateWebhook(BaseModel):
    """A new webhook. The expressions are CEL over the JSON body (``input``) and the
    request's headers (``headers``, lower-case names)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    auth: WebhookAuthIn
    event_key_expression: str
    scope_expression: str | None = None
    dedup_expression: str | None = Field(
        default=None,
        description="CEL naming a request's delivery (absent: the auth's preset, Stripe's "
        "input.id or GitHub's headers['x-github-delivery']; \"\" or null: none)",
    )


class UpdateWebhook(BaseModel):
    """What to change (absent: unchanged; scope_expression or dedup_expression "" or null
    removes it)."""

    model_config = ConfigDict(extra="forbid")

    auth: WebhookAuthIn | None = None
    event_key_expression: str | None = None
    scope_expression: str | None = None
    dedup_expression: str | None = None


class ReceivedEvent(BaseModel):
    """The event a webhook request became."""

    event_id: uuid.UUID
    key: str
    scope: str | None
    satisfied: int = Field(description="How many waiting conditions it satisfied")
    run_ids: list[uuid.UUID] = Field(description="The runs it started (on_events)")
    duplicate: bool = Field(
        default=False,
        description="The delivery was received before: the first delivery's event, nothing stored",
    )


def _model(r: WebhookRow) -> Webhook:
    return Webhook(
        id=r["external_id"],
        name=r["name"],
        auth=WebhookAuthOut(kind=r["auth_kind"], **r["auth_options"]),
        event_key_expression=r["event_key_expression"],
        scope_expression=r["scope_expression"],
        dedup_expression=r["dedup_expression"],
        path=webhook_path(r["tenant_external_id"], r["name"]),
        created_at=r["created_at"],
        updated_at=r["updated_at"],
    )


def _dedup(body: BaseModel, given: str | None) -> str | None:
    """A request's dedup_expression for the spec: absent None (the preset on create,
    unchanged on update), null or "" an empty string (none)."""
    if "dedup_expression" not in body.model_fields_set:
        return None
    return given or ""


def _webhooks(state: ApiState) -> Webhooks:
    if state.webhooks is None:
        raise EngineUnavailableError("this API is served without an engine: no webhooks here")
    return state.webhooks


@router.post("", response_model=Webhook, status_code=201)
async def create_webhook(body: CreateWebhook, who: Auth, state: StateDep) -> Webhook:
    """Stores a webhook (422 when the name is taken or a field is invalid)."""
    row = await _webhooks(state).create(
        who.tenant_id,
        body.name,
        WebhookSpec(
            body.auth.spec(),
            body.event_key_expression,
            body.scope_expression,
            _dedup(body, body.dedup_expression),
        ),
    )
    return _model(row)


@router.get("", response_model=WebhookList)
async def list_webhooks(who: Auth, state: StateDep) -> WebhookList:
    """The tenant's webhooks, by name."""
    return WebhookList(items=[_model(r) for r in await _webhooks(state).list(who.tenant_id)])


@router.get("/{name}", response_model=Webhook)
async def get_webhook(name: str, who: Auth, state: StateDep) -> Webhook:
    """One webhook (404 for an unknown name)."""
    return _model(await _webhooks(state).get(who.tenant_id, name))


@router.patch("/{name}", response_model=Webhook)
async def update_webhook(name: str, body: UpdateWebhook, who: Auth, state: StateDep) -> Webhook:
    """Changes a webhook's auth (with a new secret) or expressions."""
    scope = body.scope_expression
    if "scope_expression" in body.model_fields_set and scope is None:
        scope = ""
    row = await _webhooks(state).update(
        who.tenant_id,
        name,
        WebhookSpec(
            body.auth.spec() if body.auth else None,
            body.event_key_expression,
            scope,
            _dedup(body, body.dedup_expression),
        ),
    )
    return _model(row)


@router.delete("/{name}", status_code=204)
async def delete_webhook(name: str, who: Auth, state: StateDep) -> Response:
    """Deletes a webhook (404 for an unknown name); its URL answers 404 from then on."""
    await _webhooks(state).delete(who.tenant_id, name)
    return Response(status_code=204)


@incoming.post(
    "/webhooks/{tenant}/{name}",
    response_model=ReceivedEvent,
    status_code=202,
    responses={
        400: {"model": ErrorBody, "description": "The body is not JSON"},
        401: {"model": ErrorBody, "description": "No signature or credential"},
        403: {"model": ErrorBody, "description": "A wrong signature or credential, a replay"},
        404: {"model": ErrorBody, "description": "No such webhook"},
        413: {"model": ErrorBody, "description": "The body is over the payload limit"},
    },
)
async def receive_webhook(tenant: str, name: str, request: Request) -> JSONResponse:
    """Turns an authenticated POST into a user event, keeping the body as received. No
    Stoker token: the webhook's signature or credential authenticates the request."""
    try:
        received = await _webhooks(api_state(request)).receive(
            tenant, name, dict(request.headers), await request.body()
        )
    except StokerError as exc:
        # Not stoker_error_response: a 401 here asks for the webhook's credential, not for
        # a Stoker bearer token.
        return error_response(exc.http_status, type(exc).__name__, exc.message)
    if received.challenge is not None:
        return JSONResponse({"challenge": received.challenge})
    event = ReceivedEvent(
        event_id=uuid.UUID(received.event_id),
        key=received.key,
        scope=received.scope,
        satisfied=received.satisfied,
        run_ids=[uuid.UUID(r) for r in received.run_ids],
        duplicate=received.duplicate,
    )
    return JSONResponse(event.model_dump(mode="json"), status_code=202)
