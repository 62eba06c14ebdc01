"""Stored events and subscriber filters, as the SDK, REST and CLI manage them.

Pushing events is the event ingest's (:meth:`WorkflowIngest.push_events
<stoker.engine.ingest.workflows.WorkflowIngest.push_events>`, the one entry point whatever
brings the events); which runs an event starts is :mod:`stoker.engine.ingest.events`. This
module reads events (list, get with the runs they started), replays them (through the
ingest), and creates, reads, changes and deletes filters. A filter's CEL expression is
compiled before anything is stored, and a filter declared in code (``default_filters``) is
managed by registration: it cannot be changed or deleted here.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from stoker._core.cel import compile_expression
from stoker._core.wire import json_problem, text_problem
from stoker.db import Executor
from stoker.db.store import events as event_store
from stoker.engine.definitions import Definitions
from stoker.engine.ingest.workflows import EventInput, Pushed, WorkflowIngest
from stoker.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError

DEFAULT_LIST = 100
MAX_LIST = 1000
MAX_SCOPE = 500


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a list returns; every set field must match."""

    key: str | None = None
    scope: str | None = None
    metadata: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_LIST


@dataclass(frozen=True, slots=True)
class Event:
    """A stored event and the runs it started."""

    row: event_store.EventRow
    runs: list[event_store.EventRunRow]


def _uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except (ValueError, TypeError, AttributeError):
        raise NotFoundError(f"no {what} with id {raw!r} ({what} ids are UUIDs)") from None


def _check_text(**values: str) -> None:
    """InvalidRequestError for a name or filter value holding NUL (no row can match it)."""
    for what, value in values.items():
        if text_problem(value):
            raise InvalidRequestError(f"{what} {value[:50]!r} is refused: it holds NUL")


def check_expression(expression: str) -> str:
    """A filter's CEL expression, compiled now; InvalidRequestError naming the problem."""
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidRequestError("a filter needs a CEL expression (e.g. 'input.amount > 100')")
    if text_problem(expression):
        raise InvalidRequestError("a filter's expression cannot hold a NUL character")
    try:
        compile_expression(expression)
    except (ValueError, RuntimeError) as exc:
        raise InvalidRequestError(
            f"filter expression {expression!r} is not valid CEL: {exc}"
        ) from None
    return expression


def check_scope(scope: str) -> str:
    if len(scope) > MAX_SCOPE or text_problem(scope):
        raise InvalidRequestError(
            f"filter scope {scope[:50]!r} must be at most {MAX_SCOPE} characters, without NUL"
        )
    return scope


class EventAdmin:
    """Reads and replays events; manages filters."""

    def __init__(
        self,
        db: Executor,
        definitions: Definitions,
        ingest: WorkflowIngest,
        *,
        max_payload_bytes: int,
    ) -> None:
        self._db = db
        self._definitions = definitions
        self._ingest = ingest
        self._max_payload = max_payload_bytes

    # -- events -------------------------------------------------------------------------

    async def push(self, tenant_id: int, events: list[EventInput]) -> Pushed:
        """Ingests events (the event ingest's one entry point)."""
        return await self._ingest.push_events(tenant_id, events)

    async def list_events(self, tenant_id: int, f: EventFilter) -> list[event_store.EventSummary]:
        """The tenant's events matching ``f``, newest first."""
        if not 0 < f.limit <= MAX_LIST:
            raise InvalidRequestError(f"limit must be 1 to {MAX_LIST}, got {f.limit}")
        _check_text(key=f.key or "", scope=f.scope or "")
        return await event_store.list_events(
            self._db,
            event_store.ListEvents(
                tenant_id, f.key or None, f.scope or None, f.metadata, f.since, f.until, f.limit
            ),
        )

    async def get(self, tenant_id: int, event_id: str) -> Event:
        """One event with its payload and the runs it started; NotFoundError."""
        row = await event_store.get_event(
            self._db, event_store.GetEvent(tenant_id, _uuid(event_id, "event"))
        )
        if row is None:
            raise NotFoundError(f"no event with id {event_id}")
        runs = await event_store.event_runs(
            self._db, event_store.EventRuns(row["id"], row["created_at"])
        )
        return Event(row, runs)

    async def replay(self, tenant_id: int, event_id: str) -> list[str]:
        """Starts the event's runs again; the new runs' ids."""
        _uuid(event_id, "event")
        return await self._ingest.replay_event(tenant_id, event_id)

    # -- filters ------------------------------------------------------------------------

    def _payload(self, payload: bytes) -> str:
        """A filter's payload as stored; it must be a JSON object within the payload limit."""
        if not payload:
            return "{}"
        if len(payload) > self._max_payload:
            raise PayloadTooLargeError(
                f"filter payload is {len(payload)} bytes, over the limit of "
                f"{self._max_payload} bytes"
            )
        problem = json_problem(payload)
        if problem is not None:
            raise InvalidRequestError(f"filter payload is refused: {problem}")
        value = json.loads(payload)
        if not isinstance(value, dict):
            raise InvalidRequestError("a filter's payload must be a JSON object")
        return json.dumps(value)

    async def _target(
        self, tenant_id: int, task_name: str, workflow_name: str, name: str
    ) -> tuple[str | None, str | None]:
        """(task, workflow) a new filter belongs to, checked against what is registered."""
        _check_text(task_name=task_name, workflow_name=workflow_name, name=name)
        given = [n for n in (task_name, workflow_name, name) if n]
        if len(given) != 1:
            raise InvalidRequestError(
                "a filter belongs to exactly one task or workflow: give one name"
            )
        if name:
            workflows = await self._definitions.workflows(tenant_id, refresh=True)
            if name in workflows:
                workflow_name = name
            else:
                task_name = name
        if workflow_name:
            await self._definitions.resolve(tenant_id, workflow_names=[workflow_name])
            return None, workflow_name
        await self._definitions.resolve(tenant_id, [task_name])
        return task_name, None

    async def create_filter(
        self,
        tenant_id: int,
        *,
        task_name: str = "",
        workflow_name: str = "",
        name: str = "",
        expression: str,
        scope: str = "",
        payload: bytes = b"",
    ) -> event_store.FilterInfo:
        """Stores a filter of a registered task or workflow (everything checked first)."""
        check_expression(expression)
        check_scope(scope)
        stored_payload = self._payload(payload)
        task, workflow = await self._target(tenant_id, task_name, workflow_name, name)
        row = await event_store.create_filter(
            self._db,
            event_store.CreateFilter(
                tenant_id, task, workflow, scope or None, expression, stored_payload
            ),
        )
        assert row is not None
        return row

    async def list_filters(
        self,
        tenant_id: int,
        *,
        filter_id: str = "",
        task_name: str = "",
        workflow_name: str = "",
        scope: str = "",
        limit: int = DEFAULT_LIST,
    ) -> list[event_store.FilterInfo]:
        """The tenant's filters (code and api), oldest first, narrowed by what is given."""
        if not 0 < limit <= MAX_LIST:
            raise InvalidRequestError(f"limit must be 1 to {MAX_LIST}, got {limit}")
        _check_text(task_name=task_name, workflow_name=workflow_name, scope=scope)
        return await event_store.list_filters(
            self._db,
            event_store.ListFilters(
                tenant_id,
                _uuid(filter_id, "filter") if filter_id else None,
                task_name or None,
                workflow_name or None,
                scope or None,
                limit,
            ),
        )

    async def get_filter(self, tenant_id: int, filter_id: str) -> event_store.FilterInfo:
        found = await self.list_filters(tenant_id, filter_id=filter_id, limit=1)
        if not found:
            raise NotFoundError(f"no filter with id {filter_id}")
        return found[0]

    async def update_filter(
        self,
        tenant_id: int,
        filter_id: str,
        *,
        expression: str | None = None,
        scope: str | None = None,
        payload: bytes | None = None,
    ) -> event_store.FilterInfo:
        """Changes a filter created through the API (a code filter is refused)."""
        current = await self.get_filter(tenant_id, filter_id)
        if current["source"] == "code":
            raise InvalidRequestError(
                f"filter {filter_id} is declared in code (default_filters): change it there"
            )
        if expression is not None:
            check_expression(expression)
        if scope is not None:
            check_scope(scope)
        row = await event_store.update_filter(
            self._db,
            event_store.UpdateFilter(
                tenant_id,
                current["external_id"],
                expression,
                scope or None,
                scope == "",
                self._payload(payload) if payload is not None else None,
            ),
        )
        if row is None:
            raise NotFoundError(f"no filter with id {filter_id}")
        return row

    async def delete_filter(self, tenant_id: int, filter_id: str) -> None:
        """Deletes a filter created through the API (a code filter is refused)."""
        current = await self.get_filter(tenant_id, filter_id)
        if current["source"] == "code":
            raise InvalidRequestError(
                f"filter {filter_id} is declared in code (default_filters): remove it there"
            )
        await event_store.delete_filter(
            self._db, event_store.DeleteFilter(tenant_id, current["external_id"])
        )


__all__ = ["DEFAULT_LIST", "MAX_LIST", "Event", "EventAdmin", "EventFilter", "check_expression"]
