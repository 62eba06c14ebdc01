"""Reading the tenant's crons: ``app.crons.list()`` and ``app.crons.get(name)``.

Crons are declared on tasks (``@app.task(on_crons=[...])``) and registered with them; a
code cron is named ``"<task>:<expression>"``."""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from stoker._proto import engine_pb2 as pb

if TYPE_CHECKING:
    from stoker._sdk.calls import Connection


@dataclass(frozen=True, slots=True)
class CronInfo:
    """A cron as the engine stores it."""

    name: str
    task_name: str
    expression: str
    timezone: str
    enabled: bool
    source: str
    """``"code"``: declared with ``on_crons``."""
    input: Any
    next_fire_times: list[datetime]
    """The next few ticks (UTC); the first is the next one to fire."""

    @classmethod
    def from_proto(cls, c: pb.CronInfo) -> CronInfo:
        return cls(
            name=c.name,
            task_name=c.task_name,
            expression=c.expression,
            timezone=c.timezone,
            enabled=c.enabled,
            source=c.source,
            input=json.loads(c.input) if c.input else None,
            next_fire_times=[datetime.fromtimestamp(ms / 1000, UTC) for ms in c.next_fire_at_ms],
        )


class Crons:
    """The tenant's crons (``app.crons``); a missing name raises NotFoundError."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def list(self) -> list[CronInfo]:
        """Every cron of the tenant, by name."""
        resp = self._connection.calls.list_crons(pb.ListCronsRequest())
        return [CronInfo.from_proto(c) for c in resp.crons]

    async def aio_list(self) -> builtins.list[CronInfo]:
        resp = await self._connection.calls.aio_list_crons(pb.ListCronsRequest())
        return [CronInfo.from_proto(c) for c in resp.crons]

    def get(self, name: str) -> CronInfo:
        """The cron named ``name`` (e.g. ``"report:0 9 * * MON-FRI"``)."""
        resp = self._connection.calls.list_crons(pb.ListCronsRequest(name=name))
        return CronInfo.from_proto(resp.crons[0])

    async def aio_get(self, name: str) -> CronInfo:
        resp = await self._connection.calls.aio_list_crons(pb.ListCronsRequest(name=name))
        return CronInfo.from_proto(resp.crons[0])
