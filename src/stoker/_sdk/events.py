"""``app.events``: user events, which satisfy the ``UserEventCondition`` waits of workflow
steps (scoped to one workflow run, or to every run of the tenant)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pydantic_core

from stoker._core.wire import checked_json, encode_json
from stoker._proto import workflows_pb2 as wpb
from stoker._sdk.calls import request_key

if TYPE_CHECKING:
    from stoker._sdk.calls import Connection


class Events:
    """User events: ``app.events.push("payment:settled", {"order_id": 7})``."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @staticmethod
    def _request(
        key: str, payload: Any, scope: str | None, additional_metadata: Mapping[str, Any] | None
    ) -> wpb.PushEventsRequest:
        if not key:
            raise ValueError("an event needs a key")
        return wpb.PushEventsRequest(
            events=[
                wpb.UserEvent(
                    key=key,
                    payload=checked_json(pydantic_core.to_json(payload), f"event {key!r}: payload"),
                    additional_metadata=encode_json(
                        dict(additional_metadata or {}), f"event {key!r}: additional_metadata"
                    ),
                    scope=scope or "",
                )
            ],
            request_key=request_key(),
        )

    def push(
        self,
        key: str,
        payload: Any = None,
        *,
        scope: str | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Pushes an event; returns how many waiting conditions it satisfied.

        ``scope``: a workflow run id; only that run's conditions can match the event.
        """
        req = self._request(key, payload, scope, additional_metadata)
        resp = self._connection.calls.push_events(req)
        return int(resp.satisfied)

    async def aio_push(
        self,
        key: str,
        payload: Any = None,
        *,
        scope: str | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
    ) -> int:
        req = self._request(key, payload, scope, additional_metadata)
        resp = await self._connection.calls.aio_push_events(req)
        return int(resp.satisfied)


__all__ = ["Events"]
