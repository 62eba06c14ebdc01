"""``stoker event push|list|get|replay``: events of the tenant of ``STOKER_TOKEN`` (or the
lite profile), through the SDK (the same calls as ``app.events``). A mistake (bad key,
payload that is not JSON, unknown event) is one red line and exit code 2.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stoker.cli_crons import _client, _fail, _json_arg, _run, _time_arg, out

if TYPE_CHECKING:
    from stoker import EventInfo

event_app = typer.Typer(help="Events: push, list, get, replay.", no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _show(e: EventInfo, full: bool) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": e.id,
        "key": e.key,
        "scope": e.scope,
        "additional_metadata": e.additional_metadata,
        "priority": e.priority,
        "created_at": e.created_at.isoformat() if e.created_at else None,
        "run_count": e.run_count,
    }
    if full:
        shown["payload"] = e.payload
        shown["runs"] = [
            {
                "run_id": r.run_id,
                "task_name": r.task_name,
                "workflow_name": r.workflow_name,
                "filter_id": r.filter_id,
                "replay": r.replay,
                "status": r.status,
            }
            for r in e.runs
        ]
    return shown


@event_app.command("push")
def event_push(
    key: Annotated[str, typer.Argument(help="The event key, e.g. order:created.")],
    payload: Annotated[str, typer.Option(help="The payload, JSON.")] = "null",
    scope: Annotated[str | None, typer.Option(help="The event's scope.")] = None,
    metadata: Annotated[
        str | None, typer.Option("--metadata", help="Additional metadata, a JSON object.")
    ] = None,
    priority: Annotated[int | None, typer.Option(help="Priority of its runs, 1..3.")] = None,
    as_json: Json = False,
) -> None:
    """Pushes an event: prints its id and the runs it started."""
    value = _json_arg(payload, "--payload")
    md = _json_arg(metadata, "--metadata")
    if md is not None and not isinstance(md, dict):
        raise _fail("--metadata must be a JSON object")
    pushed = _run(
        lambda: _client().events.push(
            key, value, scope=scope, additional_metadata=md, priority=priority
        )
    )
    shown = {"id": pushed.event_id, "run_ids": pushed.run_ids, "satisfied": pushed.satisfied}
    if as_json:
        print(json.dumps(shown))
    else:
        out.print(
            f"event {pushed.event_id}: {len(pushed.run_ids)} run(s) started, "
            f"{pushed.satisfied} wait(s) satisfied"
        )
        for r in pushed.run_ids:
            out.print(f"  run {r}")


@event_app.command("list")
def event_list(
    key: Annotated[str | None, typer.Option(help="Only this exact key.")] = None,
    scope: Annotated[str | None, typer.Option(help="Only this scope.")] = None,
    metadata: Annotated[
        str | None, typer.Option("--metadata", help="JSON object the metadata contains.")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Pushed at or after (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Pushed before (ISO 8601).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    as_json: Json = False,
) -> None:
    """Events, newest first."""
    md = _json_arg(metadata, "--metadata")
    if md is not None and not isinstance(md, dict):
        raise _fail("--metadata must be a JSON object")
    found = _run(
        lambda: _client().events.list(
            key=key,
            scope=scope,
            additional_metadata=md,
            since=_time_arg(since, "--since") if since else None,
            until=_time_arg(until, "--until") if until else None,
            limit=limit,
        )
    )
    if as_json:
        print(json.dumps([_show(e, False) for e in found]))
        return
    from rich.table import Table

    table = Table("id", "key", "scope", "runs", "created")
    for e in found:
        table.add_row(
            e.id,
            e.key,
            e.scope or "-",
            str(e.run_count),
            e.created_at.isoformat() if e.created_at else "-",
        )
    out.print(table)


@event_app.command("get")
def event_get(
    event_id: Annotated[str, typer.Argument(help="The event's id.")],
    as_json: Json = False,
) -> None:
    """One event as JSON: payload, metadata and the runs it started with their status."""
    found = _run(lambda: _client().events.get(event_id))
    print(json.dumps(_show(found, True), indent=None if as_json else 2))


@event_app.command("replay")
def event_replay(event_id: Annotated[str, typer.Argument(help="The event's id.")]) -> None:
    """Starts the event's runs again (its subscribers and filters as they are now)."""
    ids = _run(lambda: _client().events.replay(event_id))
    out.print(f"event {event_id}: {len(ids)} run(s) started again")
    for r in ids:
        out.print(f"  run {r}")
