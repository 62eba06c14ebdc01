"""``stoker logs RUN_ID [--follow]``: what a run logged, through the SDK (the same call
as ``app.runs.logs``), for the tenant of ``STOKER_TOKEN`` (or the lite profile). An
unknown run is one red line and exit code 2."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from stoker.cli_crons import _client, _fail, out
from stoker.errors import StokerError

if TYPE_CHECKING:
    from stoker import LogLine

_STYLES = {"DEBUG": "dim", "WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}


def _show(line: LogLine, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "at": line.at.isoformat(),
                    "level": line.level,
                    "task_name": line.task_name,
                    "task_run_id": line.task_run_id,
                    "attempt": line.attempt,
                    "logger": line.logger,
                    "message": line.message,
                }
            ),
            flush=True,
        )
        return
    style = _STYLES.get(line.level, "")
    level = f"[{style}]{line.level:<8}[/]" if style else f"{line.level:<8}"
    who = f"{line.task_name}#{line.attempt}"
    out.print(
        f"{line.at.strftime('%H:%M:%S.%f')[:-3]} {level} {who} {line.message}",
        highlight=False,
        markup=True,
        soft_wrap=True,
    )


def logs(
    run_id: Annotated[str, typer.Argument(help="The run's id (a task run or a workflow run).")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until the run ends.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """Prints a run's log lines, oldest first (``--follow``: live, until the run ends)."""
    client = _client()
    try:
        if follow:
            for line in client.runs.follow_logs(run_id):
                _show(line, as_json)
        else:
            for line in client.runs.logs(run_id):
                _show(line, as_json)
    except StokerError as exc:
        raise _fail(exc.message) from None
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
