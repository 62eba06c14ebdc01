"""Incoming webhooks: other services POST to ``/webhooks/<tenant>/<name>`` and each
authenticated request becomes a user event (README "Webhooks").

:class:`Webhooks` manages a tenant's webhooks (create, list, get, update, delete; for the
gRPC ``Webhooks`` service and the REST API) and receives their requests. A request is
checked before anything is read from its body (:mod:`.verify`), then its body must be JSON;
the event key and scope are CEL expressions over the parsed body (``input``) and the
request's headers (``headers``, lower-case names). The event goes through the same ingest
as ``app.events.push`` (:meth:`~stoker.engine.ingest.workflows.WorkflowIngest.push_events`),
with the body kept as received. A refused request stores nothing.

Secrets are stored sealed by :class:`~.secrets.SecretBox`; :meth:`Webhooks.rekey`
re-encrypts those sealed by an old key under the current one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stoker._core.cel import compile_expression
from stoker._core.wire import json_problem, text_problem
from stoker.db import Executor
from stoker.db.store import NoParams
from stoker.db.store import webhooks as store
from stoker.engine.ingest.requests import RequestKey
from stoker.engine.ingest.workflows import EventInput, WorkflowIngest
from stoker.engine.webhooks.secrets import SecretBox
from stoker.engine.webhooks.verify import AuthSpec, verify
from stoker.errors import (
    InvalidRequestError,
    UnknownWebhookError,
    WebhookBodyError,
)

log = logging.getLogger("stoker.engine.webhooks")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
WEBHOOK_METADATA = "stoker_webhook"
"""The additional-metadata key that names the webhook an event came through."""

DEDUP_PRESETS = {
    "STRIPE": "has(input.id) ? input.id : null",
    "GITHUB": "'x-github-delivery' in headers ? headers['x-github-delivery'] : null",
}
"""The dedup expression a webhook of these auth kinds gets when none is given: Stripe's
event id (the same on every retry of an event), GitHub's delivery id (the same on a
redelivery); a request without one is not deduplicated."""

DEDUP_WINDOW_S = 4 * 86_400
"""How long a delivery is remembered: past the 3 days Stripe retries an event and GitHub
offers a delivery for redelivery."""

_DEDUP_KIND = "webhook"
_DEDUP_FINGERPRINT = hashlib.sha256(b"webhook delivery").digest()


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    """What a create or update sets (None: unchanged, on update)."""

    auth: AuthSpec | None = None
    event_key_expression: str | None = None
    scope_expression: str | None = None
    """On update, an empty string removes the scope expression."""
    dedup_expression: str | None = None
    """CEL naming a request's delivery. On create, None takes the auth's preset
    (:data:`DEDUP_PRESETS`; none for the others) and an empty string none; on update, None
    keeps it and an empty string removes it."""


@dataclass(frozen=True, slots=True)
class Received:
    """The event a webhook request became (or, for Slack's URL check, the challenge to
    answer, and no event)."""

    event_id: str
    key: str
    scope: str | None
    satisfied: int
    run_ids: list[str] = field(default_factory=list)
    """The runs the event started (tasks and workflows subscribed with ``on_events``)."""
    challenge: str | None = None
    duplicate: bool = False
    """The delivery was received before (the webhook's dedup expression named it): the
    event is the first delivery's, and nothing was stored."""


def check_name(name: str) -> str:
    """``name`` if it can name a webhook in a URL; InvalidRequestError otherwise."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequestError(
            f"webhook name {name!r} is refused: use 1 to 100 letters, digits, '_', '.' or "
            "'-', starting with a letter or digit (it is part of the webhook's URL)"
        )
    return name


def _check_expression(expression: str, what: str) -> str:
    if not isinstance(expression, str) or not expression.strip() or text_problem(expression):
        raise InvalidRequestError(f"webhook {what}: the CEL expression must be a non-empty string")
    try:
        compile_expression(expression)
    except (ValueError, RuntimeError) as exc:
        raise InvalidRequestError(
            f"webhook {what}: invalid CEL expression {expression!r}: {exc}"
        ) from None
    return expression


def webhook_path(tenant_external_id: uuid.UUID, name: str) -> str:
    """The path, on the engine's HTTP port, that a webhook receives POSTs on."""
    return f"/webhooks/{tenant_external_id}/{name}"


class Webhooks:
    """A tenant's webhooks, and the requests they receive."""

    def __init__(
        self, db: Executor, ingest: WorkflowIngest, box: SecretBox, *, clock: Any = time.time
    ) -> None:
        self._db = db
        self._ingest = ingest
        self._box = box
        self._clock = clock

    # -- management -----------------------------------------------------------------------

    async def create(self, tenant_id: int, name: str, spec: WebhookSpec) -> store.WebhookRow:
        """Stores a new webhook; InvalidRequestError when the name is taken or a field is
        invalid (nothing is stored then)."""
        check_name(name)
        if spec.auth is None or spec.event_key_expression is None:
            raise InvalidRequestError(
                f"webhook {name!r}: a webhook needs an auth and an event_key_expression"
            )
        auth = spec.auth.checked(f"webhook {name!r}")
        key_expr = _check_expression(spec.event_key_expression, "event_key_expression")
        scope_expr = (
            _check_expression(spec.scope_expression, "scope_expression")
            if spec.scope_expression
            else None
        )
        dedup = spec.dedup_expression
        if dedup is None:
            dedup = DEDUP_PRESETS.get(auth.kind)
        dedup_expr = _check_expression(dedup, "dedup_expression") if dedup else None
        external_id = uuid.uuid4()
        row = await store.insert_webhook(
            self._db,
            store.InsertWebhook(
                tenant_id,
                external_id,
                name,
                auth.kind,
                json.dumps(auth.options()),
                self._box.seal(auth.secret, external_id),
                key_expr,
                scope_expr,
                dedup_expr,
            ),
        )
        if row is None:
            raise InvalidRequestError(
                f"webhook {name!r} exists already: update it, or delete it first"
            )
        return row

    async def list(self, tenant_id: int) -> list[store.WebhookRow]:
        return await store.list_webhooks(self._db, store.ListWebhooks(tenant_id))

    async def get(self, tenant_id: int, name: str) -> store.WebhookRow:
        """One webhook; UnknownWebhookError naming it."""
        row = await store.get_webhook(self._db, store.GetWebhook(tenant_id, name))
        if row is None:
            raise UnknownWebhookError(f"no webhook named {name!r}")
        shown: store.WebhookRow = {k: v for k, v in row.items() if k != "secret"}  # type: ignore[assignment]
        return shown

    async def update(self, tenant_id: int, name: str, spec: WebhookSpec) -> store.WebhookRow:
        """Changes what ``spec`` sets: a new auth (with its secret), expressions."""
        current = await store.get_webhook(self._db, store.GetWebhook(tenant_id, name))
        if current is None:
            raise UnknownWebhookError(f"no webhook named {name!r}")
        kind, options, secret = current["auth_kind"], current["auth_options"], current["secret"]
        if spec.auth is not None:
            auth = spec.auth.checked(f"webhook {name!r}")
            kind, options = auth.kind, auth.options()
            secret = self._box.seal(auth.secret, current["external_id"])
        key_expr = current["event_key_expression"]
        if spec.event_key_expression is not None:
            key_expr = _check_expression(spec.event_key_expression, "event_key_expression")
        scope_expr = current["scope_expression"]
        if spec.scope_expression is not None:
            scope_expr = (
                _check_expression(spec.scope_expression, "scope_expression")
                if spec.scope_expression
                else None
            )
        dedup_expr = current["dedup_expression"]
        if spec.dedup_expression is not None:
            dedup_expr = (
                _check_expression(spec.dedup_expression, "dedup_expression")
                if spec.dedup_expression
                else None
            )
        row = await store.update_webhook(
            self._db,
            store.UpdateWebhook(
                tenant_id, name, kind, json.dumps(options), secret, key_expr, scope_expr,
                dedup_expr,
            ),
        )  # fmt: skip
        if row is None:
            raise UnknownWebhookError(f"no webhook named {name!r}")
        return row

    async def delete(self, tenant_id: int, name: str) -> None:
        """Deletes a webhook (its URL answers 404 from then on); UnknownWebhookError."""
        if not await store.delete_webhook(self._db, store.DeleteWebhook(tenant_id, name)):
            raise UnknownWebhookError(f"no webhook named {name!r}")

    async def rekey(self) -> int:
        """Re-encrypts under the current key the secrets an old key sealed; how many."""
        done = 0
        for row in await store.webhook_secrets(self._db, NoParams()):
            if self._box.stale(row["secret"]):
                secret = self._box.open(row["secret"], row["external_id"])
                sealed = self._box.seal(secret, row["external_id"])
                await store.set_webhook_secret(self._db, store.SetWebhookSecret(row["id"], sealed))
                done += 1
        if done:
            log.info("re-encrypted %d webhook secrets under the current key", done)
        return done

    # -- requests -------------------------------------------------------------------------

    async def receive(
        self, tenant: str, name: str, headers: Mapping[str, str], body: bytes
    ) -> Received:
        """Turns one POST into an event. ``headers`` have lower-case names. Raises
        UnknownWebhookError (404), WebhookUnauthorized (401), WebhookForbidden (403),
        WebhookBodyError (400) or PayloadTooLargeError (413); nothing is stored then."""
        try:
            tenant_id = uuid.UUID(tenant)
        except ValueError:
            raise UnknownWebhookError(f"no webhook named {name!r} at this URL") from None
        row = await store.find_webhook(self._db, store.FindWebhook(tenant_id, name))
        if row is None:
            raise UnknownWebhookError(f"no webhook named {name!r} at this URL")
        secret = self._box.open(row["secret"], row["external_id"])
        verify(
            AuthSpec.stored(row["auth_kind"], row["auth_options"], secret),
            headers,
            body,
            self._clock(),
        )
        if not body:
            raise WebhookBodyError(f"webhook {name!r} takes a JSON body; the request has none")
        problem = json_problem(body)
        if problem is not None:
            raise WebhookBodyError(
                f"webhook {name!r} takes a JSON body; this one is refused: {problem}"
            )
        payload = json.loads(body)
        if (
            row["auth_kind"] == "SLACK"
            and isinstance(payload, dict)
            and payload.get("type") == "url_verification"
            and isinstance(payload.get("challenge"), str)
        ):
            # Slack checks a new events URL by asking it to echo a challenge (signed like
            # every request): answered, and no event.
            return Received("", "", None, 0, [], challenge=payload["challenge"])
        context = {"input": payload, "headers": dict(headers)}
        key = _evaluate(row["event_key_expression"], context, name, "event_key_expression")
        if not isinstance(key, str) or not key:
            raise WebhookBodyError(
                f"webhook {name!r}: event_key_expression {row['event_key_expression']!r} gave "
                f"{key!r} for this body, not a non-empty string"
            )
        scope: str | None = None
        if row["scope_expression"]:
            value = _evaluate(row["scope_expression"], context, name, "scope_expression")
            if value is not None and not isinstance(value, str):
                raise WebhookBodyError(
                    f"webhook {name!r}: scope_expression {row['scope_expression']!r} gave "
                    f"{value!r} for this body, not a string"
                )
            scope = value or None
        delivery: RequestKey | None = None
        if row["dedup_expression"]:
            value = _evaluate(row["dedup_expression"], context, name, "dedup_expression")
            if value is not None and not isinstance(value, str | int):
                raise WebhookBodyError(
                    f"webhook {name!r}: dedup_expression {row['dedup_expression']!r} gave "
                    f"{value!r} for this body, not a string"
                )
            if value is not None and value != "":
                delivery = _delivery_key(row["external_id"], str(value))
        event = EventInput(
            key,
            body,
            json.dumps({WEBHOOK_METADATA: name}).encode(),
            scope or "",
            webhook_id=row["id"],
            body=body,
        )
        pushed = await self._ingest.push_events(row["tenant_id"], [event], delivery)
        (stored,) = pushed.events
        return Received(
            stored.event_id, key, scope, pushed.satisfied, stored.run_ids,
            duplicate=pushed.replayed,
        )  # fmt: skip


def _delivery_key(webhook: uuid.UUID, delivery: str) -> RequestKey:
    """The request key a delivery is recorded under: per webhook, kept for the dedup window,
    with one fingerprint for every body (a delivery repeated with another body is still the
    same delivery, answered with its first event)."""
    digest = hashlib.sha256(delivery.encode()).hexdigest()
    return RequestKey(
        f"webhook:{webhook}:{digest}", _DEDUP_KIND, _DEDUP_FINGERPRINT, DEDUP_WINDOW_S
    )


def _evaluate(expression: str, context: dict[str, Any], name: str, what: str) -> Any:
    try:
        return compile_expression(expression).execute(context)
    except Exception as exc:
        raise WebhookBodyError(
            f"webhook {name!r}: {what} {expression!r} failed on this body: "
            f"{type(exc).__name__}: {exc}"
        ) from None


__all__ = [
    "DEDUP_PRESETS",
    "DEDUP_WINDOW_S",
    "WEBHOOK_METADATA",
    "Received",
    "UnknownWebhookError",
    "WebhookBodyError",
    "WebhookSpec",
    "Webhooks",
    "check_name",
    "webhook_path",
]
