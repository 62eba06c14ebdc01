"""Output: rich tables on the console, JSON and PNG charts in the results directory."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from rich.table import Table

from bench.config import Context


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    """A number for a table cell; a dash when there is none."""
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}{unit}"
    return f"{value:.{digits}f}{unit}"


def machine() -> dict[str, Any]:
    """The machine the numbers were measured on."""
    return {
        "cpus": psutil.cpu_count(logical=True),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def meta(ctx: Context) -> dict[str, Any]:
    """What every JSON file carries about the run."""
    return {
        "profile": ctx.label,
        "sizes": ctx.profile.name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "postgres": {"source": ctx.server.source, **ctx.server.settings},
        "overrides": ctx.overrides,
    }


def public(result: dict[str, Any]) -> dict[str, Any]:
    """A result without its private (underscore) keys, for JSON."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


def write_json(ctx: Context, name: str, results: dict[str, dict[str, Any]]) -> Path:
    """Writes ``<out>/<name>.json`` with the run's metadata and each system's result."""
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.out_dir / f"{name}.json"
    body = {"scenario": name, **meta(ctx), "systems": {k: public(v) for k, v in results.items()}}
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
    return path


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    """A right-aligned numeric table with the first column as the row label."""
    out = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        out.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        out.add_row(*row)
    return out


def error_rows(results: dict[str, dict[str, Any]], width: int) -> list[list[str]]:
    """Rows for systems whose run failed: the name and the reason's first line.

    The whole message is in the JSON and was printed when the failure happened.
    """
    return [
        [name, f"[red]{r['error'].splitlines()[0][:60]}[/red]", *[""] * (width - 2)]
        for name, r in results.items()
        if "error" in r
    ]


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, ctx: Context, name: str) -> Path:
    """Saves a figure as ``<out>/<name>.png`` and closes it."""
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.out_dir / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path
