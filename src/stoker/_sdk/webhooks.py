"""``app.webhooks``: incoming webhooks, URLs on the engine's HTTP port that turn each
authenticated POST into a user event (README "Webhooks").

A webhook authenticates requests with one of :class:`HMAC`, :class:`StripeSignature`,
:class:`GitHubSignature`, :class:`SlackSignature`, :class:`Basic` or :class:`ApiKey`; its
secret is sent to the engine on create/update, stored encrypted there, and never returned.
The event's key (and optionally its scope) is a CEL expression over the JSON body
(``input``) and the request's headers (``headers``, lower-case names).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from stoker._proto import webhooks_pb2 as hpb

if TYPE_CHECKING:
    from stoker._sdk.calls import Connection


@dataclass(frozen=True, slots=True)
class HMAC:
    """A header carries the HMAC of the raw body under ``secret``: ``algorithm`` sha1,
    sha256 or sha512, ``encoding`` hex or base64, after an optional ``prefix`` (such as
    ``"sha256="``)."""

    secret: str = field(repr=False)
    header: str = "X-Signature"
    algorithm: str = "sha256"
    encoding: str = "hex"
    prefix: str = ""

    def _wire(self) -> hpb.WebhookAuth:
        return hpb.WebhookAuth(
            kind="HMAC",
            secret=self.secret,
            header=self.header,
            algorithm=self.algorithm,
            encoding=self.encoding,
            prefix=self.prefix,
        )


@dataclass(frozen=True, slots=True)
class StripeSignature:
    """Stripe's scheme: ``Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
    "<t>.<body>">``. A timestamp more than ``tolerance`` from now is refused as a replay."""

    secret: str = field(repr=False)
    tolerance: float | timedelta = 300

    def _wire(self) -> hpb.WebhookAuth:
        return hpb.WebhookAuth(
            kind="STRIPE", secret=self.secret, tolerance_s=_seconds(self.tolerance, "Stripe")
        )


def _seconds(tolerance: float | timedelta, preset: str) -> int:
    seconds = tolerance.total_seconds() if isinstance(tolerance, timedelta) else tolerance
    if not 1 <= seconds <= 86_400:
        raise ValueError(f"{preset}Signature: tolerance must be 1 s to a day, got {tolerance}")
    return round(seconds)


@dataclass(frozen=True, slots=True)
class GitHubSignature:
    """GitHub's scheme: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``."""

    secret: str = field(repr=False)

    def _wire(self) -> hpb.WebhookAuth:
        return hpb.WebhookAuth(kind="GITHUB", secret=self.secret)


@dataclass(frozen=True, slots=True)
class SlackSignature:
    """Slack's scheme: ``X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:<t>:<body>">`` with
    ``t`` in ``X-Slack-Request-Timestamp``, refused as a replay when more than ``tolerance``
    from now. Slack's URL check (``{"type": "url_verification", "challenge": ...}``) is
    answered with its challenge and makes no event."""

    secret: str = field(repr=False)
    tolerance: float | timedelta = 300

    def _wire(self) -> hpb.WebhookAuth:
        return hpb.WebhookAuth(
            kind="SLACK", secret=self.secret, tolerance_s=_seconds(self.tolerance, "Slack")
        )


@dataclass(frozen=True, slots=True)
class Basic:
    """HTTP Basic authentication with ``user`` and ``password``."""

    user: str
    password: str = field(repr=False)

    def _wire(self) -> hpb.WebhookAuth:
        return hpb.WebhookAuth(kind="BASIC", username=self.user, secret=self.password)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A header carries ``key`` itself."""

    header: str
    key: str = field(repr=False)

    def _wire(self) -> hpb.WebhookAuth:
        return hpb.WebhookAuth(kind="API_KEY", header=self.header, secret=self.key)


WebhookAuth = HMAC | StripeSignature | GitHubSignature | SlackSignature | Basic | ApiKey
"""How a webhook authenticates requests."""


def _auth(auth: Any, what: str) -> hpb.WebhookAuth:
    if not isinstance(
        auth, HMAC | StripeSignature | GitHubSignature | SlackSignature | Basic | ApiKey
    ):
        raise TypeError(
            f"{what}: auth must be HMAC, StripeSignature, GitHubSignature, SlackSignature, "
            "Basic or ApiKey, "
            f"got {type(auth).__name__}"
        )
    return auth._wire()


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True, slots=True)
class Webhook:
    """A stored webhook (without its secret)."""

    id: str
    name: str
    auth_kind: str
    """HMAC, STRIPE, GITHUB, BASIC or API_KEY."""
    auth_options: dict[str, Any]
    """What is not secret: header, algorithm, encoding, prefix, username, tolerance_s."""
    event_key_expression: str
    scope_expression: str | None
    dedup_expression: str | None
    """CEL naming a request's delivery (None: every request makes an event)."""
    path: str
    """Where it receives POSTs on the engine's HTTP port: ``/webhooks/<tenant>/<name>``."""
    created_at: datetime
    updated_at: datetime

    def url(self, base: str) -> str:
        """The webhook's URL under the engine's HTTP address ``base``
        (``http://127.0.0.1:7078``, or the public address in front of it)."""
        return base.rstrip("/") + self.path

    @classmethod
    def _of(cls, w: hpb.WebhookInfo) -> Webhook:
        a = w.auth
        options = {
            "header": a.header,
            "algorithm": a.algorithm,
            "encoding": a.encoding,
            "prefix": a.prefix,
            "username": a.username,
            "tolerance_s": a.tolerance_s,
        }
        return cls(
            id=w.id,
            name=w.name,
            auth_kind=a.kind,
            auth_options={k: v for k, v in options.items() if v},
            event_key_expression=w.event_key_expression,
            scope_expression=w.scope_expression or None,
            dedup_expression=w.dedup_expression or None,
            path=w.path,
            created_at=_time(w.created_at_ms),
            updated_at=_time(w.updated_at_ms),
        )


_UNSET: Any = object()


class Webhooks:
    """The tenant's incoming webhooks::

    hook = app.webhooks.create(
        "stripe",
        auth=StripeSignature(secret),
        event_key_expression="'stripe:' + input.type",
    )
    hook.url("https://stoker.example.com")  # give this URL to Stripe
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @staticmethod
    def _create(
        name: str,
        auth: WebhookAuth,
        event_key_expression: str,
        scope_expression: str | None,
        dedup_expression: Any,
    ) -> hpb.CreateWebhookRequest:
        req = hpb.CreateWebhookRequest(
            name=name,
            auth=_auth(auth, f"webhook {name!r}"),
            event_key_expression=event_key_expression,
            scope_expression=scope_expression or "",
        )
        if dedup_expression is not _UNSET:
            req.dedup_expression = dedup_expression or ""
        return req

    @staticmethod
    def _update(
        name: str, auth: Any, event_key_expression: Any, scope_expression: Any, dedup: Any
    ) -> hpb.UpdateWebhookRequest:
        req = hpb.UpdateWebhookRequest(name=name)
        if auth is not _UNSET:
            req.auth.CopyFrom(_auth(auth, f"webhook {name!r}"))
        if event_key_expression is not _UNSET:
            req.event_key_expression = event_key_expression
        if scope_expression is not _UNSET:
            req.scope_expression = scope_expression or ""
        if dedup is not _UNSET:
            req.dedup_expression = dedup or ""
        return req

    def create(
        self,
        name: str,
        *,
        auth: WebhookAuth,
        event_key_expression: str,
        scope_expression: str | None = None,
        dedup_expression: str | None = _UNSET,
    ) -> Webhook:
        """Stores a webhook; its :attr:`Webhook.path` on the engine's HTTP port then turns
        each authenticated POST into an event keyed by ``event_key_expression`` (CEL over
        ``input``, the JSON body, and ``headers``). ``dedup_expression`` (same inputs)
        names a request's delivery: a delivery received again within 4 days answers with
        the first one's event and stores nothing; when not given, Stripe's event id
        (``input.id``) and GitHub's delivery id (``headers['x-github-delivery']``) are
        used for those auths; None turns it off. InvalidRequestError when the name is
        taken or an expression does not parse."""
        req = self._create(name, auth, event_key_expression, scope_expression, dedup_expression)
        return Webhook._of(self._connection.calls.create_webhook(req))

    async def aio_create(
        self,
        name: str,
        *,
        auth: WebhookAuth,
        event_key_expression: str,
        scope_expression: str | None = None,
        dedup_expression: str | None = _UNSET,
    ) -> Webhook:
        req = self._create(name, auth, event_key_expression, scope_expression, dedup_expression)
        return Webhook._of(await self._connection.calls.aio_create_webhook(req))

    def list(self) -> builtins.list[Webhook]:
        """The tenant's webhooks, by name."""
        resp = self._connection.calls.list_webhooks(hpb.ListWebhooksRequest())
        return [Webhook._of(w) for w in resp.webhooks]

    async def aio_list(self) -> builtins.list[Webhook]:
        resp = await self._connection.calls.aio_list_webhooks(hpb.ListWebhooksRequest())
        return [Webhook._of(w) for w in resp.webhooks]

    def get(self, name: str) -> Webhook:
        """One webhook; NotFoundError for an unknown name."""
        return Webhook._of(self._connection.calls.get_webhook(hpb.GetWebhookRequest(name=name)))

    async def aio_get(self, name: str) -> Webhook:
        req = hpb.GetWebhookRequest(name=name)
        return Webhook._of(await self._connection.calls.aio_get_webhook(req))

    def update(
        self,
        name: str,
        *,
        auth: WebhookAuth = _UNSET,
        event_key_expression: str = _UNSET,
        scope_expression: str | None = _UNSET,
        dedup_expression: str | None = _UNSET,
    ) -> Webhook:
        """Changes what is given: a new auth (a rotated secret), the expressions
        (``scope_expression=None`` removes the scope, ``dedup_expression=None`` the
        deduplication)."""
        req = self._update(name, auth, event_key_expression, scope_expression, dedup_expression)
        return Webhook._of(self._connection.calls.update_webhook(req))

    async def aio_update(
        self,
        name: str,
        *,
        auth: WebhookAuth = _UNSET,
        event_key_expression: str = _UNSET,
        scope_expression: str | None = _UNSET,
        dedup_expression: str | None = _UNSET,
    ) -> Webhook:
        req = self._update(name, auth, event_key_expression, scope_expression, dedup_expression)
        return Webhook._of(await self._connection.calls.aio_update_webhook(req))

    def delete(self, name: str) -> None:
        """Deletes a webhook (its URL answers 404 from then on); NotFoundError."""
        self._connection.calls.delete_webhook(hpb.DeleteWebhookRequest(name=name))

    async def aio_delete(self, name: str) -> None:
        await self._connection.calls.aio_delete_webhook(hpb.DeleteWebhookRequest(name=name))


__all__ = [
    "HMAC",
    "ApiKey",
    "Basic",
    "GitHubSignature",
    "SlackSignature",
    "StripeSignature",
    "Webhook",
    "WebhookAuth",
    "Webhooks",
]
