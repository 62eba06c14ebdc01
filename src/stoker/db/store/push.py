"""HTTP push endpoints: registered through the Push service, attached by the leader.

Statements of ``db/sql/push.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

from stoker.db.store import Exec, Many, NoParams, One


class PushEndpointRow(TypedDict):
    """An endpoint as the API shows it (never its secret)."""

    external_id: uuid.UUID
    name: str
    url: str
    slots: int
    task_names: list[str]
    updated_at: datetime


class PushEndpointWithSecret(PushEndpointRow):
    """An endpoint with its tenant and encrypted secret."""

    tenant_id: int
    secret: bytes


@dataclass(frozen=True, slots=True)
class UpsertPushEndpoint:
    tenant_id: int
    external_id: uuid.UUID
    name: str
    url: str
    slots: int
    task_names: list[str]
    secret: bytes


upsert_push_endpoint = One[UpsertPushEndpoint, PushEndpointRow]("upsert_push_endpoint")


@dataclass(frozen=True, slots=True)
class PushEndpointName:
    tenant_id: int
    name: str


class PushEndpointId(TypedDict):
    external_id: uuid.UUID


push_endpoint_id = One[PushEndpointName, PushEndpointId]("push_endpoint_id")
delete_push_endpoint = One[PushEndpointName, PushEndpointId]("delete_push_endpoint")


@dataclass(frozen=True, slots=True)
class ListPushEndpoints:
    tenant_id: int


list_push_endpoints = Many[ListPushEndpoints, PushEndpointRow]("list_push_endpoints")
all_push_endpoints = Many[NoParams, PushEndpointWithSecret]("all_push_endpoints")


@dataclass(frozen=True, slots=True)
class SetPushEndpointSecret:
    external_id: uuid.UUID
    secret: bytes


set_push_endpoint_secret = Exec[SetPushEndpointSecret]("set_push_endpoint_secret")
