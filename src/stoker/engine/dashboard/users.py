"""Dashboard users: creating, listing and deleting them, passwords, sessions and one-time
sign-in links.

Passwords are hashed with argon2id (argon2-cffi's defaults). A session is a random cookie
of which only the SHA-256 is stored, with a CSRF token of its own; one-time links work the
same way and are spent on first use. ``stoker user ...`` (:mod:`stoker.cli_users`) and
``stoker lite`` call these.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from stoker.db import Executor
from stoker.db.store import dashboard as store
from stoker.engine.dashboard.core import ROLES, hash_secret
from stoker.errors import InvalidRequestError, NotFoundError

_hasher = PasswordHasher()
# A hash to verify against when the email is unknown, so that a wrong email takes as long
# as a wrong password and does not tell which emails exist.
_DUMMY_HASH = _hasher.hash("not a password of anyone")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
MIN_PASSWORD = 8
LINK_TTL_S = 3600.0


def normalize_email(email: str) -> str:
    """The stored form of an email; InvalidRequestError when it is not one."""
    email = email.strip().lower()
    if not _EMAIL.match(email) or len(email) > 320:
        raise InvalidRequestError(f"{email!r} is not an email address")
    return email


def check_role(role: str) -> str:
    if role not in ROLES:
        raise InvalidRequestError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def hash_password(password: str) -> str:
    """The argon2id hash of a password; InvalidRequestError when it is too short."""
    if len(password) < MIN_PASSWORD:
        raise InvalidRequestError(f"a password needs at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


async def create_user(
    db: Executor, tenant_id: int, email: str, role: str, password: str | None
) -> int:
    """Creates a user; InvalidRequestError when the email is taken or input is bad."""
    email = normalize_email(email)
    row = await store.dash_create_user(
        db,
        store.DashCreateUser(
            tenant_id, email, check_role(role), hash_password(password) if password else None
        ),
    )
    if row is None:
        raise InvalidRequestError(f"a user with email {email} exists already")
    return row["id"]


async def list_users(db: Executor, tenant_id: int | None) -> list[store.UserInfo]:
    return await store.dash_list_users(db, store.DashListUsers(tenant_id))


async def delete_user(db: Executor, email: str) -> None:
    """Deletes a user with their sessions; NotFoundError when there is none."""
    if await store.dash_delete_user(db, store.DashDeleteUser(normalize_email(email))) is None:
        raise NotFoundError(f"no user with email {email}")


async def set_password(db: Executor, email: str, password: str) -> None:
    row = await store.dash_set_password(
        db, store.DashSetPassword(normalize_email(email), hash_password(password))
    )
    if row is None:
        raise NotFoundError(f"no user with email {email}")


async def set_role(db: Executor, tenant_id: int, email: str, role: str) -> None:
    """Changes the role of one of the tenant's users (it applies from their next request);
    NotFoundError when the tenant has no such user."""
    email = normalize_email(email)
    row = await store.dash_set_role(db, store.DashSetRole(tenant_id, email, check_role(role)))
    if row is None:
        raise NotFoundError(f"no user {email!r} in this tenant")


async def change_own_password(
    db: Executor, user_id: int, email: str, current: str, new: str
) -> None:
    """Sets a signed-in user's password after checking their current one (a user who has
    none yet, signed in by link, sets a first one). InvalidRequestError when the current
    password is wrong or the new one too short."""
    row = await store.dash_user_password_hash(db, store.DashUserPasswordHash(user_id))
    stored = row["password_hash"] if row is not None else None
    if stored is not None:
        try:
            _hasher.verify(stored, current)
        except (VerificationError, InvalidHashError):
            raise InvalidRequestError("the current password is not right") from None
    await set_password(db, email, new)


async def verify_password(db: Executor, email: str, password: str) -> int | None:
    """The id of the user whose email and password these are, else None."""
    try:
        email = normalize_email(email)
    except InvalidRequestError:
        return None
    row = await store.dash_find_user(db, store.DashFindUser(email))
    stored = row["password_hash"] if row is not None else None
    try:
        _hasher.verify(stored or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    return row["id"] if row is not None and stored else None


@dataclass(frozen=True, slots=True)
class NewSession:
    """A session just opened: the cookie's value (never stored) and its lifetime."""

    cookie: str
    ttl_s: float


async def open_session(db: Executor, user_id: int, ttl_s: float) -> NewSession:
    cookie = secrets.token_urlsafe(32)
    await store.dash_create_session(
        db, store.DashCreateSession(hash_secret(cookie), user_id, secrets.token_urlsafe(24), ttl_s)
    )
    return NewSession(cookie, ttl_s)


async def close_session(db: Executor, cookie: str) -> None:
    await store.dash_delete_session(db, store.DashDeleteSession(hash_secret(cookie)))


async def create_login_link(db: Executor, user_id: int, ttl_s: float = LINK_TTL_S) -> str:
    """A one-time sign-in token for the user (the path is ``/ui/login/link?token=...``)."""
    token = secrets.token_urlsafe(32)
    await store.dash_create_login_link(
        db, store.DashCreateLoginLink(hash_secret(token), user_id, ttl_s)
    )
    return token


async def use_login_link(db: Executor, token: str) -> int | None:
    """The user of an unused, unexpired link token, spending it; else None."""
    if not token or len(token) > 200:
        return None
    row = await store.dash_use_login_link(db, store.DashUseLoginLink(hash_secret(token)))
    return row["user_id"] if row is not None else None


LOCAL_USER = "admin@localhost"
"""The user ``stoker lite`` signs in with its printed link."""


async def local_sign_in_token(db: Executor, tenant_id: int) -> str:
    """A one-time sign-in token for lite's local admin user (created when missing)."""
    row = await store.dash_ensure_user(db, store.DashEnsureUser(tenant_id, LOCAL_USER, "admin"))
    assert row is not None
    return await create_login_link(db, row["id"])
