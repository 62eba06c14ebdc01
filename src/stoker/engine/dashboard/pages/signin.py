"""Signing in and out: the password form, one-time links (``stoker lite`` prints one), and
the live stream every page opens (``/ui/live``, see :mod:`~stoker.engine.dashboard.live`).

A wrong email and a wrong password get the same answer, in the same time.
"""

from __future__ import annotations

import urllib.parse

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from stoker.engine.dashboard import users
from stoker.engine.dashboard.core import (
    PREFIX,
    SESSION_COOKIE,
    DashboardState,
    PageRouter,
    UiDep,
    dashboard_state,
    safe_next,
    templates,
)

router = PageRouter()


def _form_page(request: Request, next_url: str, email: str, error: str | None) -> HTMLResponse:
    oidc = dashboard_state(request).oidc
    return templates.TemplateResponse(
        request,
        "login.html",
        {
            "user": None,
            "csrf": "",
            "nav": [],
            "next": next_url,
            "email": email,
            "error": error,
            "oidc_name": oidc.settings.name if oidc is not None else None,
        },
        status_code=401 if error else 200,
    )


def _signed_in(state: DashboardState, next_url: str, cookie: str) -> RedirectResponse:
    response = RedirectResponse(safe_next(next_url), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(state.session_ttl_s),
        path="/",
        httponly=True,
        samesite="lax",
        secure=state.secure_cookies,
    )
    return response


@router.get("/login")
async def login_form(request: Request, next: str = "") -> HTMLResponse:
    """The sign-in form; ``next``: where to go after signing in."""
    return _form_page(request, safe_next(next), "", None)


@router.post("/login")
async def login(request: Request) -> Response:
    """Checks the email and password and opens a session."""
    state = dashboard_state(request)
    body = (await request.body()).decode("utf-8", errors="replace")
    form = urllib.parse.parse_qs(body, keep_blank_values=True)
    email = form.get("email", [""])[0]
    next_url = safe_next(form.get("next", [""])[0])
    user_id = await users.verify_password(state.db, email, form.get("password", [""])[0])
    if user_id is None:
        return _form_page(request, next_url, email, "Wrong email or password.")
    session = await users.open_session(state.db, user_id, state.session_ttl_s)
    return _signed_in(state, next_url, session.cookie)


@router.get("/login/link")
async def login_link(request: Request, token: str = "", next: str = "") -> Response:
    """Signs in with a one-time link; a used or expired one shows the form with why."""
    state = dashboard_state(request)
    user_id = await users.use_login_link(state.db, token)
    if user_id is None:
        return _form_page(
            request,
            safe_next(next),
            "",
            "This sign-in link was used already or has expired; sign in with a password, "
            "or restart stoker lite for a new link.",
        )
    session = await users.open_session(state.db, user_id, state.session_ttl_s)
    return _signed_in(state, next, session.cookie)


@router.post("/logout")
async def logout(ui: UiDep) -> RedirectResponse:
    """Ends the session (needs the session's CSRF token like every action)."""
    if await ui.field("csrf") != ui.user.csrf_token:
        return RedirectResponse(f"{PREFIX}/", status_code=303)
    cookie = ui.request.cookies.get(SESSION_COOKIE, "")
    await users.close_session(ui.db, cookie)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/live")
async def live(ui: UiDep) -> StreamingResponse:
    """The page's Server-Sent Events (see :mod:`stoker.engine.dashboard.live`). A stream
    lasts at most ten minutes; the browser reconnects, which re-checks the session."""
    return StreamingResponse(
        ui.state.live.events(ui.user.tenant_id, max_s=600.0),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
