"""``/ui/account``: the signed-in user's own account — who they are, their role, and a
form to change their password (the current one is asked for). Every role may use it,
viewers too; the action still needs the session's CSRF token."""

from __future__ import annotations

from fastapi.responses import HTMLResponse

from stoker.engine.dashboard import users
from stoker.engine.dashboard.core import OwnActionDep, PageRouter, Ui, UiDep
from stoker.errors import StokerError

router = PageRouter()


def _page(
    ui: Ui, *, problem: str | None = None, message: str | None = None, status_code: int = 200
) -> HTMLResponse:
    return ui.render(
        "account.html",
        problem=problem,
        message=message,
        min_password=users.MIN_PASSWORD,
        status_code=status_code,
    )


@router.get("/account")
async def account(ui: UiDep) -> HTMLResponse:
    """The user's account page."""
    return _page(ui)


@router.post("/account/password")
async def change_password(ui: OwnActionDep) -> HTMLResponse:
    """Sets a new password once the current one is checked, and the new one typed twice."""
    new = await ui.field("new_password")
    if new != await ui.field("confirm_password"):
        return _page(ui, problem="the two new passwords differ", status_code=422)
    try:
        await users.change_own_password(
            ui.db, ui.user.id, ui.user.email, await ui.field("current_password"), new
        )
    except StokerError as exc:
        return _page(ui, problem=str(exc), status_code=422)
    return _page(ui, message="Your password was changed.")
