"""The tenant's crons (``app.crons``) and pausing tasks and workflows
(``app.tasks.pause``, ``app.workflows.pause``).

Crons are declared in code (``@app.task(on_crons=[...])``, ``app.workflow(name,
on_crons=[...])``; named ``"<task or workflow>:<expression>"``, managed by registration)
or created at run time with :meth:`Crons.create` (managed through the API: update, delete).
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pydantic_core

from stoker._core.cron import OVERLAPS
from stoker._proto import engine_pb2 as pb
from stoker._sdk.refs import RunRef
from stoker.config import parse_duration

if TYPE_CHECKING:
    from stoker._sdk.calls import Connection
    from stoker._sdk.task import Task
    from stoker._sdk.workflow import Workflow

Overlap = Literal["allow", "skip", "cancel_previous", "buffer_one"]
"""What a tick does while the cron's previous run still runs: start anyway (``allow``),
skip the tick (``skip``), cancel the previous run (``cancel_previous``), or hold the tick,
one at most, until the previous run ends (``buffer_one``)."""

_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Catch-up after downtime: the missed ticks at most ``window`` old fire when the engine
    is back, at most ``max_runs`` of them (the newest). Without it (``catch_up="none"``,
    the default) missed ticks are skipped; a tick less than 10 s late always fires."""

    window: timedelta | str
    max_runs: int

    def seconds(self) -> int:
        delta = parse_duration(self.window, "catch_up window")
        if delta is None or delta.total_seconds() < 1:
            raise ValueError(f"catch_up window {self.window!r} must be at least one second")
        if isinstance(self.max_runs, bool) or not isinstance(self.max_runs, int):
            raise ValueError(f"catch_up max_runs must be an int, got {self.max_runs!r}")
        if self.max_runs < 1:
            raise ValueError(f"catch_up max_runs must be at least 1, got {self.max_runs}")
        return int(delta.total_seconds())


@dataclass(frozen=True, slots=True)
class Cron:
    """A cron declared in code with its policies, in ``on_crons`` next to plain expression
    strings: ``@app.task(on_crons=[Cron("*/5 * * * *", overlap="skip",
    catch_up=CatchUp(window="1h", max_runs=3))])``.

    Registration sets the cron's policies to these (a plain string leaves those set with
    ``app.crons.update``); ``timezone`` overrides the declaration's ``cron_timezone``. The
    cron is named ``"<task or workflow>:<expression>"`` like a string's."""

    expression: str
    overlap: Overlap = "allow"
    catch_up: CatchUp | Literal["none"] = "none"
    timezone: str | None = None

    def policies(self) -> tuple[str, int, int]:
        """(overlap, catch-up window in seconds, catch-up max), checked (ValueError)."""
        if self.overlap not in OVERLAPS:
            raise ValueError(f"overlap {self.overlap!r} is not one of {', '.join(OVERLAPS)}")
        window = _catch_up(self.catch_up)
        assert window is not None
        return (self.overlap, *window)


@dataclass(frozen=True, slots=True)
class CronRun:
    """A tick a cron handled: its run (``run_id``, ``status``) or why it started none."""

    tick: datetime
    run_id: str | None
    outcome: str
    """``started`` (on its tick), ``manual`` (trigger_now), ``backfill``, ``skipped`` (the
    overlap policy) or ``paused``."""
    status: str | None
    """The run's status (None when no run, or it is gone from history)."""


@dataclass(frozen=True, slots=True)
class CronInfo:
    """A cron as the engine stores it."""

    name: str
    task_name: str
    """The task it starts ("" when it starts a workflow)."""
    expression: str
    timezone: str
    enabled: bool
    source: str
    """``"code"``: declared with ``on_crons`` (managed by registration); ``"api"``: created
    with ``app.crons.create``."""
    input: Any
    next_fire_times: list[datetime]
    """The next few ticks (UTC); the first is the next one to fire."""
    workflow_name: str = ""
    """The workflow it starts ("" when it starts a task)."""
    additional_metadata: dict[str, Any] | None = None
    priority: int = 0
    overlap: str = "allow"
    catch_up: CatchUp | None = None
    last_runs: tuple[CronRun, ...] = ()
    """The newest ticks handled, newest first."""
    buffered_tick: datetime | None = None
    """A tick held by ``buffer_one`` until the previous run ends."""

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
            next_fire_times=[_time(ms) for ms in c.next_fire_at_ms],
            workflow_name=c.workflow_name,
            additional_metadata=json.loads(c.additional_metadata)
            if c.additional_metadata
            else None,
            priority=c.priority,
            overlap=c.overlap or "allow",
            catch_up=CatchUp(timedelta(seconds=c.catch_up_window_s), c.catch_up_max)
            if c.catch_up_window_s
            else None,
            last_runs=tuple(
                CronRun(_time(f.tick_ms), f.run_id or None, f.outcome, f.status or None)
                for f in c.last_runs
            ),
            buffered_tick=_time(c.buffered_tick_ms) if c.buffered_tick_ms else None,
        )


@dataclass(frozen=True, slots=True)
class BackfillRun:
    """A tick :meth:`Crons.backfill` covered: its run, and whether it existed already."""

    tick: datetime
    run: RunRef[Any]
    existing: bool


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ms(t: datetime, what: str) -> int:
    if t.tzinfo is None:
        raise ValueError(f"{what} {t} must be time-zone-aware (e.g. datetime.now(UTC))")
    return int(t.timestamp() * 1000)


def _json(value: Any, what: str) -> bytes:
    try:
        return pydantic_core.to_json(value)
    except pydantic_core.PydanticSerializationError as exc:
        raise ValueError(f"{what} is not JSON-serializable: {exc}") from None


def _catch_up(value: CatchUp | Literal["none"] | None) -> tuple[int, int] | None:
    if value is None:
        return None
    if value == "none":
        return (0, 0)
    if not isinstance(value, CatchUp):
        raise ValueError(f"catch_up takes 'none' or CatchUp(window, max_runs), got {value!r}")
    return (value.seconds(), value.max_runs)


def _settings(
    *,
    expression: str | None = None,
    timezone: str | None = None,
    input: bytes | None = None,
    additional_metadata: dict[str, Any] | None = None,
    priority: int | None = None,
    overlap: str | None = None,
    catch_up: CatchUp | Literal["none"] | None = None,
    enabled: bool | None = None,
) -> pb.CronSettings:
    s = pb.CronSettings()
    if expression is not None:
        s.expression = expression
    if timezone is not None:
        s.timezone = timezone
    if input is not None:
        s.input = input
    if additional_metadata is not None:
        if not isinstance(additional_metadata, dict):
            raise ValueError("additional_metadata must be a dict")
        s.additional_metadata = _json(additional_metadata, "additional_metadata")
    if priority is not None:
        s.priority = priority
    if overlap is not None:
        s.overlap = overlap
    window = _catch_up(catch_up)
    if window is not None:
        s.catch_up_window_s, s.catch_up_max = window
    if enabled is not None:
        s.enabled = enabled
    return s


Target = TypeVar("Target")


class Crons:
    """The tenant's crons (``app.crons``); a missing name raises NotFoundError.

    A code cron (declared with ``on_crons``) is managed by registration: ``update`` takes
    only ``enabled``, ``overlap`` and ``catch_up`` for it (they persist across
    registrations, except the policies a ``Cron(...)`` declares, which each registration
    sets again), and ``delete`` refuses it (remove it from the code). ``create`` with a
    name that exists raises ConflictError naming it."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    # -- reading ------------------------------------------------------------------------

    def list(self) -> builtins.list[CronInfo]:
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

    # -- creating and changing ----------------------------------------------------------

    @staticmethod
    def _create_request(
        name: str,
        target: Task[Any, Any] | Workflow[Any] | str,
        expression: str,
        input: Any,
        timezone: str | None,
        additional_metadata: dict[str, Any] | None,
        priority: int | None,
        overlap: Overlap,
        catch_up: CatchUp | Literal["none"],
        enabled: bool,
    ) -> pb.CreateCronRequest:
        from stoker._sdk.task import Task
        from stoker._sdk.workflow import Workflow

        if isinstance(target, Workflow):
            task_name, workflow_name = "", target.name
            body = target.encode_input(input if input is not None else {})
        elif isinstance(target, Task):
            task_name, workflow_name = target.name, ""
            body = target.encode_input(input if input is not None else {})
        elif isinstance(target, str):
            task_name, workflow_name = target, ""
            body = _json(input if input is not None else {}, f"cron {name!r}: input")
        else:
            raise ValueError(
                f"cron {name!r}: give the task or workflow to run (or a task's name), "
                f"not {target!r}"
            )
        return pb.CreateCronRequest(
            name=name,
            task_name=task_name,
            workflow_name=workflow_name,
            settings=_settings(
                expression=expression,
                timezone=timezone,
                input=body,
                additional_metadata=additional_metadata,
                priority=priority,
                overlap=overlap,
                catch_up=catch_up,
                enabled=enabled,
            ),
        )

    def create(
        self,
        name: str,
        task_or_workflow: Task[Any, Any] | Workflow[Any] | str,
        expression: str,
        *,
        input: Any = None,
        timezone: str | None = None,
        additional_metadata: dict[str, Any] | None = None,
        priority: int | None = None,
        overlap: Overlap = "allow",
        catch_up: CatchUp | Literal["none"] = "none",
        enabled: bool = True,
    ) -> CronInfo:
        """Creates a cron that starts ``task_or_workflow`` (a task, a workflow, or a task's
        name) on ``expression`` (5 fields, or 6 with seconds; ``TZ=<zone>`` prefix or
        ``timezone``), with ``input`` (checked against the input model of a task or
        workflow given as an object). A name that exists, an unknown task, an invalid
        expression or time zone raise an error that says which and why."""
        req = self._create_request(
            name,
            task_or_workflow,
            expression,
            input,
            timezone,
            additional_metadata,
            priority,
            overlap,
            catch_up,
            enabled,
        )
        return CronInfo.from_proto(self._connection.calls.create_cron(req).cron)

    async def aio_create(
        self,
        name: str,
        task_or_workflow: Task[Any, Any] | Workflow[Any] | str,
        expression: str,
        *,
        input: Any = None,
        timezone: str | None = None,
        additional_metadata: dict[str, Any] | None = None,
        priority: int | None = None,
        overlap: Overlap = "allow",
        catch_up: CatchUp | Literal["none"] = "none",
        enabled: bool = True,
    ) -> CronInfo:
        req = self._create_request(
            name,
            task_or_workflow,
            expression,
            input,
            timezone,
            additional_metadata,
            priority,
            overlap,
            catch_up,
            enabled,
        )
        return CronInfo.from_proto((await self._connection.calls.aio_create_cron(req)).cron)

    @staticmethod
    def _update_request(
        name: str,
        expression: str | None,
        input: Any,
        timezone: str | None,
        enabled: bool | None,
        overlap: Overlap | None,
        catch_up: CatchUp | Literal["none"] | None,
        additional_metadata: dict[str, Any] | None,
        priority: int | None,
    ) -> pb.UpdateCronRequest:
        body = None if input is _UNSET else _json(input, f"cron {name!r}: input")
        return pb.UpdateCronRequest(
            name=name,
            settings=_settings(
                expression=expression,
                timezone=timezone,
                input=body,
                additional_metadata=additional_metadata,
                priority=priority,
                overlap=overlap,
                catch_up=catch_up,
                enabled=enabled,
            ),
        )

    def update(
        self,
        name: str,
        *,
        expression: str | None = None,
        input: Any = _UNSET,
        timezone: str | None = None,
        enabled: bool | None = None,
        overlap: Overlap | None = None,
        catch_up: CatchUp | Literal["none"] | None = None,
        additional_metadata: dict[str, Any] | None = None,
        priority: int | None = None,
    ) -> CronInfo:
        """Changes the given fields of a cron (the others stay). A new expression or time
        zone, or enabling it again, moves its next tick to the first one from now; the
        change applies from the next tick. ``enabled=False`` stops it firing."""
        req = self._update_request(
            name,
            expression,
            input,
            timezone,
            enabled,
            overlap,
            catch_up,
            additional_metadata,
            priority,
        )
        return CronInfo.from_proto(self._connection.calls.update_cron(req).cron)

    async def aio_update(
        self,
        name: str,
        *,
        expression: str | None = None,
        input: Any = _UNSET,
        timezone: str | None = None,
        enabled: bool | None = None,
        overlap: Overlap | None = None,
        catch_up: CatchUp | Literal["none"] | None = None,
        additional_metadata: dict[str, Any] | None = None,
        priority: int | None = None,
    ) -> CronInfo:
        req = self._update_request(
            name,
            expression,
            input,
            timezone,
            enabled,
            overlap,
            catch_up,
            additional_metadata,
            priority,
        )
        return CronInfo.from_proto((await self._connection.calls.aio_update_cron(req)).cron)

    def delete(self, name: str) -> None:
        """Deletes a cron created with :meth:`create`; it fires no more tick."""
        self._connection.calls.delete_cron(pb.DeleteCronRequest(name=name))

    async def aio_delete(self, name: str) -> None:
        await self._connection.calls.aio_delete_cron(pb.DeleteCronRequest(name=name))

    # -- running ------------------------------------------------------------------------

    def trigger_now(self, name: str, *, force: bool = False) -> RunRef[Any]:
        """Starts one run of the cron now, outside its schedule, under its overlap policy:
        while the cron's previous run still runs, ``allow`` starts anyway,
        ``cancel_previous`` cancels that run first, and ``skip`` and ``buffer_one`` raise
        ConflictError naming it. ``force=True`` starts one whatever the policy. The run
        counts as the cron's previous run for its next ticks."""
        request = pb.TriggerCronRequest(name=name, force=force)
        resp = self._connection.calls.trigger_cron(request)
        return RunRef(self._connection, resp.run_id, None)

    async def aio_trigger_now(self, name: str, *, force: bool = False) -> RunRef[Any]:
        request = pb.TriggerCronRequest(name=name, force=force)
        resp = await self._connection.calls.aio_trigger_cron(request)
        return RunRef(self._connection, resp.run_id, None)

    def _backfill_request(
        self, name: str, start: datetime, end: datetime
    ) -> pb.BackfillCronRequest:
        return pb.BackfillCronRequest(
            name=name, start_ms=_ms(start, "backfill start"), end_ms=_ms(end, "backfill end")
        )

    def _backfilled(self, resp: pb.BackfillCronResponse) -> builtins.list[BackfillRun]:
        return [
            BackfillRun(_time(f.tick_ms), RunRef(self._connection, f.run_id, None), f.existing)
            for f in resp.fires
        ]

    def backfill(self, name: str, start: datetime, end: datetime) -> builtins.list[BackfillRun]:
        """Creates the runs of the cron's ticks from ``start`` to ``end`` (aware datetimes
        in the past, both included, at most 1,000 ticks), one per tick. Idempotent: a tick
        that already has a run (from an earlier backfill, or fired on time and still among
        the cron's recorded fires) gets it back (``existing``) instead of a new one."""
        resp = self._connection.calls.backfill_cron(self._backfill_request(name, start, end))
        return self._backfilled(resp)

    async def aio_backfill(
        self, name: str, start: datetime, end: datetime
    ) -> builtins.list[BackfillRun]:
        req = self._backfill_request(name, start, end)
        return self._backfilled(await self._connection.calls.aio_backfill_cron(req))


@dataclass(frozen=True, slots=True)
class PausedInfo:
    """A paused task or workflow."""

    kind: str
    name: str
    drop: bool
    paused_at: datetime


class Pausing:
    """Pause and resume of one kind (``"task"`` or ``"workflow"``)."""

    def __init__(self, connection: Connection, kind: str) -> None:
        self._connection = connection
        self._kind = kind

    def pause(self, name: str, *, drop: bool = False) -> int:
        """Pauses it: its runs stay queued (none is assigned to a worker) and its crons do
        not fire; with ``drop=True`` its queued runs are cancelled instead, now and while
        it stays paused. Returns how many runs were cancelled now."""
        req = pb.PauseRequest(kind=self._kind, name=name, drop=drop)
        return int(self._connection.calls.pause(req).dropped)

    async def aio_pause(self, name: str, *, drop: bool = False) -> int:
        req = pb.PauseRequest(kind=self._kind, name=name, drop=drop)
        return int((await self._connection.calls.aio_pause(req)).dropped)

    def resume(self, name: str) -> None:
        """Resumes it: its queued runs are assigned again, its crons fire again."""
        self._connection.calls.resume(pb.ResumeRequest(kind=self._kind, name=name))

    async def aio_resume(self, name: str) -> None:
        await self._connection.calls.aio_resume(pb.ResumeRequest(kind=self._kind, name=name))

    def paused(self) -> builtins.list[PausedInfo]:
        """The paused ones of this kind."""
        resp = self._connection.calls.list_paused(pb.ListPausedRequest())
        return self._of_kind(resp)

    async def aio_paused(self) -> builtins.list[PausedInfo]:
        return self._of_kind(await self._connection.calls.aio_list_paused(pb.ListPausedRequest()))

    def _of_kind(self, resp: pb.ListPausedResponse) -> builtins.list[PausedInfo]:
        return [
            PausedInfo(p.kind, p.name, p.drop, _time(p.paused_at_ms))
            for p in resp.paused
            if p.kind == self._kind
        ]


class TaskRegistry(dict[str, "Task[Any, Any]"]):
    """The app's declared tasks by name (``app.tasks``), and pausing them by name:
    ``app.tasks.pause("send_email")``, ``app.tasks.resume(...)`` (and ``aio_`` forms)."""

    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self._pausing = Pausing(connection, "task")
        self.pause = self._pausing.pause
        self.aio_pause = self._pausing.aio_pause
        self.resume = self._pausing.resume
        self.aio_resume = self._pausing.aio_resume
        self.paused = self._pausing.paused
        self.aio_paused = self._pausing.aio_paused


class WorkflowRegistry(dict[str, "Workflow[Any]"]):
    """The app's declared workflows by name (``app.workflows``), and pausing them by name:
    ``app.workflows.pause("etl")``, ``app.workflows.resume(...)`` (and ``aio_`` forms)."""

    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self._pausing = Pausing(connection, "workflow")
        self.pause = self._pausing.pause
        self.aio_pause = self._pausing.aio_pause
        self.resume = self._pausing.resume
        self.aio_resume = self._pausing.aio_resume
        self.paused = self._pausing.paused
        self.aio_paused = self._pausing.aio_paused
