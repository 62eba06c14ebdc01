"""The runs list's filter, read from the URL (every filter lives there).

Parameters: ``status`` (repeatable), ``name`` (a task or workflow name), ``kind``
(``task``, ``workflow`` or both when absent), ``window`` (``1h``...) or ``since``/``until``
(ISO 8601, UTC when no zone; the histogram's zoom sets them), ``meta`` (repeatable,
``key=value`` or ``key=v1|v2``; one per line when several come in one parameter),
``meta_mode`` (``all``: every key must match, the default; ``any``: one of them) and
``cursor``.

Metadata semantics: values of one key are ORed; different keys are ANDed (or ORed with
``meta_mode=any``). Two ``meta`` parameters naming the same key merge their values.

Nothing here raises on bad input: each malformed parameter becomes a message in
:attr:`RunQuery.problems` (shown on the page) and is left out of the filter.
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.parse
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.datastructures import QueryParams

from stoker._core.status import RunStatus
from stoker.engine.dashboard.windows import DEFAULT_WINDOW, WINDOWS

KINDS = ("task", "workflow")
STATUSES = tuple(s.value for s in RunStatus)
MAX_META = 10


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last run of a page: where the next page starts."""

    created_at: datetime
    kind: str
    run_id: uuid.UUID

    def encode(self) -> str:
        raw = json.dumps([self.created_at.isoformat(), self.kind, str(self.run_id)])
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @staticmethod
    def decode(text: str) -> Cursor:
        """ValueError when ``text`` is not a cursor of this page."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            at, kind, run_id = json.loads(raw)
            created = datetime.fromisoformat(at)
            if created.tzinfo is None or kind not in KINDS:
                raise ValueError("not a cursor")
            return Cursor(created, kind, uuid.UUID(run_id))
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError("not a cursor") from exc


@dataclass(frozen=True, slots=True)
class RunQuery:
    """A parsed runs filter."""

    statuses: tuple[str, ...] = ()
    name: str | None = None
    kinds: tuple[str, ...] = KINDS
    window: str | None = DEFAULT_WINDOW
    since: datetime = field(default_factory=lambda: datetime.now(UTC) - WINDOWS[DEFAULT_WINDOW])
    until: datetime = field(default_factory=lambda: datetime.now(UTC))
    meta: tuple[tuple[str, tuple[str, ...]], ...] = ()
    meta_mode: str = "all"
    cursor: Cursor | None = None
    problems: tuple[str, ...] = ()

    @property
    def meta_text(self) -> str:
        """The metadata filters one per line, as the form's text box shows them."""
        return "\n".join(f"{k}={'|'.join(vs)}" for k, vs in self.meta)

    def metadata_json(self) -> str | None:
        """The ``metadata`` parameter of the statements (groups of objects; see
        ``dashboard_runs.sql``), or None without a metadata filter."""
        if not self.meta:
            return None
        groups = [[{k: v} for v in values] for k, values in self.meta]
        if self.meta_mode == "any":
            groups = [[o for g in groups for o in g]]
        return json.dumps(groups)

    def required_json(self) -> str | None:
        """An object every matching run's metadata must contain (the keys with one value,
        when keys are ANDed), or None when there is no such object."""
        if self.meta_mode != "all":
            return None
        single = {k: vs[0] for k, vs in self.meta if len(vs) == 1}
        return json.dumps(single) if single else None

    def statement_args(self) -> dict[str, Any]:
        """The filter's parameters, as every runs statement takes them."""
        return {
            "kinds": list(self.kinds),
            "statuses": list(self.statuses) or None,
            "name": self.name,
            "since": self.since,
            "until": self.until,
            "metadata": self.metadata_json(),
        }

    def params(self, **change: Any) -> list[tuple[str, str]]:
        """The URL parameters of this filter (without the cursor), with changes:
        ``status=[...]``, ``since=``/``until=`` (drops the window), ``window=`` (drops
        since/until)."""
        statuses = change.get("status", self.statuses)
        out: list[tuple[str, str]] = [("status", s) for s in statuses]
        if self.name:
            out.append(("name", self.name))
        if len(self.kinds) == 1:
            out.append(("kind", self.kinds[0]))
        if "since" in change:
            out += [("since", change["since"].isoformat()), ("until", change["until"].isoformat())]
        elif "window" in change:
            out.append(("window", change["window"]))
        elif self.window:
            out.append(("window", self.window))
        else:
            out += [("since", self.since.isoformat()), ("until", self.until.isoformat())]
        for key, values in self.meta:
            out.append(("meta", f"{key}={'|'.join(values)}"))
        if self.meta_mode == "any":
            out.append(("meta_mode", "any"))
        return out

    def url(self, path: str, **change: Any) -> str:
        return f"{path}?{urllib.parse.urlencode(self.params(**change))}"

    def toggled(self, status: str) -> list[str]:
        """The status list with ``status`` added or removed (for the status chips)."""
        if status in self.statuses:
            return [s for s in self.statuses if s != status]
        return [*self.statuses, status]

    def in_words(self) -> str:
        """The filter as a sentence (shown before a bulk action)."""
        parts = []
        if self.statuses:
            parts.append("status " + " or ".join(self.statuses))
        if self.name:
            parts.append(f"name {self.name}")
        if len(self.kinds) == 1:
            parts.append(f"{self.kinds[0]} runs only")
        joiner = " and " if self.meta_mode == "all" else " or "
        if self.meta:
            parts.append(
                "metadata " + joiner.join(f"{k} = {' or '.join(vs)}" for k, vs in self.meta)
            )
        when = (
            f"created in the last {self.window}"
            if self.window
            else f"created from {self.since:%Y-%m-%d %H:%M:%S} "
            f"to {self.until:%Y-%m-%d %H:%M:%S} UTC"
        )
        return "; ".join([*parts, when])


def _time(value: str, name: str, problems: list[str]) -> datetime | None:
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        problems.append(f"{name} {value!r} is not a time (use ISO 8601, e.g. 2026-01-31T12:00)")
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def parse(params: QueryParams, now: datetime | None = None) -> RunQuery:
    """The filter of a runs page's URL; malformed parts are named in ``problems``."""
    now = now or datetime.now(UTC)
    problems: list[str] = []
    statuses: list[str] = []
    for s in params.getlist("status"):
        if s.upper() in STATUSES:
            if s.upper() not in statuses:
                statuses.append(s.upper())
        else:
            problems.append(f"status {s!r} is not one of {', '.join(STATUSES)}")
    name = (params.get("name") or "").strip() or None
    if name is not None and len(name) > 500:
        problems.append("name is longer than 500 characters")
        name = None
    kinds: tuple[str, ...] = KINDS
    kind = params.get("kind")
    if kind:
        if kind in KINDS:
            kinds = (kind,)
        elif kind != "all":
            problems.append(f"kind {kind!r} is not task, workflow or all")
    window: str | None = DEFAULT_WINDOW
    since = now - WINDOWS[DEFAULT_WINDOW]
    until = now
    if params.get("since") or params.get("until"):
        lo = _time(params.get("since", ""), "since", problems) if params.get("since") else None
        hi = _time(params.get("until", ""), "until", problems) if params.get("until") else now
        if lo is not None and hi is not None:
            if lo >= hi:
                problems.append("since must be before until")
            else:
                window, since, until = None, lo, hi
    elif params.get("window"):
        w = params["window"]
        if w in WINDOWS:
            window, since = w, now - WINDOWS[w]
        else:
            problems.append(f"window {w!r} is not one of {', '.join(WINDOWS)}")
    meta: dict[str, list[str]] = {}
    # The form's text box sends one parameter with a filter per line.
    items = [line.strip() for raw in params.getlist("meta") for line in raw.splitlines()]
    items = [i for i in items if i]
    for item in items[:MAX_META]:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value:
            problems.append(f"metadata filter {item!r} is not key=value (or key=v1|v2)")
            continue
        values = meta.setdefault(key, [])
        values += [v for v in value.split("|") if v and v not in values]
    if len(items) > MAX_META:
        problems.append(f"at most {MAX_META} metadata filters are used")
    meta_mode = params.get("meta_mode", "all")
    if meta_mode not in ("all", "any"):
        problems.append(f"meta_mode {meta_mode!r} is not all or any")
        meta_mode = "all"
    cursor = None
    if params.get("cursor"):
        try:
            cursor = Cursor.decode(params["cursor"])
        except ValueError:
            problems.append("the page cursor is not one this page made; showing the first page")
    return RunQuery(
        tuple(statuses),
        name,
        kinds,
        window,
        since,
        until,
        tuple((k, tuple(v)) for k, v in meta.items()),
        meta_mode,
        cursor,
        tuple(problems),
    )


def zoom(query: RunQuery, start: datetime, step: timedelta) -> RunQuery:
    """The filter narrowed to one histogram bucket."""
    return replace(query, window=None, since=start, until=start + step, cursor=None)
