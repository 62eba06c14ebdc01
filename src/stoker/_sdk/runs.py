"""``app.runs``: cancel and replay runs, one by id or many by id or filter; reset a
durable run's log to a position."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from stoker._core.wire import encode_json
from stoker._proto import workflows_pb2 as wpb
from stoker._sdk import observe
from stoker._sdk.observe import LogLine, RunEvent
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


class Runs:
    """Cancel and replay runs: ``app.runs.cancel(run_id)``, ``app.runs.replay(run_id)``;
    ``app.runs.reset(run_id, position)`` for a durable task's run.

    A run id is a workflow run's or a single task run's. Bulk forms take ids, or a filter
    (workflow/task names, statuses, creation time range, additional metadata that the
    runs' metadata must contain).
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

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
    ) -> list[RunOutcome]:
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
    ) -> list[RunOutcome]:
        """Replays runs by id, or every finished run matching the filter."""
        req = wpb.ReplayRunsRequest(run_ids=list(run_ids or []))
        if not run_ids:
            req.filter.CopyFrom(_filter(workflow, status, since, until, additional_metadata))
        return _outcomes(self._connection.calls.replay_runs(req))

    # -- logs, streams and events -------------------------------------------------------

    def logs(self, run_id: str | RunRef[Any]) -> list[LogLine]:
        """Every line the run logged so far (a workflow run: all its steps'), oldest first:
        ``ctx.log`` lines and ``logging`` records emitted inside its attempts.
        NotFoundError for an unknown run."""
        return observe.read_logs(self._connection, _rid(run_id))

    async def aio_logs(self, run_id: str | RunRef[Any]) -> list[LogLine]:
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


__all__ = ["ResetOutcome", "RunOutcome", "Runs"]
