"""``stoker runs list|get|cancel|replay|operation``, ``stoker workers
list|get|pause|resume`` and ``stoker rate-limit list|put|delete``: runs, workers and rate
limits of the tenant of ``STOKER_TOKEN`` (or the lite profile), through the SDK (the same
calls as ``app.runs``, ``app.workers`` and ``app.rate_limits``). A mistake
(unknown run or worker, bad filter, a filter past the bulk cap without ``--confirm``) is
one red line and exit code 2.

``cancel`` and ``replay`` take run ids, or ``--filter KEY=VALUE`` (repeatable): ``status``,
``name`` (task or workflow; repeatable), ``since`` and ``until`` (ISO 8601 with a zone),
and any other key (or ``meta.KEY``) as additional metadata the runs must carry. One run id
acts at once; several ids or a filter start a bulk operation, waited for unless
``--no-wait``.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stoker.cli_crons import _client, _fail, _run, _time_arg, out

if TYPE_CHECKING:
    from stoker import BulkProgress, Stoker

run_app = typer.Typer(
    help="Runs: list, get, cancel, replay (by id or --filter), bulk operations.",
    no_args_is_help=True,
)
worker_app = typer.Typer(help="Workers: list, get, pause, resume.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Filter = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        help="KEY=VALUE, repeatable: status, name, since, until, or metadata (meta.KEY).",
    ),
]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _print(value: Any) -> None:
    print(json.dumps(_jsonable(value)))


def parse_filter(pairs: list[str]) -> dict[str, Any]:
    """The keyword arguments of a bulk call for ``--filter`` pairs; typer.Exit on a bad one."""
    names: list[str] = []
    statuses: list[str] = []
    metadata: dict[str, str] = {}
    found: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise _fail(f"--filter {pair!r} is not KEY=VALUE")
        if key == "status":
            statuses.append(value.upper())
        elif key == "name":
            names.append(value)
        elif key in ("since", "until"):
            found[key] = _time_arg(value, f"--filter {key}")
        else:
            metadata[key.removeprefix("meta.")] = value
    if names:
        found["workflow"] = names
    if statuses:
        found["status"] = statuses
    if metadata:
        found["additional_metadata"] = metadata
    return found


def _progress(p: BulkProgress, as_json: bool) -> None:
    if as_json:
        _print(asdict(p))
        return
    out.print(
        f"{p.action} {p.operation_id}: {p.state}, {p.done} done and {p.failed} failed "
        f"of {p.total}" + (f" ({p.error})" if p.error else ""),
        highlight=False,
    )


def _act(
    action: str,
    run_ids: list[str],
    filters: list[str],
    reason: str,
    confirm: bool,
    wait: bool,
    as_json: bool,
) -> None:
    if run_ids and filters:
        raise _fail("give run ids or --filter, not both")
    if not run_ids and not filters:
        raise _fail(f"{action} needs run ids or --filter (see --help)")
    app: Stoker = _client()
    if len(run_ids) == 1:
        single = _run(
            lambda: (
                app.runs.cancel(run_ids[0], reason)
                if action == "cancel"
                else app.runs.replay(run_ids[0])
            )
        )
        if as_json:
            _print(asdict(single))
        else:
            out.print(f"{single.run_id}: {single.outcome} ({single.message})", highlight=False)
        return
    kwargs = parse_filter(filters)
    if action == "cancel":
        op = _run(
            lambda: app.runs.start_bulk_cancel(
                run_ids or None, reason=reason, confirm=confirm, **kwargs
            )
        )
    else:
        op = _run(lambda: app.runs.start_bulk_replay(run_ids or None, confirm=confirm, **kwargs))
    progress = _run(lambda: op.wait(timeout=3600)) if wait else op.progress
    _progress(progress, as_json)


@run_app.command("cancel")
def runs_cancel(
    run_ids: Annotated[list[str] | None, typer.Argument(help="Run ids.")] = None,
    filters: Filter = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the runs' error).")] = "",
    confirm: Annotated[
        bool, typer.Option("--confirm", help="Act on every match past the bulk cap.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Wait for a bulk operation to finish.")] = True,
    as_json: Json = False,
) -> None:
    """Cancels runs (and their children) by id, or every unfinished run matching --filter."""
    _act("cancel", run_ids or [], filters or [], reason, confirm, wait, as_json)


@run_app.command("replay")
def runs_replay(
    run_ids: Annotated[list[str] | None, typer.Argument(help="Run ids.")] = None,
    filters: Filter = None,
    confirm: Annotated[
        bool, typer.Option("--confirm", help="Act on every match past the bulk cap.")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Wait for a bulk operation to finish.")] = True,
    as_json: Json = False,
) -> None:
    """Replays failed or cancelled runs by id, or every one matching --filter."""
    _act("replay", run_ids or [], filters or [], "", confirm, wait, as_json)


@run_app.command("operation")
def runs_operation(
    operation_id: Annotated[str, typer.Argument(help="A bulk operation's id.")],
    as_json: Json = False,
) -> None:
    """A bulk operation's progress."""
    _progress(_run(lambda: _client().runs.bulk_operation(operation_id)).progress, as_json)


@run_app.command("list")
def runs_list(
    status: Annotated[list[str] | None, typer.Option(help="Only these statuses.")] = None,
    task: Annotated[str | None, typer.Option(help="Only runs of this task.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (1..500).")] = 50,
    cursor: Annotated[str | None, typer.Option(help="The next page's cursor.")] = None,
    as_json: Json = False,
) -> None:
    """Task runs, newest first, a page at a time."""
    page = _run(
        lambda: _client().runs.list(status=status, task_name=task, limit=limit, cursor=cursor)
    )
    if as_json:
        _print({"items": [asdict(r) for r in page.items], "next_cursor": page.next_cursor})
        return
    from rich.table import Table

    table = Table("run id", "task", "status", "attempt", "created")
    for r in page.items:
        created = r.created_at.isoformat() if r.created_at else "-"
        table.add_row(r.run_id, r.task_name, r.status, str(r.attempt), created)
    out.print(table)
    if page.next_cursor:
        out.print(f"next page: --cursor {page.next_cursor}", highlight=False)


@run_app.command("get")
def runs_get(run_id: Annotated[str, typer.Argument(help="A task run's id.")]) -> None:
    """One task run as JSON, with its input and output."""
    _print(asdict(_run(lambda: _client().runs.get(run_id))))


@worker_app.command("list")
def workers_list(
    status: Annotated[list[str] | None, typer.Option(help="ACTIVE, STOPPED or DEAD.")] = None,
    as_json: Json = False,
) -> None:
    """The tenant's workers: slots, heartbeat age, paused, runs held."""
    found = _run(lambda: _client().workers.list(status))
    if as_json:
        _print([asdict(w) for w in found])
        return
    from rich.table import Table

    table = Table("worker id", "name", "status", "paused", "slots", "running", "heartbeat age")
    for w in found:
        table.add_row(
            w.worker_id,
            w.name,
            w.status,
            "yes" if w.paused else "no",
            str(w.slots),
            str(w.running),
            f"{w.heartbeat_age_s:.1f}s",
        )
    out.print(table)


@worker_app.command("get")
def workers_get(worker_id: Annotated[str, typer.Argument(help="A worker's id.")]) -> None:
    """One worker as JSON, with the runs it holds."""
    _print(asdict(_run(lambda: _client().workers.get(worker_id))))


@worker_app.command("pause")
def workers_pause(worker_id: Annotated[str, typer.Argument(help="A worker's id.")]) -> None:
    """Pauses a worker: it gets no new runs and finishes what it runs."""
    w = _run(lambda: _client().workers.pause(worker_id))
    out.print(f"worker {w.name} ({w.worker_id}) paused; running {w.running}", highlight=False)


@worker_app.command("resume")
def workers_resume(worker_id: Annotated[str, typer.Argument(help="A worker's id.")]) -> None:
    """Resumes a paused worker."""
    w = _run(lambda: _client().workers.resume(worker_id))
    out.print(f"worker {w.name} ({w.worker_id}) resumed", highlight=False)


rate_limit_app = typer.Typer(help="Rate limits: list, put, delete.", no_args_is_help=True)


@rate_limit_app.command("list")
def rate_limits_list(as_json: Json = False) -> None:
    """The tenant's rate limits with the units used in the current window."""
    found = _run(lambda: _client().rate_limits.list())
    if as_json:
        _print([asdict(r) for r in found])
        return
    from rich.table import Table

    table = Table("key", "limit", "per", "used", "dynamic")
    for r in found:
        table.add_row(r.key, str(r.limit), f"{r.duration_s:g}s", str(r.used), str(r.dynamic))
    out.print(table)


@rate_limit_app.command("put")
def rate_limits_put(
    key: Annotated[str, typer.Argument(help="The limit's key.")],
    limit: Annotated[int, typer.Argument(help="Units per duration.")],
    duration: Annotated[
        str, typer.Option(help="second, minute, hour, day, or a duration such as 10s.")
    ] = "minute",
) -> None:
    """Creates or updates a static rate limit."""
    _run(lambda: _client().rate_limits.put(key, limit, duration))
    out.print(f"rate limit {key}: {limit} per {duration}", highlight=False)


@rate_limit_app.command("delete")
def rate_limits_delete(key: Annotated[str, typer.Argument(help="The limit's key.")]) -> None:
    """Deletes a rate limit (queued runs naming it wait until it is put again)."""
    waiting = _run(lambda: _client().rate_limits.delete(key))
    out.print(f"rate limit {key} deleted; {waiting} queued runs still name it", highlight=False)
