"""The dashboard: server-rendered pages (Jinja2 + htmx) served by the engine under ``/ui``.

:func:`mount` adds it to the engine's HTTP app: every module of
:mod:`stoker.engine.dashboard.pages` with a ``router`` (a
:class:`~stoker.engine.dashboard.core.PageRouter`) is served under ``/ui``, the vendored
static files under ``/ui/static``, and ``/`` sends browsers to ``/ui/``. Pages render
HTML on the server; htmx swaps fragments and :mod:`~stoker.engine.dashboard.live` pushes
"something changed" over Server-Sent Events. No Node toolchain is involved anywhere.

Sign-in, sessions, roles and CSRF are in :mod:`~stoker.engine.dashboard.core` and
:mod:`~stoker.engine.dashboard.users`; ``docs/dashboard.md`` has the page conventions.
"""

from __future__ import annotations

import importlib
import pkgutil
import urllib.parse
from importlib import resources
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from stoker.db import Executor
from stoker.engine.dashboard.core import (
    NAV,
    PREFIX,
    DashboardState,
    PageError,
    PageRouter,
    SignInRequired,
    current_user,
    dashboard_state,
    templates,
)
from stoker.engine.dashboard.live import LiveHub
from stoker.engine.dashboard.oidc import OidcProvider, OidcSettings
from stoker.engine.dispatcher.served import ServedTasks

if TYPE_CHECKING:
    from stoker.engine.runs.bulk import BulkOps
    from stoker.engine.runs.ops import RunOps
    from stoker.engine.signals import Signals

__all__ = ["DashboardState", "mount"]


def page_routers() -> list[PageRouter]:
    """The routers of every page module, in module-name order."""
    from stoker.engine.dashboard import pages

    found: list[PageRouter] = []
    for info in sorted(pkgutil.iter_modules(pages.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{pages.__name__}.{info.name}")
        router = getattr(module, "router", None)
        if isinstance(router, PageRouter):
            found.append(router)
    return found


def mount(
    app: FastAPI,
    db: Executor,
    *,
    served: ServedTasks | None = None,
    signals: Signals | None = None,
    ops: RunOps | None = None,
    bulk: BulkOps | None = None,
    secure_cookies: bool = False,
) -> DashboardState:
    """Serves the dashboard from ``app``: pages under ``/ui``, ``/`` redirecting there.

    ``signals``: the engine's run signals, which make pages live (without them pages
    poll). ``ops`` and ``bulk``: the engine's run operations and bulk operations, for
    cancel and replay (without them those actions answer that they need an engine).
    ``secure_cookies``: mark the session cookie Secure (the engine serves TLS).
    """
    routers = page_routers()
    registered = {r.nav for r in routers if r.nav is not None}
    state = DashboardState(
        db,
        served or ServedTasks(db),
        LiveHub(signals),
        ops,
        bulk,
        secure_cookies=secure_cookies,
        nav=[item for item in NAV if item.key in registered],
    )
    oidc = OidcSettings()
    if oidc.enabled:
        state.oidc = OidcProvider(oidc)
    app.state.dashboard = state
    for router in routers:
        app.include_router(router, prefix=PREFIX)
    static = resources.files("stoker.engine.dashboard") / "static"
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(static)), name="dashboard-static")

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, exc: SignInRequired) -> Response:
        target = f"{PREFIX}/login?" + urllib.parse.urlencode({"next": exc.next_url})
        if request.headers.get("hx-request") == "true":
            # htmx follows this with a full page load rather than swapping a sign-in form
            # into a fragment.
            current = request.headers.get("hx-current-url", "")
            parsed = urllib.parse.urlsplit(current)
            back = parsed.path + (f"?{parsed.query}" if parsed.query else "")
            target = f"{PREFIX}/login?" + urllib.parse.urlencode({"next": back or exc.next_url})
            return Response(status_code=200, headers={"HX-Redirect": target})
        if request.method != "GET":
            return HTMLResponse("sign in again", status_code=401)
        return RedirectResponse(target, status_code=303)

    @app.exception_handler(PageError)
    async def page_error(request: Request, exc: PageError) -> HTMLResponse:
        user = await current_user(request, dashboard_state(request))
        return templates.TemplateResponse(
            request,
            "error.html",
            {
                "user": user,
                "nav": state.nav,
                "csrf": user.csrf_token if user else "",
                "active": None,
                "message": exc.message,
                "status": exc.status,
                "is_htmx": request.headers.get("hx-request") == "true",
            },
            status_code=exc.status,
        )

    return state
