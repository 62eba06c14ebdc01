"""NOTIFY between engine replicas.

Statements of ``db/sql/notify.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

from dataclasses import dataclass

from stoker.db.store import Exec


@dataclass(frozen=True, slots=True)
class Notify:
    channel: str
    payload: str


notify = Exec[Notify]("notify")


@dataclass(frozen=True, slots=True)
class NotifyMany:
    channels: list[str]
    payloads: list[str]


notify_many = Exec[NotifyMany]("notify_many")
