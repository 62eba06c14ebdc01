"""``/ui/login/oidc``: sign-in through the configured OpenID Connect provider
(:mod:`stoker.engine.dashboard.oidc`), and ``/ui/login/oidc/callback``, where the provider
sends the browser back with a code.

The state, nonce, PKCE verifier and the page to go back to travel in a short-lived
HttpOnly cookie (SameSite=Lax, so the provider's redirect brings it back); the callback
refuses a state that is not the cookie's, so a sign-in cannot be started by another site.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from stoker.db.store import dashboard as store
from stoker.engine.dashboard import users
from stoker.engine.dashboard.core import PREFIX, PageError, PageRouter, dashboard_state, safe_next
from stoker.engine.dashboard.oidc import OidcProvider, Pending
from stoker.engine.dashboard.pages.signin import _signed_in
from stoker.errors import AuthenticationError, StokerError

router = PageRouter()

PENDING_COOKIE = "stoker_oidc"
PENDING_TTL_S = 600
CALLBACK = "/login/oidc/callback"


def _provider(request: Request) -> OidcProvider:
    oidc = dashboard_state(request).oidc
    if oidc is None:
        raise PageError(404, "sign-in through OpenID Connect is not configured on this engine")
    return oidc


def _redirect_uri(request: Request, oidc: OidcProvider) -> str:
    if oidc.settings.redirect_url:
        return oidc.settings.redirect_url
    return str(request.base_url).rstrip("/") + PREFIX + CALLBACK


@router.get("/login/oidc")
async def start(request: Request, next: str = "") -> Response:
    """Sends the browser to the provider to sign in."""
    oidc = _provider(request)
    pending = Pending.new(safe_next(next))
    try:
        target = await oidc.authorize_url(_redirect_uri(request, oidc), pending)
    except StokerError as exc:
        raise PageError(502, f"sign-in through {oidc.settings.name} failed: {exc}") from None
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        PENDING_COOKIE,
        pending.cookie(),
        max_age=PENDING_TTL_S,
        path=PREFIX + "/login/oidc",
        httponly=True,
        samesite="lax",
        secure=dashboard_state(request).secure_cookies,
    )
    return response


async def _user_for(request: Request, oidc: OidcProvider, email: str) -> int:
    state = dashboard_state(request)
    email = users.normalize_email(email)
    found = await store.dash_find_user(state.db, store.DashFindUser(email))
    if found is not None:
        return int(found["id"])
    role, tenant = oidc.settings.default_role, oidc.settings.tenant
    if not role or not tenant:
        raise AuthenticationError(
            f"{email} has no Stoker user; an admin adds one under Settings (or sets "
            "STOKER_OIDC_DEFAULT_ROLE and STOKER_OIDC_TENANT to create users at first sign-in)"
        )
    row = await store.dash_tenant_by_name(state.db, store.DashTenantByName(tenant))
    if row is None:
        raise AuthenticationError(f"STOKER_OIDC_TENANT names no tenant: {tenant!r}")
    made = await store.dash_ensure_user(
        state.db, store.DashEnsureUser(int(row["id"]), email, users.check_role(role))
    )
    assert made is not None
    return int(made["id"])


@router.get(CALLBACK)
async def callback(
    request: Request, code: str = "", state: str = "", error: str = "", error_description: str = ""
) -> Response:
    """Checks the provider's answer, opens a session for the user its ID token names."""
    oidc = _provider(request)
    pending = Pending.from_cookie(request.cookies.get(PENDING_COOKIE, ""))
    if pending is None or not state or state != pending.state:
        raise PageError(400, "this sign-in was not started here, or took too long; sign in again")
    if error:
        raise PageError(
            401, f"{oidc.settings.name} refused the sign-in: {error_description or error}"
        )
    try:
        claims = await oidc.exchange(code, _redirect_uri(request, oidc), pending)
        user_id = await _user_for(request, oidc, oidc.email(claims))
    except StokerError as exc:
        raise PageError(401, f"sign-in through {oidc.settings.name} failed: {exc}") from None
    dash = dashboard_state(request)
    session = await users.open_session(dash.db, user_id, dash.session_ttl_s)
    response = _signed_in(dash, pending.next_url, session.cookie)
    response.delete_cookie(PENDING_COOKIE, path=PREFIX + "/login/oidc")
    return response
