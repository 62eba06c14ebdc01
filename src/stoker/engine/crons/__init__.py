"""Crons managed at run time, their runs, and paused tasks and workflows.

:class:`CronRuns` starts a cron's runs (a task run through ingest, a workflow run through
the workflow ingest) with the request key ``cron:<cron id>:<tick>``: a tick fired twice
(two leaders overlapping, a backfill over a range that already fired) gets the first run
back. :class:`CronAdmin` is what the client service and the REST API call: create, read,
update, delete, trigger and backfill crons, pause and resume tasks and workflows. Every
change is announced on ``stoker_crons`` (NOTIFY, then the local hooks) so that the leader's
crons controller, which sleeps until its next tick, and every replica's definitions cache
see it at once.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from stoker._core import cron
from stoker._core.cron import OVERLAPS, CronError
from stoker._core.status import FINAL
from stoker._core.wire import MAX_PRIORITY, MIN_PRIORITY, json_problem, text_problem
from stoker.db import Executor
from stoker.db.store import crons as cron_store
from stoker.db.store import notify as notify_store
from stoker.db.store import runs as run_store
from stoker.engine.definitions import CRONS_CHANNEL, Definitions, upcoming
from stoker.engine.ingest import Ingest, TriggerInput
from stoker.engine.ingest.requests import RequestKey
from stoker.engine.ingest.workflows import WorkflowIngest, WorkflowTriggerInput
from stoker.engine.runs.ops import RunFilter, RunOps
from stoker.errors import ConflictError, InvalidRequestError, NotFoundError

MAX_BACKFILL = 1000
"""Most ticks one backfill call creates runs for."""

LAST_RUNS = 5
"""How many recent fires a cron read shows."""

MAX_NAME = 200


@dataclass(frozen=True, slots=True)
class CronFields:
    """A cron's settable fields (create takes them all; update the ones not None)."""

    expression: str | None = None
    timezone: str | None = None
    input: bytes | None = None
    additional_metadata: bytes | None = None
    priority: int | None = None
    overlap: str | None = None
    catch_up_window_s: int | None = None
    catch_up_max: int | None = None
    enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class CronView:
    """A cron as read: the stored row, its next fire times and its last fires."""

    row: cron_store.CronRow
    next_fire_times: list[datetime]
    last_fires: list[cron_store.CronFire] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Fired:
    """A tick a call created (or found: ``existing``) a run for."""

    tick: datetime
    run_id: str
    existing: bool = False


def cron_metadata(base: Any, name: str, tick: datetime) -> bytes:
    """A cron run's additional metadata: the cron's own plus its name and tick."""
    meta = dict(base) if isinstance(base, dict) else {}
    meta.update(stoker_cron=name, stoker_cron_tick=tick.astimezone(UTC).isoformat())
    return json.dumps(meta).encode()


class CronRuns:
    """Starts the runs of a cron's ticks (see the module docstring)."""

    def __init__(self, ingest: Ingest, workflows: WorkflowIngest) -> None:
        self._ingest = ingest
        self._workflows = workflows

    async def start(self, tenant_id: int, row: Any, tick: datetime, *, keyed: bool = True) -> str:
        """Starts the run of ``row``'s ``tick`` and returns its id; ``keyed``: with the
        tick's request key (a second call for the tick returns the first run)."""
        tick_iso = tick.astimezone(UTC).isoformat()
        body = json.dumps(row["input"]).encode()
        meta = cron_metadata(row["additional_metadata"], row["name"], tick)
        key = f"cron:{row['id']}:{tick_iso}" if keyed else ""
        request = RequestKey.of(key, "cron", key.encode() + b"\0" + body)
        if row["workflow_name"]:
            item = WorkflowTriggerInput(row["workflow_name"], body, meta, row["priority"])
            ids = await self._workflows.trigger(tenant_id, [item], request)
        else:
            task = TriggerInput(row["task_name"], body, meta, row["priority"])
            ids = await self._ingest.trigger(tenant_id, [task], request)
        return ids[0]


class CronAdmin:
    """Crons created, read, changed and triggered through the API, and pauses.

    ``on_change(tenant_id)`` runs after every change here (the crons controller and the
    definitions cache of this replica); other replicas hear ``stoker_crons``."""

    def __init__(
        self,
        db: Executor,
        definitions: Definitions,
        runs: CronRuns,
        ops: RunOps,
        *,
        engine_id: str,
        on_change: Callable[[int], None],
        horizon: timedelta = timedelta(days=30),
    ) -> None:
        self._db = db
        self._horizon = horizon
        self._definitions = definitions
        self._runs = runs
        self._ops = ops
        self._engine_id = engine_id
        self._on_change = on_change

    async def _changed(self, tenant_id: int) -> None:
        await notify_store.notify(
            self._db, notify_store.Notify(CRONS_CHANNEL, f"{tenant_id}:{self._engine_id}")
        )
        self._on_change(tenant_id)

    # -- reading ------------------------------------------------------------------------

    async def list(self, tenant_id: int, name: str | None = None) -> list[CronView]:
        """The tenant's crons (or the one named: NotFoundError when there is none)."""
        rows = await self._definitions.crons(tenant_id, name or None)
        if name and not rows:
            raise NotFoundError(f"no cron named {name!r}")
        fires = await cron_store.recent_cron_fires(
            self._db, cron_store.RecentCronFires(tenant_id, [r["id"] for r in rows], LAST_RUNS)
        )
        by_cron: dict[int, builtins.list[cron_store.CronFire]] = {}
        for f in fires:
            by_cron.setdefault(f["cron_id"], []).append(f)
        return [CronView(r, upcoming(r, 5), by_cron.get(r["id"], [])) for r in rows]

    async def one(self, tenant_id: int, name: str) -> CronView:
        """The cron named ``name``; NotFoundError when there is none."""
        if not name:
            raise NotFoundError("no cron named '' (give a cron's name)")
        return (await self.list(tenant_id, name))[0]

    async def paused(self, tenant_id: int) -> builtins.list[cron_store.PausedRow]:
        """The tenant's paused tasks and workflows."""
        return await cron_store.list_paused(self._db, cron_store.ListPaused(tenant_id))

    # -- changing -----------------------------------------------------------------------

    async def create(
        self, tenant_id: int, name: str, task_name: str, workflow_name: str, fields: CronFields
    ) -> CronView:
        """Creates a cron of a task or a workflow (exactly one named)."""
        _check_name(name)
        if bool(task_name) == bool(workflow_name):
            raise InvalidRequestError(
                f"cron {name!r}: name either a task or a workflow to run (got "
                f"task {task_name!r}, workflow {workflow_name!r})"
            )
        await self._definitions.resolve(
            tenant_id, [task_name] if task_name else [], [workflow_name] if workflow_name else []
        )
        if not fields.expression:
            raise InvalidRequestError(f"cron {name!r} needs an expression")
        values = _merged(name, None, fields)
        parsed = _parse(values["expression"], values["timezone"])
        created = await cron_store.create_cron(
            self._db,
            cron_store.CreateCron(
                tenant_id,
                name,
                task_name or None,
                workflow_name or None,
                values["expression"],
                parsed.timezone,
                values["input"],
                values["additional_metadata"],
                values["priority"],
                values["overlap"],
                values["catch_up_window_s"],
                values["catch_up_max"],
                values["enabled"],
                parsed.next_after(datetime.now(UTC)),
            ),
        )
        if created is None:
            raise ConflictError(
                f"a cron named {name!r} exists already; update or delete it, or choose another name"
            )
        await self._changed(tenant_id)
        return (await self.list(tenant_id, name))[0]

    async def update(self, tenant_id: int, name: str, fields: CronFields) -> CronView:
        """Changes a cron; its next tick is recomputed from now when its schedule changed
        or it is enabled again. A code cron takes only ``enabled`` and the policies: its
        expression, time zone and input are the code's."""
        async with self._db.transaction() as tx:
            row = await cron_store.lock_cron(tx, cron_store.LockCron(tenant_id, name))
            if row is None:
                raise NotFoundError(f"no cron named {name!r}")
            if row["source"] == "code":
                declared = {
                    "expression": fields.expression,
                    "timezone": fields.timezone,
                    "input": fields.input,
                    "additional_metadata": fields.additional_metadata,
                    "priority": fields.priority,
                }
                changed = sorted(k for k, v in declared.items() if v is not None)
                if changed:
                    raise InvalidRequestError(
                        f"cron {name!r} is declared in code: change its {', '.join(changed)} "
                        "in the code (update takes enabled, overlap and catch-up on it)"
                    )
            values = _merged(name, row, fields)
            parsed = _parse(values["expression"], values["timezone"])
            now = datetime.now(UTC)
            next_fire = row["next_fire_at"]
            rescheduled = (
                values["expression"] != row["expression"] or parsed.timezone != row["timezone"]
            )
            if rescheduled or (values["enabled"] and not row["enabled"]) or next_fire is None:
                next_fire = parsed.next_after(now)
            await cron_store.update_cron(
                tx,
                cron_store.UpdateCron(
                    row["id"],
                    values["expression"],
                    parsed.timezone,
                    values["input"],
                    values["additional_metadata"],
                    values["priority"],
                    values["overlap"],
                    values["catch_up_window_s"],
                    values["catch_up_max"],
                    values["enabled"],
                    next_fire,
                ),
            )
        await self._changed(tenant_id)
        return (await self.list(tenant_id, name))[0]

    async def delete(self, tenant_id: int, name: str) -> None:
        """Deletes a run-time cron; a code cron goes when the code stops declaring it."""
        async with self._db.transaction() as tx:
            row = await cron_store.lock_cron(tx, cron_store.LockCron(tenant_id, name))
            if row is None:
                raise NotFoundError(f"no cron named {name!r}")
            if row["source"] == "code":
                raise InvalidRequestError(
                    f"cron {name!r} is declared in code: remove it from the code (or disable "
                    "it with update(enabled=False))"
                )
            await cron_store.delete_cron(tx, cron_store.DeleteCron(row["id"]))
        await self._changed(tenant_id)

    async def trigger_now(self, tenant_id: int, name: str, *, force: bool = False) -> Fired:
        """Starts one run of the cron now, outside its schedule, under its overlap policy:
        while its previous run (on a tick or from trigger_now) still runs, ``allow`` starts
        anyway, ``cancel_previous`` cancels that run first, and ``skip`` and ``buffer_one``
        refuse with a ConflictError naming the run — unless ``force``, which starts one
        whatever the policy. The run becomes the cron's previous run for its next ticks."""
        async with self._db.transaction() as tx:
            # Locked: the crons controller (SKIP LOCKED) leaves this cron alone meanwhile.
            row = await cron_store.lock_cron(tx, cron_store.LockCron(tenant_id, name))
            if row is None:
                raise NotFoundError(f"no cron named {name!r}")
            previous = row["last_run_id"]
            status = None
            if not force and row["overlap"] != "allow" and previous is not None:
                found = await run_store.resolve_runs(
                    tx, run_store.ResolveRuns(tenant_id, [previous])
                )
                status = found[0]["status"] if found else None
            if status is not None and status not in FINAL:
                if row["overlap"] in ("skip", "buffer_one"):
                    raise ConflictError(
                        f"cron {name!r}: its previous run {previous} is still {status} and "
                        f"its overlap policy is {row['overlap']}; wait for it, cancel it, or "
                        "trigger with force=True to start one anyway"
                    )
                await self._ops.cancel(
                    tenant_id, [str(previous)], None, f"cron {name}: trigger_now, cancel_previous"
                )
            tick = datetime.now(UTC)
            run_id = await self._runs.start(tenant_id, row, tick, keyed=False)
            await cron_store.set_cron_last_run(
                tx, cron_store.SetCronLastRun(row["id"], uuid.UUID(run_id))
            )
            await cron_store.record_cron_fires(
                tx,
                cron_store.RecordCronFires([row["id"]], [tick], [uuid.UUID(run_id)], ["manual"]),
            )
        return Fired(tick, run_id)

    async def backfill(
        self, tenant_id: int, name: str, start: datetime, end: datetime
    ) -> builtins.list[Fired]:
        """Starts the runs of the cron's ticks in ``[start, end]`` (both in the past, within
        the backfill horizon), one per tick with the tick's request key, whatever the
        overlap policy (the range's runs are what was asked for); a tick the cron already
        has a recorded run for is not started again (``existing``)."""
        if start.tzinfo is None or end.tzinfo is None:
            raise InvalidRequestError("backfill needs time-zone-aware start and end")
        now = datetime.now(UTC)
        if end < start:
            raise InvalidRequestError(f"backfill: end {end} is before start {start}")
        if start.year < 1970:
            raise InvalidRequestError(f"backfill: start {start.isoformat()} is before 1970")
        if end > now:
            raise InvalidRequestError(
                f"backfill: end {end.isoformat()} is in the future; backfill covers past ticks"
            )
        if start < now - self._horizon:
            raise InvalidRequestError(
                f"backfill: start {start.isoformat()} is more than {self._horizon.days} days "
                "ago, past the backfill horizon (the retention: older ticks' runs are "
                "forgotten, so a backfill there could start a tick twice)"
            )
        view = await self.one(tenant_id, name)
        parsed = _parse(view.row["expression"], view.row["timezone"])
        ticks: builtins.list[datetime] = []
        # next_after works in whole seconds: from a second before start, then drop a tick
        # that falls in that second but before start itself (start 14:00:00.5 excludes 14:00).
        t = parsed.next_after(start - _SECOND)
        while t is not None and t < start:
            t = parsed.next_after(t)
        while t is not None and t <= end:
            if len(ticks) == MAX_BACKFILL:
                raise InvalidRequestError(
                    f"backfill of cron {name!r} from {start.isoformat()} to {end.isoformat()} "
                    f"has more than {MAX_BACKFILL} ticks; split the range"
                )
            ticks.append(t)
            t = parsed.next_after(t)
        known = await cron_store.cron_fires_between(
            self._db, cron_store.CronFiresBetween(view.row["id"], start, end)
        )
        had = {f["tick"]: f["run_id"] for f in known if f["run_id"] is not None}
        out: builtins.list[Fired] = []
        fresh: builtins.list[datetime] = []
        for tick in ticks:
            if tick in had:
                out.append(Fired(tick, str(had[tick]), existing=True))
            else:
                fresh.append(tick)
        ids = await asyncio.gather(*(self._runs.start(tenant_id, view.row, t) for t in fresh))
        if fresh:
            await cron_store.record_cron_fires(
                self._db,
                cron_store.RecordCronFires(
                    [view.row["id"]] * len(fresh),
                    fresh,
                    [uuid.UUID(i) for i in ids],
                    ["backfill"] * len(fresh),
                ),
            )
        out.extend(Fired(t, i) for t, i in zip(fresh, ids, strict=True))
        return sorted(out, key=lambda f: f.tick)

    # -- pausing ------------------------------------------------------------------------

    async def pause(self, tenant_id: int, kind: str, name: str, *, drop: bool) -> int:
        """Pauses a task or workflow; with ``drop`` its queued runs are cancelled (now and
        while it stays paused). Returns how many runs were cancelled now."""
        if kind == "task":
            await self._definitions.resolve(tenant_id, [name])
        else:
            await self._definitions.resolve(tenant_id, [], [name])
        await cron_store.pause(self._db, cron_store.Pause(tenant_id, kind, name, drop))
        await self._changed(tenant_id)
        return await self.drop_queued(tenant_id, [name]) if drop else 0

    async def resume(self, tenant_id: int, kind: str, name: str) -> None:
        """Resumes a task or workflow: its queued runs are assigned again."""
        await cron_store.resume(self._db, cron_store.Resume(tenant_id, kind, name))
        await self._changed(tenant_id)

    async def drop_queued(self, tenant_id: int, names: Sequence[str]) -> int:
        """Cancels the queued runs of ``names`` (tasks or workflows paused with drop)."""
        outcomes = await self._ops.cancel(
            tenant_id, [], RunFilter(names=list(names), statuses=["QUEUED"]), "paused (drop)"
        )
        return sum(1 for o in outcomes if o.outcome == "cancelled")


_SECOND = timedelta(seconds=1)


def _check_name(name: str) -> None:
    if not name or len(name) > MAX_NAME or text_problem(name):
        raise InvalidRequestError(f"cron name {name!r} must be 1 to {MAX_NAME} characters")


def _parse(expression: str, timezone: str | None) -> cron.Cron:
    try:
        return cron.parse(expression, timezone or None)
    except CronError as exc:
        raise InvalidRequestError(str(exc)) from None


def _json(name: str, what: str, raw: bytes | None, default: Any) -> str:
    if not raw:
        return json.dumps(default)
    problem = json_problem(raw)
    if problem:
        raise InvalidRequestError(f"cron {name!r}: {what} is not valid JSON: {problem}")
    return raw.decode()


def _merged(name: str, row: cron_store.CronRow | None, f: CronFields) -> dict[str, Any]:
    """The cron's values after applying ``f`` to ``row`` (None: defaults), checked."""

    def pick(key: str, default: Any) -> Any:
        value = getattr(f, key)
        if value is not None:
            return value
        return row[key] if row is not None else default  # type: ignore[literal-required]

    values: dict[str, Any] = {
        "expression": pick("expression", ""),
        "timezone": f.timezone if f.timezone is not None else (row["timezone"] if row else ""),
        "priority": pick("priority", 0),
        "overlap": pick("overlap", "allow"),
        "catch_up_window_s": pick("catch_up_window_s", 0),
        "catch_up_max": pick("catch_up_max", 0),
        "enabled": pick("enabled", True),
    }
    values["input"] = (
        _json(name, "input", f.input, {})
        if f.input is not None or row is None
        else json.dumps(row["input"])
    )
    values["additional_metadata"] = (
        _json(name, "additional_metadata", f.additional_metadata, {})
        if f.additional_metadata is not None or row is None
        else json.dumps(row["additional_metadata"])
    )
    if not isinstance(json.loads(values["additional_metadata"]), dict):
        raise InvalidRequestError(f"cron {name!r}: additional_metadata must be a JSON object")
    if values["overlap"] not in OVERLAPS:
        raise InvalidRequestError(
            f"cron {name!r}: overlap {values['overlap']!r} is not one of {', '.join(OVERLAPS)}"
        )
    if values["catch_up_window_s"] < 0 or values["catch_up_max"] < 0:
        raise InvalidRequestError(f"cron {name!r}: catch-up window and max must not be negative")
    if (values["catch_up_window_s"] > 0) != (values["catch_up_max"] > 0):
        raise InvalidRequestError(
            f"cron {name!r}: catch-up needs both a window and a max (or neither: catch-up none)"
        )
    if values["priority"] and not MIN_PRIORITY <= values["priority"] <= MAX_PRIORITY:
        raise InvalidRequestError(
            f"cron {name!r}: priority {values['priority']} is outside "
            f"{MIN_PRIORITY}..{MAX_PRIORITY} (0: the task's default)"
        )
    return values
