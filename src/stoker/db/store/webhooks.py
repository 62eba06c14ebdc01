"""Incoming webhooks: managed through the API, looked up for each POST they receive.

Statements of ``db/sql/webhooks.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

from stoker.db.store import Exec, Many, NoParams, One


class WebhookRow(TypedDict):
    """A webhook as the API shows it (never its secret)."""

    external_id: uuid.UUID
    name: str
    auth_kind: str
    auth_options: dict[str, Any]
    event_key_expression: str
    scope_expression: str | None
    dedup_expression: str | None
    tenant_external_id: uuid.UUID
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookRow):
    """A webhook with its encrypted secret."""

    secret: bytes


@dataclass(frozen=True, slots=True)
class InsertWebhook:
    tenant_id: int
    external_id: uuid.UUID
    name: str
    auth_kind: str
    auth_options: str
    secret: bytes
    event_key_expression: str
    scope_expression: str | None
    dedup_expression: str | None


insert_webhook = One[InsertWebhook, WebhookRow]("insert_webhook")


@dataclass(frozen=True, slots=True)
class ListWebhooks:
    tenant_id: int


list_webhooks = Many[ListWebhooks, WebhookRow]("list_webhooks")


@dataclass(frozen=True, slots=True)
class GetWebhook:
    tenant_id: int
    name: str


get_webhook = One[GetWebhook, WebhookWithSecret]("get_webhook")


@dataclass(frozen=True, slots=True)
class UpdateWebhook:
    tenant_id: int
    name: str
    auth_kind: str
    auth_options: str
    secret: bytes
    event_key_expression: str
    scope_expression: str | None
    dedup_expression: str | None


update_webhook = One[UpdateWebhook, WebhookRow]("update_webhook")


@dataclass(frozen=True, slots=True)
class DeleteWebhook:
    tenant_id: int
    name: str


delete_webhook = Exec[DeleteWebhook]("delete_webhook")


@dataclass(frozen=True, slots=True)
class FindWebhook:
    tenant_external_id: uuid.UUID
    name: str


class ReceivingWebhook(TypedDict):
    """What a POST to a webhook needs: how to check it and how to make its event."""

    id: int
    tenant_id: int
    external_id: uuid.UUID
    name: str
    auth_kind: str
    auth_options: dict[str, Any]
    secret: bytes
    event_key_expression: str
    scope_expression: str | None
    dedup_expression: str | None


find_webhook = One[FindWebhook, ReceivingWebhook]("find_webhook")


class StoredSecret(TypedDict):
    id: int
    external_id: uuid.UUID
    secret: bytes


webhook_secrets = Many[NoParams, StoredSecret]("webhook_secrets")


@dataclass(frozen=True, slots=True)
class SetWebhookSecret:
    id: int
    secret: bytes


set_webhook_secret = Exec[SetWebhookSecret]("set_webhook_secret")
