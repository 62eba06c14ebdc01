"""``app.runs``: list and read runs; cancel and replay runs, one by id or many by id or
filter (at once, or as a bulk operation whose progress is read from its handle); reset a
durable run's log to a position."""

from __future__ import annotations

import asyncio
import builtins
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from stoker._core.wire import encode_json
from stoker._proto import admin_pb2 as apb
from stoker._proto import workflows_pb2 as wpb
from stoker._sdk import observe
from stoker._sdk.observe import LogLine, RunEvent
from stoker._sdk.workers import at
from stoker.errors import InvalidRequestError, NotFoundError

if TYPE_CHECKING:
    from stoker._sdk.calls import Connection
    from stoker._sdk.refs import RunRef


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What a cancel or replay did to one run.

    ``outcome`` is ``"cancelled"``, ``"replayed"``, ``"already_finished"`` (cancel of a
    finished run: nothing done), ``"completed"`` (replay of a completed run: nothing done),
    ``"not_finished"`` (replay of a running run) or ``"not_found"``.
    """

    run_id: str
    outcome: str
    status: str
    message: str


def _outcomes(resp: wpb.CancelRunsResponse | wpb.ReplayRunsResponse) -> list[RunOutcome]:
    return [RunOutcome(o.run_id, o.outcome, o.status, o.message) for o in resp.outcomes]


def _filter(
    workflow: str | Sequence[str] | None,
    status: str | Sequence[str] | None,
    since: datetime | None,
    until: datetime | None,
    additional_metadata: Mapping[str, Any] | None,
) -> wpb.RunFilter:
    def names(v: str | Sequence[str] | None) -> list[str]:
        if v is None:
            return []
        return [v] if isinstance(v, str) else list(v)

    def ms(at: datetime | None) -> int:
        return int(at.timestamp() * 1000) if at else 0

    return wpb.RunFilter(
        names=names(workflow),
        statuses=[s.upper() for s in names(status)],
        since_ms=ms(since),
        until_ms=ms(until),
        additional_metadata=encode_json(dict(additional_metadata), "filter additional_metadata")
        if additional_metadata
        else b"",
    )


def _single(outcomes: list[RunOutcome], run_id: str) -> RunOutcome:
    if not outcomes:
        raise NotFoundError(f"no run with id {run_id}")
    o = outcomes[0]
    if o.outcome == "not_found":
        raise NotFoundError(o.message or f"no run with id {run_id}")
    return o


@dataclass(frozen=True, slots=True)
class ResetOutcome:
    """What ``app.runs.reset`` did: the log's ``branch`` made active, forking at
    ``position``; the ``invocation`` it was fenced to; how many pending waits it
    ``dropped``; the run's ``status`` afterwards (``"QUEUED"``: its task runs again)."""

    run_id: str
    position: int
    branch: int
    invocation: int
    dropped: int
    status: str


def _reset(resp: wpb.ResetRunResponse) -> ResetOutcome:
    return ResetOutcome(
        resp.run_id, resp.position, resp.branch, resp.invocation, resp.dropped, resp.status
    )


def _reset_request(run_id: str | RunRef[Any], position: int, reason: str) -> wpb.ResetRunRequest:
    rid = run_id if isinstance(run_id, str) else run_id.run_id
    if isinstance(position, bool) or not isinstance(position, int):
        raise TypeError(f"reset position must be an int, not {type(position).__name__}")
    if not 1 <= position <= 2**31 - 1:
        raise InvalidRequestError(f"reset position {position} is refused: positions start at 1")
    return wpb.ResetRunRequest(run_id=rid, position=position, reason=reason)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A task run as stored: ``input`` and ``output`` are its JSON values (``output`` and
    ``input`` are None in a listed page; :meth:`Runs.get` has them); ``error`` a failed or
    cancelled run's ``{"type", "message", "traceback"}``."""

    run_id: str
    task_name: str
    status: str
    attempt: int
    retry_count: int
    priority: int
    additional_metadata: dict[str, Any]
    error: dict[str, Any] | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    worker_id: str | None
    input: Any = None
    output: Any = None


def _json(raw: bytes) -> Any:
    return json.loads(raw) if raw else None


def _run(r: apb.RunInfo) -> RunInfo:
    return RunInfo(
        run_id=r.run_id,
        task_name=r.task_name,
        status=r.status,
        attempt=r.attempt,
        retry_count=r.retry_count,
        priority=r.priority,
        additional_metadata=_json(r.additional_metadata) or {},
        error=_json(r.error),
        created_at=at(r.created_at_ms),
        started_at=at(r.started_at_ms),
        finished_at=at(r.finished_at_ms),
        worker_id=r.worker_id or None,
        input=_json(r.input),
        output=_json(r.output),
    )


@dataclass(frozen=True, slots=True)
class RunPage:
    """A page of runs, newest first; pass ``next_cursor`` to get the next (None: last)."""

    items: list[RunInfo]
    next_cursor: str | None


def _list_request(
    status: str | Sequence[str] | None,
    task_name: str | None,
    since: datetime | None,
    until: datetime | None,
    cursor: str | None,
    limit: int,
) -> apb.ListRunsRequest:
    statuses = [status] if isinstance(status, str) else list(status or [])
    if not 1 <= limit <= 500:
        raise InvalidRequestError(f"limit {limit} is outside 1..500")
    return apb.ListRunsRequest(
        statuses=[s.upper() for s in statuses],
        task_name=task_name or "",
        since_ms=int(since.timestamp() * 1000) if since else 0,
        until_ms=int(until.timestamp() * 1000) if until else 0,
        cursor=cursor or "",
        limit=limit,
    )


def _page(resp: apb.ListRunsResponse) -> RunPage:
    return RunPage([_run(r) for r in resp.items], resp.next_cursor or None)


@dataclass(frozen=True, slots=True)
class BulkProgress:
    """Where a bulk operation stands: ``state`` RUNNING, COMPLETED or FAILED; ``done``
    (applied, or nothing left to do) and ``failed`` (unknown run, replay of a running run)
    of ``total``."""

    operation_id: str
    action: str
    state: str
    total: int
    done: int
    failed: int
    reason: str
    error: str | None
    created_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.state != "RUNNING"


def _progress(b: apb.BulkOperationInfo) -> BulkProgress:
    return BulkProgress(
        b.operation_id,
        b.action,
        b.state,
        b.total,
        b.done,
        b.failed,
        b.reason,
        b.error or None,
        at(b.created_at_ms),
        at(b.finished_at_ms),
    )


class BulkOperation:
    """The handle of a bulk cancel or replay running in the engine: ``progress`` is what
    was read last, ``refresh()`` reads it again, ``wait()`` until it finishes."""

    def __init__(self, connection: Connection, progress: BulkProgress) -> None:
        self._connection = connection
        self.progress = progress

    @property
    def operation_id(self) -> str:
        return self.progress.operation_id

    def __repr__(self) -> str:
        p = self.progress
        return (
            f"<BulkOperation {p.operation_id} {p.action} {p.state} {p.done + p.failed}/{p.total}>"
        )

    def refresh(self) -> BulkProgress:
        """Reads the operation's progress again (from any engine replica)."""
        req = apb.GetBulkOperationRequest(operation_id=self.operation_id)
        self.progress = _progress(self._connection.calls.get_bulk_operation(req))
        return self.progress

    async def aio_refresh(self) -> BulkProgress:
        req = apb.GetBulkOperationRequest(operation_id=self.operation_id)
        self.progress = _progress(await self._connection.calls.aio_get_bulk_operation(req))
        return self.progress

    def wait(self, timeout: float = 60.0) -> BulkProgress:
        """Polls the progress until the operation finishes; TimeoutError after
        ``timeout`` seconds."""
        deadline, pause = time.monotonic() + timeout, 0.05
        while not self.progress.finished:
            if time.monotonic() > deadline:
                raise TimeoutError(f"bulk operation {self.operation_id} is still running")
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
            self.refresh()
        return self.progress

    async def aio_wait(self, timeout: float = 60.0) -> BulkProgress:
        deadline, pause = time.monotonic() + timeout, 0.05
        while not self.progress.finished:
            if time.monotonic() > deadline:
                raise TimeoutError(f"bulk operation {self.operation_id} is still running")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)
            await self.aio_refresh()
        return self.progress


class Runs:
    """Cancel and replay runs: ``app.runs.cancel(run_id)``, ``app.runs.replay(run_id)``;
    ``app.runs.reset(run_id, position)`` for a durable task's run.

    A run id is a workflow run's or a single task run's. Bulk forms take ids, or a filter
    (workflow/task names, statuses, creation time range, additional metadata that the
    runs' metadata must contain).

    ``app.runs.list(...)`` and ``get(run_id)`` read task runs; ``start_bulk_cancel`` and
    ``start_bulk_replay`` start a bulk operation in the engine and return its
    :class:`BulkOperation` handle.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    # -- reading ------------------------------------------------------------------------

    def list(
        self,
        *,
        status: str | Sequence[str] | None = None,
        task_name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> RunPage:
        """A page of the tenant's task runs, newest first (``limit`` 1..500); pass the
        page's ``next_cursor`` as ``cursor`` for the next one."""
        req = _list_request(status, task_name, since, until, cursor, limit)
        return _page(self._connection.calls.list_runs(req))

    async def aio_list(
        self,
        *,
        status: str | Sequence[str] | None = None,
        task_name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> RunPage:
        req = _list_request(status, task_name, since, until, cursor, limit)
        return _page(await self._connection.calls.aio_list_runs(req))

    def iter(
        self,
        *,
        status: str | Sequence[str] | None = None,
        task_name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 100,
    ) -> Iterator[RunInfo]:
        """Every matching run, newest first, read a page at a time."""
        cursor: str | None = None
        while True:
            page = self.list(
                status=status,
                task_name=task_name,
                since=since,
                until=until,
                cursor=cursor,
                limit=page_size,
            )
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def aio_iter(
        self,
        *,
        status: str | Sequence[str] | None = None,
        task_name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[RunInfo]:
        cursor: str | None = None
        while True:
            page = await self.aio_list(
                status=status,
                task_name=task_name,
                since=since,
                until=until,
                cursor=cursor,
                limit=page_size,
            )
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def get(self, run_id: str | RunRef[Any]) -> RunInfo:
        """One task run with its input and output; NotFoundError for an unknown id."""
        rid = run_id if isinstance(run_id, str) else run_id.run_id
        return _run(self._connection.calls.get_run(apb.GetRunRequest(run_id=rid)))

    async def aio_get(self, run_id: str | RunRef[Any]) -> RunInfo:
        rid = run_id if isinstance(run_id, str) else run_id.run_id
        return _run(await self._connection.calls.aio_get_run(apb.GetRunRequest(run_id=rid)))

    def results(
        self,
        refs: Sequence[RunRef[Any] | str],
        *,
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> builtins.list[Any]:
        """The results of many runs, in the order given, waiting for those not finished:
        what ``[ref.result() for ref in refs]`` returns, in one ``AwaitRuns`` call per
        10,000 runs (and one more round for each batch of runs still running). A
        :class:`RunRef`'s output is decoded by its task; a plain id's is JSON.

        A run that failed or was cancelled raises its TaskRunError / RunCancelledError
        (and an unknown id NotFoundError) — the first such run an answer brings, which
        need not be the earliest in ``refs`` — unless ``return_exceptions``: then the error
        takes the run's place in the list, as with ``asyncio.gather``. TimeoutError when
        some runs are still running after ``timeout`` seconds."""
        from stoker._sdk.refs import collect

        return collect(self._connection, refs, timeout, return_exceptions)

    async def aio_results(
        self,
        refs: Sequence[RunRef[Any] | str],
        *,
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> builtins.list[Any]:
        from stoker._sdk.refs import aio_collect

        return await aio_collect(self._connection, refs, timeout, return_exceptions)

    # -- bulk operations ----------------------------------------------------------------

    def _bulk_request(
        self,
        action: str,
        run_ids: Sequence[str] | None,
        workflow: str | Sequence[str] | None,
        status: str | Sequence[str] | None,
        since: datetime | None,
        until: datetime | None,
        additional_metadata: Mapping[str, Any] | None,
        reason: str,
        confirm: bool,
    ) -> apb.StartBulkOperationRequest:
        req = apb.StartBulkOperationRequest(
            action=action, run_ids=list(run_ids or []), reason=reason, confirm=confirm
        )
        if not run_ids:
            req.filter.CopyFrom(_filter(workflow, status, since, until, additional_metadata))
        return req

    def start_bulk_cancel(
        self,
        run_ids: Sequence[str] | None = None,
        *,
        workflow: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
        reason: str = "",
        confirm: bool = False,
    ) -> BulkOperation:
        """Starts cancelling runs by id, or every unfinished run matching the filter, in
        the engine; returns the operation's handle at once.

        ConflictError when the filter matches more runs than the engine's bulk cap
        (``STOKER_BULK_CAP``) and ``confirm`` is not set; the message names the count.
        """
        req = self._bulk_request(
            "cancel", run_ids, workflow, status, since, until, additional_metadata, reason, confirm
        )
        info = self._connection.calls.start_bulk_operation(req)
        return BulkOperation(self._connection, _progress(info))

    async def aio_start_bulk_cancel(
        self,
        run_ids: Sequence[str] | None = None,
        *,
        workflow: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
        reason: str = "",
        confirm: bool = False,
    ) -> BulkOperation:
        req = self._bulk_request(
            "cancel", run_ids, workflow, status, since, until, additional_metadata, reason, confirm
        )
        info = await self._connection.calls.aio_start_bulk_operation(req)
        return BulkOperation(self._connection, _progress(info))

    def start_bulk_replay(
        self,
        run_ids: Sequence[str] | None = None,
        *,
        workflow: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
        confirm: bool = False,
    ) -> BulkOperation:
        """Starts replaying runs by id, or every failed or cancelled run matching the
        filter; returns the operation's handle (the cap as for :meth:`start_bulk_cancel`)."""
        req = self._bulk_request(
            "replay", run_ids, workflow, status, since, until, additional_metadata, "", confirm
        )
        info = self._connection.calls.start_bulk_operation(req)
        return BulkOperation(self._connection, _progress(info))

    async def aio_start_bulk_replay(
        self,
        run_ids: Sequence[str] | None = None,
        *,
        workflow: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
        confirm: bool = False,
    ) -> BulkOperation:
        req = self._bulk_request(
            "replay", run_ids, workflow, status, since, until, additional_metadata, "", confirm
        )
        info = await self._connection.calls.aio_start_bulk_operation(req)
        return BulkOperation(self._connection, _progress(info))

    def bulk_operation(self, operation_id: str) -> BulkOperation:
        """The handle of an operation started earlier (here or elsewhere), read now;
        NotFoundError for an unknown id."""
        req = apb.GetBulkOperationRequest(operation_id=operation_id)
        return BulkOperation(
            self._connection, _progress(self._connection.calls.get_bulk_operation(req))
        )

    def cancel(self, run_id: str | RunRef[Any], reason: str = "") -> RunOutcome:
        """Cancels a run, its queued and running tasks and its child runs.

        NotFoundError for an unknown id; a finished run is left alone and the outcome says
        so (``outcome == "already_finished"``).
        """
        rid = run_id if isinstance(run_id, str) else run_id.run_id
        req = wpb.CancelRunsRequest(run_ids=[rid], reason=reason)
        return _single(_outcomes(self._connection.calls.cancel_runs(req)), rid)

    async def aio_cancel(self, run_id: str | RunRef[Any], reason: str = "") -> RunOutcome:
        rid = run_id if isinstance(run_id, str) else run_id.run_id
        req = wpb.CancelRunsRequest(run_ids=[rid], reason=reason)
        return _single(_outcomes(await self._connection.calls.aio_cancel_runs(req)), rid)

    def bulk_cancel(
        self,
        run_ids: Sequence[str] | None = None,
        *,
        workflow: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
        reason: str = "",
    ) -> builtins.list[RunOutcome]:
        """Cancels runs by id, or every run matching the filter (at most 10,000 a call)."""
        req = wpb.CancelRunsRequest(run_ids=list(run_ids or []), reason=reason)
        if not run_ids:
            req.filter.CopyFrom(_filter(workflow, status, since, until, additional_metadata))
        return _outcomes(self._connection.calls.cancel_runs(req))

    def replay(self, run_id: str | RunRef[Any]) -> RunOutcome:
        """Re-runs a finished run from its failed or cancelled tasks, with the same input;
        tasks that succeeded keep their outputs. NotFoundError for an unknown id.

        A durable task's run replays with its log: recorded calls return their recorded
        outcomes (completed steps do not run again) and the body continues after them.
        """
        rid = run_id if isinstance(run_id, str) else run_id.run_id
        req = wpb.ReplayRunsRequest(run_ids=[rid])
        return _single(_outcomes(self._connection.calls.replay_runs(req)), rid)

    async def aio_replay(self, run_id: str | RunRef[Any]) -> RunOutcome:
        rid = run_id if isinstance(run_id, str) else run_id.run_id
        req = wpb.ReplayRunsRequest(run_ids=[rid])
        return _single(_outcomes(await self._connection.calls.aio_replay_runs(req)), rid)

    def reset(self, run_id: str | RunRef[Any], position: int, reason: str = "") -> ResetOutcome:
        """Branches a durable run's log at ``position`` and runs its task again.

        Calls before ``position`` replay their recorded outcomes; the call at ``position``
        and every later one execute again (their old entries stay in the log's earlier
        branch). Pending waits at or after it are dropped; a running attempt is stopped and
        a finished run reopens. ``position`` goes from 1 (everything runs again) to the
        log's last position + 1 (nothing does; the body continues after the log).
        NotFoundError for an unknown run; InvalidRequestError for a position out of range
        or a run that is not a durable task's.
        """
        req = _reset_request(run_id, position, reason)
        return _reset(self._connection.calls.reset_run(req))

    async def aio_reset(
        self, run_id: str | RunRef[Any], position: int, reason: str = ""
    ) -> ResetOutcome:
        req = _reset_request(run_id, position, reason)
        return _reset(await self._connection.calls.aio_reset_run(req))

    def bulk_replay(
        self,
        run_ids: Sequence[str] | None = None,
        *,
        workflow: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
    ) -> builtins.list[RunOutcome]:
        """Replays runs by id, or every finished run matching the filter."""
        req = wpb.ReplayRunsRequest(run_ids=list(run_ids or []))
        if not run_ids:
            req.filter.CopyFrom(_filter(workflow, status, since, until, additional_metadata))
        return _outcomes(self._connection.calls.replay_runs(req))

    # -- logs, streams and events -------------------------------------------------------

    def logs(self, run_id: str | RunRef[Any]) -> builtins.list[LogLine]:
        """Every line the run logged so far (a workflow run: all its steps'), oldest first:
        ``ctx.log`` lines and ``logging`` records emitted inside its attempts.
        NotFoundError for an unknown run."""
        return observe.read_logs(self._connection, _rid(run_id))

    async def aio_logs(self, run_id: str | RunRef[Any]) -> builtins.list[LogLine]:
        return await observe.aio_read_logs(self._connection, _rid(run_id))

    def follow_logs(self, run_id: str | RunRef[Any]) -> Iterator[LogLine]:
        """The run's lines, then new ones as they come, until the run finished and its
        last lines were read (what ``stoker logs --follow`` prints)."""
        return observe.follow_logs(self._connection, _rid(run_id))

    def stream(self, run_id: str | RunRef[Any], attempt: int = 0) -> AsyncIterator[str | bytes]:
        """``async for chunk in app.runs.stream(run_id)``: what a task run's attempt (the
        latest, or ``attempt``) published with ``ctx.put_stream``, from the first chunk,
        live until the attempt ends (see :meth:`RunRef.stream`)."""
        return observe.read_stream(self._connection, _rid(run_id), attempt)

    def events(
        self,
        run_id: str | RunRef[Any] | None = None,
        *,
        task_name: str | None = None,
        additional_metadata: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[RunEvent]:
        """``async for event in app.runs.events(...)``: the events of one run, from its
        first, until it finishes; or, without ``run_id``, of every run created from now
        on whose task is ``task_name`` and whose metadata contains
        ``additional_metadata``, until the caller stops reading."""
        return observe.watch_runs(
            self._connection,
            run_id=_rid(run_id) if run_id is not None else "",
            task_name=task_name,
            additional_metadata=additional_metadata,
        )


def _rid(run_id: str | RunRef[Any]) -> str:
    return run_id if isinstance(run_id, str) else run_id.run_id


__all__ = [
    "BulkOperation",
    "BulkProgress",
    "ResetOutcome",
    "RunInfo",
    "RunOutcome",
    "RunPage",
    "Runs",
]
