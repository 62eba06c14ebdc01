"""What every dashboard page is made of: the page router, the navigation, the request's
signed-in user, rendering, roles and CSRF.

A page is a route on a :class:`PageRouter` in a module of
:mod:`stoker.engine.dashboard.pages`; :func:`stoker.engine.dashboard.mount` finds every
such module and serves its routes under ``/ui``. A page takes :data:`UiDep` (a signed-in
user; a browser without a session is sent to sign in and back) and an action takes
:data:`ActionDep` (also: the session's CSRF token, and at least the operator role)::

    router = PageRouter()

    @router.get("/queues")
    async def queues(ui: UiDep) -> HTMLResponse:
        rows = await ...(ui.db, ...(ui.user.tenant_id))
        return ui.render("queues.html", active="queues", rows=rows)

Every read is scoped to ``ui.user.tenant_id``. ``docs/dashboard.md`` ("How to add a page")
says the same for people.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape

from stoker.db import Executor
from stoker.db.store import dashboard as store

if TYPE_CHECKING:
    from stoker.engine.dashboard.live import LiveHub
    from stoker.engine.dashboard.oidc import OidcProvider
    from stoker.engine.dispatcher.served import ServedTasks
    from stoker.engine.runs.bulk import BulkOps
    from stoker.engine.runs.ops import RunOps

PREFIX = "/ui"
SESSION_COOKIE = "stoker_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"

VIEWER = "viewer"
OPERATOR = "operator"
ADMIN = "admin"
ROLES = (VIEWER, OPERATOR, ADMIN)
"""Dashboard roles, weakest first: viewers read, operators also act on runs, admins also
manage users and tokens."""


@dataclass(frozen=True, slots=True)
class NavItem:
    """One link of the side navigation; shown once a page module registers ``key``."""

    key: str
    title: str
    path: str
    role: str = "viewer"
    """The weakest role that sees the link (the page itself checks the role too)."""


NAV: tuple[NavItem, ...] = (
    NavItem("overview", "Overview", "/"),
    NavItem("runs", "Runs", "/runs"),
    NavItem("workers", "Workers", "/workers"),
    NavItem("tasks", "Tasks & workflows", "/tasks"),
    NavItem("queues", "Queues", "/queues"),
    NavItem("crons", "Crons & schedules", "/crons"),
    NavItem("events", "Events", "/events"),
    NavItem("rate-limits", "Rate limits", "/rate-limits"),
    NavItem("webhooks", "Webhooks & filters", "/webhooks"),
    NavItem("logs", "Logs", "/logs"),
    NavItem("settings", "Settings", "/settings", role="admin"),
)
"""Every page of the dashboard, in navigation order. Fixed here so that adding a page never
edits shared files: a page module declares ``PageRouter(nav="queues")`` and the link shows."""


class PageRouter(APIRouter):
    """The routes of one page module; ``nav`` names its :data:`NAV` entry (None: no link)."""

    def __init__(self, nav: str | None = None) -> None:
        super().__init__(include_in_schema=False)
        if nav is not None and nav not in {item.key for item in NAV}:
            raise ValueError(f"nav {nav!r} is not one of {[item.key for item in NAV]}")
        self.nav = nav


@dataclass(slots=True)
class DashboardState:
    """What the dashboard's routes share, kept on ``app.state.dashboard``."""

    db: Executor
    served: ServedTasks
    live: LiveHub
    ops: RunOps | None = None
    bulk: BulkOps | None = None
    secure_cookies: bool = False
    session_ttl_s: float = 12 * 3600
    oidc: OidcProvider | None = None
    """Sign-in through an OpenID Connect provider, when configured (``STOKER_OIDC_*``)."""
    nav: list[NavItem] = field(default_factory=list)
    """The links of the registered pages, in :data:`NAV` order."""


@dataclass(frozen=True, slots=True)
class User:
    """The signed-in user of a request."""

    id: int
    email: str
    role: str
    tenant_id: int
    tenant_name: str
    csrf_token: str

    def can(self, role: str) -> bool:
        """Whether the user's role is ``role`` or stronger."""
        return ROLES.index(self.role) >= ROLES.index(role)


class SignInRequired(Exception):
    """No valid session: the browser is sent to sign in, then back to ``next_url``."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class PageError(Exception):
    """A page that cannot be shown (no such run, not allowed): rendered as an error page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


COUNT_CAP = 10_000
"""Counts are exact up to this; above it a page shows "10,000+"."""


def format_count(n: int | None) -> str:
    """``1234`` as "1,234"; over :data:`COUNT_CAP` as "10,000+"."""
    if n is None:
        return "-"
    return f"{COUNT_CAP:,}+" if n > COUNT_CAP else f"{n:,}"


def format_duration(seconds: float | None) -> str:
    """A duration in words a person reads at a glance: 850 ms, 4.2 s, 3 min 5 s, 2 h 10 min."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def _environment() -> Environment:
    folder = resources.files("stoker.engine.dashboard") / "templates"
    env = Environment(
        loader=FileSystemLoader(str(folder)),
        autoescape=select_autoescape(["html", "svg"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["count"] = format_count
    env.filters["duration"] = format_duration
    env.globals["PREFIX"] = PREFIX
    return env


templates = Jinja2Templates(env=_environment())


def dashboard_state(request: Request) -> DashboardState:
    """The state of the dashboard serving ``request``."""
    state: DashboardState = request.app.state.dashboard
    return state


def hash_secret(token: str) -> bytes:
    """The stored form of a session cookie or sign-in link token."""
    return hashlib.sha256(token.encode()).digest()


def here(request: Request) -> str:
    """The path and query of the request (where sign-in sends the browser back to)."""
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def safe_next(value: str | None) -> str:
    """A same-site path to go to after sign-in; anything else (another host, a scheme)
    becomes the overview, so a sign-in link cannot send people off-site."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return PREFIX + "/"
    return value


@dataclass(slots=True)
class Ui:
    """One dashboard request: its user, database and rendering."""

    request: Request
    state: DashboardState
    user: User
    _form: dict[str, list[str]] | None = None

    @property
    def db(self) -> Executor:
        return self.state.db

    def render(self, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
        """Renders ``template`` with the page's context plus the user, navigation and CSRF
        token every page's layout needs. A request from htmx for a fragment passes
        ``fragment=True`` through the template's own blocks."""
        context.setdefault("active", None)
        return templates.TemplateResponse(
            self.request,
            template,
            {
                "user": self.user,
                "nav": [item for item in self.state.nav if self.user.can(item.role)],
                "csrf": self.user.csrf_token,
                "can_act": self.user.can(OPERATOR),
                "is_htmx": self.request.headers.get("hx-request") == "true",
                **context,
            },
            status_code=status_code,
        )

    def require(self, role: str) -> None:
        """PageError 403 unless the user has ``role`` or stronger."""
        if not self.user.can(role):
            raise PageError(
                403, f"your role ({self.user.role}) cannot do this; it needs the {role} role"
            )

    async def form(self) -> dict[str, list[str]]:
        """The request's url-encoded form fields (each a list of values)."""
        if self._form is None:
            body = (await self.request.body()).decode("utf-8", errors="replace")
            self._form = urllib.parse.parse_qs(body, keep_blank_values=True)
        return self._form

    async def field(self, name: str, default: str = "") -> str:
        """One form field's first value."""
        return (await self.form()).get(name, [default])[0]


async def current_user(request: Request, state: DashboardState) -> User | None:
    """The user of the request's session cookie, None without a live session."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie or len(cookie) > 200:
        return None
    row = await store.dash_find_session(state.db, store.DashFindSession(hash_secret(cookie)))
    if row is None:
        return None
    return User(
        row["user_id"],
        row["email"],
        row["role"],
        row["tenant_id"],
        row["tenant_name"],
        row["csrf_token"],
    )


async def _ui(request: Request) -> Ui:
    state = dashboard_state(request)
    user = await current_user(request, state)
    if user is None:
        raise SignInRequired(here(request))
    return Ui(request, state, user)


async def _own_action(request: Request) -> Ui:
    ui = await _ui(request)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        sent = await ui.field(CSRF_FIELD)
    if not sent or sent != ui.user.csrf_token:
        raise PageError(
            403, "this form is out of date (its security token does not match); reload the page"
        )
    return ui


async def _action(request: Request) -> Ui:
    ui = await _own_action(request)
    ui.require(OPERATOR)
    return ui


UiDep = Annotated[Ui, Depends(_ui)]
"""A page: the signed-in user (else a redirect to sign in and back)."""
ActionDep = Annotated[Ui, Depends(_action)]
"""An action: a signed-in operator or admin whose request carries the session's CSRF token
(header ``X-CSRF-Token`` or form field ``csrf``); else 403."""
OwnActionDep = Annotated[Ui, Depends(_own_action)]
"""An action on the user's own account (any role, viewers too): the session's CSRF token
is checked as for :data:`ActionDep`, the role is not."""
