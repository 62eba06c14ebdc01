"""``stoker cron ...``, ``stoker task pause|resume`` and ``stoker workflow pause|resume``.

They talk to an engine as a client (``STOKER_ADDRESS`` and ``STOKER_TOKEN``, or the lite
profile), through the SDK: the same calls as ``app.crons`` and ``app.tasks.pause``. A
mistake (unknown cron, invalid expression, bad JSON) is one red line and exit code 2.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from stoker.errors import StokerError

if TYPE_CHECKING:
    from stoker import CronInfo, Stoker

cron_app = typer.Typer(help="Crons: list, create, update, delete, trigger, backfill.")
task_app = typer.Typer(help="Tasks: pause and resume.", no_args_is_help=True)
workflow_app = typer.Typer(help="Workflows: pause and resume.", no_args_is_help=True)
console = Console(stderr=True)
out = Console(width=200)

T = TypeVar("T")


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _run(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except (StokerError, ValueError) as exc:
        message = exc.message if isinstance(exc, StokerError) else str(exc)
        raise _fail(message) from None


def _client() -> Stoker:
    from stoker import Stoker

    return Stoker()


def _json_arg(value: str | None, what: str) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise _fail(f"{what} is not JSON: {exc}") from None


def _time_arg(value: str, what: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(f"{what} {value!r} is not an ISO 8601 time (2026-01-31T09:00:00Z)") from None
    if parsed.tzinfo is None:
        raise _fail(f"{what} {value!r} needs a time zone (Z or +01:00)")
    return parsed


def _catch_up(window: str | None, max_runs: int | None, none: bool) -> Any:
    from stoker import CatchUp

    if none:
        return "none"
    if window is None and max_runs is None:
        return None
    if window is None or max_runs is None:
        raise _fail("--catch-up-window and --catch-up-max go together")
    return CatchUp(window, max_runs)


def _show(c: CronInfo) -> dict[str, Any]:
    return {
        "name": c.name,
        "task_name": c.task_name or None,
        "workflow_name": c.workflow_name or None,
        "expression": c.expression,
        "timezone": c.timezone,
        "enabled": c.enabled,
        "source": c.source,
        "input": c.input,
        "additional_metadata": c.additional_metadata,
        "priority": c.priority,
        "overlap": c.overlap,
        "catch_up": (
            {"window_s": _seconds(c.catch_up.window), "max_runs": c.catch_up.max_runs}
            if c.catch_up
            else None
        ),
        "next_fire_times": [t.isoformat() for t in c.next_fire_times],
        "last_runs": [
            {
                "tick": r.tick.isoformat(),
                "run_id": r.run_id,
                "outcome": r.outcome,
                "status": r.status,
            }
            for r in c.last_runs
        ],
    }


def _seconds(window: Any) -> float:
    return float(window.total_seconds())


def _print(c: CronInfo) -> None:
    print(json.dumps(_show(c), indent=2))


Overlap = Annotated[
    str | None,
    typer.Option(
        help="allow | skip | cancel_previous | buffer_one (a tick while the previous run runs)."
    ),
]
Window = Annotated[
    str | None, typer.Option(help="Catch-up: fire missed ticks at most this old (e.g. 1h).")
]
MaxRuns = Annotated[int | None, typer.Option(help="Catch-up: at most this many missed ticks.")]


@cron_app.command("list")
def cron_list() -> None:
    """Every cron of the tenant: name, what it starts, expression, next tick, last run."""
    from rich.table import Table

    crons = _run(lambda: _client().crons.list())
    table = Table("name", "starts", "expression", "tz", "enabled", "overlap", "next", "last run")
    for c in crons:
        last = c.last_runs[0] if c.last_runs else None
        table.add_row(
            c.name,
            c.task_name or f"workflow {c.workflow_name}",
            c.expression,
            c.timezone,
            "yes" if c.enabled else "no",
            c.overlap,
            c.next_fire_times[0].isoformat() if c.next_fire_times else "-",
            f"{last.tick.isoformat()} {last.outcome} {last.status or ''}".strip() if last else "-",
        )
    out.print(table)


@cron_app.command("get")
def cron_get(name: Annotated[str, typer.Argument(help="The cron's name.")]) -> None:
    """One cron as JSON, with its next fire times and last runs."""
    _print(_run(lambda: _client().crons.get(name)))


@cron_app.command("create")
def cron_create(
    name: Annotated[str, typer.Argument(help="The new cron's name.")],
    expression: Annotated[
        str, typer.Option(help="5 fields, or 6 with seconds; optional TZ=<zone> prefix.")
    ],
    task: Annotated[str | None, typer.Option(help="The task it starts.")] = None,
    workflow: Annotated[str | None, typer.Option(help="The workflow it starts.")] = None,
    input: Annotated[str | None, typer.Option(help="The runs' input, JSON.")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA time zone (default UTC).")] = None,
    metadata: Annotated[
        str | None, typer.Option(help="Additional metadata of the runs, a JSON object.")
    ] = None,
    priority: Annotated[int | None, typer.Option(help="1 to 3 (default: the task's).")] = None,
    overlap: Overlap = None,
    catch_up_window: Window = None,
    catch_up_max: MaxRuns = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled.")] = False,
) -> None:
    """Creates a cron of a task (--task) or a workflow (--workflow) and prints it."""
    from stoker._sdk.crons import Crons

    if (task is None) == (workflow is None):
        raise _fail("give --task or --workflow (one of them)")
    body = _json_arg(input, "--input")
    meta = _json_arg(metadata, "--metadata")
    window: Any = _catch_up(catch_up_window, catch_up_max, False) or "none"

    def create() -> CronInfo:
        from stoker import CronInfo

        client = _client()
        req = Crons._create_request(
            name,
            task or "",
            expression,
            body,
            timezone,
            meta,
            priority,
            overlap or "allow",  # type: ignore[arg-type]
            window,
            not disabled,
        )
        if workflow is not None:
            req.task_name, req.workflow_name = "", workflow
        return CronInfo.from_proto(client.connection.calls.create_cron(req).cron)

    _print(_run(create))


@cron_app.command("update")
def cron_update(
    name: Annotated[str, typer.Argument(help="The cron's name.")],
    expression: Annotated[str | None, typer.Option(help="A new expression.")] = None,
    input: Annotated[str | None, typer.Option(help="A new input, JSON.")] = None,
    timezone: Annotated[str | None, typer.Option(help="A new time zone.")] = None,
    enabled: Annotated[
        bool | None, typer.Option("--enable/--disable", help="Fire, or stop firing.")
    ] = None,
    overlap: Overlap = None,
    catch_up_window: Window = None,
    catch_up_max: MaxRuns = None,
    no_catch_up: Annotated[
        bool, typer.Option("--no-catch-up", help="Catch-up none: missed ticks are skipped.")
    ] = False,
) -> None:
    """Changes the given fields of a cron (from its next tick) and prints it."""
    changes: dict[str, Any] = {}
    if input is not None:
        changes["input"] = _json_arg(input, "--input")
    catch_up = _catch_up(catch_up_window, catch_up_max, no_catch_up)
    _print(
        _run(
            lambda: _client().crons.update(
                name,
                expression=expression,
                timezone=timezone,
                enabled=enabled,
                overlap=overlap,  # type: ignore[arg-type]
                catch_up=catch_up,
                **changes,
            )
        )
    )


@cron_app.command("delete")
def cron_delete(name: Annotated[str, typer.Argument(help="The cron's name.")]) -> None:
    """Deletes a cron created at run time."""
    _run(lambda: _client().crons.delete(name))
    console.print(f"deleted cron {name!r}")


@cron_app.command("trigger")
def cron_trigger(
    name: Annotated[str, typer.Argument(help="The cron's name.")],
    force: Annotated[
        bool, typer.Option("--force", help="Start a run whatever the overlap policy.")
    ] = False,
) -> None:
    """Starts one run of the cron now (under its overlap policy) and prints its run id."""
    print(_run(lambda: _client().crons.trigger_now(name, force=force)).run_id)


@cron_app.command("backfill")
def cron_backfill(
    name: Annotated[str, typer.Argument(help="The cron's name.")],
    start: Annotated[str, typer.Option(help="ISO 8601 time with zone: the first tick.")],
    end: Annotated[str, typer.Option(help="ISO 8601 time with zone: the last tick.")],
) -> None:
    """Creates the runs of the cron's ticks from --start to --end; prints tick, run id and
    whether the run existed already (a backfill run again creates nothing new)."""
    first, last = _time_arg(start, "--start"), _time_arg(end, "--end")
    for r in _run(lambda: _client().crons.backfill(name, first, last)):
        print(f"{r.tick.isoformat()} {r.run.run_id}{' existing' if r.existing else ''}")


def _pause_commands(group: typer.Typer, kind: str) -> None:
    def pausing(client: Stoker) -> Any:
        return client.tasks if kind == "task" else client.workflows

    @group.command(
        "pause",
        help=f"Pauses a {kind}: its runs stay queued (or are dropped with --drop), its crons rest.",
    )
    def pause(
        name: Annotated[str, typer.Argument(help="Its name.")],
        drop: Annotated[
            bool, typer.Option("--drop", help="Cancel its queued runs instead of keeping them.")
        ] = False,
    ) -> None:
        dropped = _run(lambda: pausing(_client()).pause(name, drop=drop))
        console.print(
            f"paused {kind} {name!r}" + (f"; {dropped} queued runs dropped" if drop else "")
        )

    @group.command("resume", help=f"Resumes a {kind}: its queued runs are assigned again.")
    def resume(name: Annotated[str, typer.Argument(help="Its name.")]) -> None:
        _run(lambda: pausing(_client()).resume(name))
        console.print(f"resumed {kind} {name!r}")

    @group.command("paused", help=f"Lists the paused {kind}s.")
    def paused() -> None:
        for p in _run(lambda: pausing(_client()).paused()):
            print(f"{p.name}{' (drop)' if p.drop else ''} since {p.paused_at.isoformat()}")


_pause_commands(task_app, "task")
_pause_commands(workflow_app, "workflow")
