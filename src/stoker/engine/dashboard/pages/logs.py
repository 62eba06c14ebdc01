"""``/ui/logs``: search the tenant's task log lines, newest first, with a live tail.

The search box takes words (matched anywhere in a line, case-insensitive) and qualifiers:
``level:WARNING`` (that level or above), ``task:NAME`` and ``run:RUN_ID`` (that run's lines,
oldest first, as they were logged). ``window`` bounds the time (``1h`` by default). Lines
are read through the engine's :class:`~stoker.engine.observe.Observe`, as
``GET /api/v1/logs`` reads them; pages go back with the ``cursor`` it returns.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.responses import HTMLResponse

from stoker.engine.dashboard.core import PageRouter, UiDep
from stoker.engine.dashboard.pages_services import api
from stoker.engine.dashboard.windows import WINDOWS, parse_window
from stoker.engine.observe.logs import level_number
from stoker.errors import NotFoundError, StokerError

router = PageRouter(nav="logs")

PAGE = 200
LEVEL_NAMES = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


@dataclass(slots=True)
class LogQuery:
    """A search box read: its words, level, task and run."""

    text: str = ""
    level: int = 0
    task: str | None = None
    run: uuid.UUID | None = None
    problems: list[str] = field(default_factory=list)


def parse_query(q: str) -> LogQuery:
    """The search box's words and qualifiers; a qualifier that cannot be read is named in
    ``problems`` and left out."""
    out = LogQuery()
    words = []
    for token in q.split():
        key, sep, value = token.partition(":")
        key = key.lower()
        if sep and key == "level":
            try:
                out.level = level_number(value)
            except StokerError as exc:
                out.problems.append(str(exc))
        elif sep and key == "task" and value:
            out.task = value
        elif sep and key == "run" and value:
            try:
                out.run = uuid.UUID(value)
            except ValueError:
                out.problems.append(f"run:{value} is not a run id")
        else:
            words.append(token)
    out.text = " ".join(words)
    return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _line(row: Any) -> dict[str, Any]:
    """A stored line with the time it was logged as a datetime (``at``)."""
    return {**row, "at": _EPOCH + timedelta(milliseconds=row["at_ms"])}


@router.get("/logs")
async def logs(ui: UiDep, q: str = "", window: str = "1h", cursor: str = "") -> HTMLResponse:
    """Log lines matching the search, newest first (a run's: oldest first)."""
    query = parse_query(q)
    span, problem = parse_window(window)
    problems = [*query.problems, *([problem] if problem else [])]
    observe = api(ui).observe
    assert observe is not None  # the app always has a reader of its own
    tenant = ui.user.tenant_id
    rows: list[Any] = []
    next_cursor = None
    try:
        if query.run is not None:
            page, _finished = await observe.run_logs(tenant, query.run, limit=1000)
            rows = [
                r
                for r in page.rows
                if r["level"] >= query.level and query.text.lower() in r["message"].lower()
            ]
        else:
            found = await observe.search_logs(
                tenant,
                text=query.text or None,
                level=query.level,
                task_name=query.task,
                since=datetime.now(UTC) - span,
                cursor=cursor or None,
                limit=PAGE,
            )
            rows, next_cursor = found.rows, found.next_cursor
    except NotFoundError as exc:
        problems.append(str(exc))
    except StokerError as exc:  # a cursor that is not one of ours
        problems.append(str(exc))
    return ui.render(
        "logs.html",
        active="logs",
        rows=[_line(r) for r in rows],
        q=q,
        window=window if window in WINDOWS else "1h",
        windows=list(WINDOWS),
        problems=problems,
        next_cursor=next_cursor,
        levels=LEVEL_NAMES,
    )
