"""``/ui/settings``: the tenant's API tokens (prefix-free list with role, expiry and last
use; create one, whose secret is shown once, on the page that created it; revoke one) and
its dashboard users with their roles (create, delete). Only admins see or change it.

Tokens go through :mod:`stoker.engine.auth` as ``/api/v1/tokens`` does (a revoked token is
refused by every replica within a second); users through
:mod:`stoker.engine.dashboard.users`.
"""

from __future__ import annotations

import uuid

from fastapi.responses import HTMLResponse, RedirectResponse, Response

from stoker.engine.api.routes.tokens import expiry
from stoker.engine.auth import ADMIN as TOKEN_ADMIN
from stoker.engine.auth import MEMBER, get_token, issue_token, list_tokens, revoke_token
from stoker.engine.dashboard import users
from stoker.engine.dashboard.core import (
    ADMIN,
    PREFIX,
    ROLES,
    ActionDep,
    PageError,
    PageRouter,
    Ui,
    UiDep,
)
from stoker.engine.dashboard.pages_services import api
from stoker.errors import NotFoundError, StokerError

router = PageRouter(nav="settings")


async def _page(
    ui: Ui,
    *,
    secret: str | None = None,
    problem: str | None = None,
    message: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    ui.require(ADMIN)
    tokens = await list_tokens(ui.db, ui.user.tenant_id, include_revoked=True)
    people = await users.list_users(ui.db, ui.user.tenant_id)
    return ui.render(
        "settings.html",
        active="settings",
        tokens=tokens,
        people=people,
        roles=ROLES,
        secret=secret,
        problem=problem,
        message=message,
        status_code=status_code,
    )


@router.get("/settings")
async def settings(ui: UiDep) -> HTMLResponse:
    """API tokens and users (admins only)."""
    return await _page(ui)


def _back(ui: Ui) -> Response:
    url = f"{PREFIX}/settings"
    if ui.request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


@router.post("/settings/tokens")
async def create_token(ui: ActionDep) -> HTMLResponse:
    """Creates an API token and shows its secret on this response only (it is stored as a
    hash and cannot be shown again)."""
    ui.require(ADMIN)
    name = (await ui.field("name")).strip() or "dashboard"
    role = TOKEN_ADMIN if await ui.field("role") == TOKEN_ADMIN else MEMBER
    try:
        expires_at = expiry((await ui.field("expires_in")).strip() or None)
        issued = await issue_token(
            ui.db, ui.user.tenant_id, name[:200], role=role, expires_at=expires_at
        )
    except StokerError as exc:
        return await _page(ui, problem=str(exc), status_code=422)
    return await _page(ui, secret=issued.token, message=f"Token {name!r} created.")


@router.post("/settings/tokens/{token_id}/revoke")
async def revoke(ui: ActionDep, token_id: str) -> Response:
    """Revokes a token: every engine replica refuses it within a second."""
    ui.require(ADMIN)
    try:
        tid = uuid.UUID(token_id)
    except ValueError:
        raise PageError(404, f"no token {token_id!r} in this tenant") from None
    if await get_token(ui.db, tid, ui.user.tenant_id) is None:
        raise PageError(404, f"no token {token_id!r} in this tenant")
    state = api(ui)
    revoked = await revoke_token(ui.db, tid, ui.user.tenant_id, sender=state.engine_id)
    if revoked is not None:
        state.auth.forget(revoked)  # this replica ignores its own notification
    return _back(ui)


@router.post("/settings/users")
async def create_user(ui: ActionDep) -> Response:
    """Adds a dashboard user of this tenant with a role and a password."""
    ui.require(ADMIN)
    password = await ui.field("password")
    if not password:
        return await _page(ui, problem="a new user needs a password", status_code=422)
    try:
        await users.create_user(
            ui.db, ui.user.tenant_id, await ui.field("email"), await ui.field("role"), password
        )
    except StokerError as exc:
        return await _page(ui, problem=str(exc), status_code=422)
    return _back(ui)


@router.post("/settings/users/role")
async def set_role(ui: ActionDep) -> Response:
    """Changes a user's role (not one's own: another admin does that, so a tenant never
    loses its last admin by a slip)."""
    ui.require(ADMIN)
    try:
        email = users.normalize_email(await ui.field("email"))
        if email == ui.user.email:
            return await _page(
                ui, problem="you cannot change your own role; ask another admin", status_code=422
            )
        await users.set_role(ui.db, ui.user.tenant_id, email, await ui.field("role"))
    except NotFoundError as exc:
        raise PageError(404, str(exc)) from None
    except StokerError as exc:
        return await _page(ui, problem=str(exc), status_code=422)
    return await _page(ui, message=f"{email} is now {await ui.field('role')}.")


@router.post("/settings/users/delete")
async def delete_user(ui: ActionDep) -> Response:
    """Deletes a dashboard user of this tenant (not oneself)."""
    ui.require(ADMIN)
    try:
        email = users.normalize_email(await ui.field("email"))
    except StokerError as exc:
        raise PageError(404, str(exc)) from None
    mine = {u["email"] for u in await users.list_users(ui.db, ui.user.tenant_id)}
    if email not in mine:
        raise PageError(404, f"no user {email!r} in this tenant")
    if email == ui.user.email:
        return await _page(ui, problem="you cannot delete yourself", status_code=422)
    await users.delete_user(ui.db, email)
    return _back(ui)
