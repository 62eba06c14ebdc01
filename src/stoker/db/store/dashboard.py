"""The dashboard's users, sessions and one-time sign-in links.

Statements of ``db/sql/dashboard.sql``; see :mod:`stoker.db.store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

from stoker.db.store import Exec, Many, One


class IdRow(TypedDict):
    id: int


@dataclass(frozen=True, slots=True)
class DashCreateUser:
    tenant_id: int
    email: str
    role: str
    password_hash: str | None


dash_create_user = One[DashCreateUser, IdRow]("dash_create_user")


@dataclass(frozen=True, slots=True)
class DashEnsureUser:
    tenant_id: int
    email: str
    role: str


dash_ensure_user = One[DashEnsureUser, IdRow]("dash_ensure_user")


@dataclass(frozen=True, slots=True)
class DashListUsers:
    tenant_id: int | None


class UserInfo(TypedDict):
    """A user as listed."""

    email: str
    role: str
    tenant_name: str
    created_at: datetime
    has_password: bool


dash_list_users = Many[DashListUsers, UserInfo]("dash_list_users")


@dataclass(frozen=True, slots=True)
class DashDeleteUser:
    email: str


dash_delete_user = One[DashDeleteUser, IdRow]("dash_delete_user")


@dataclass(frozen=True, slots=True)
class DashSetPassword:
    email: str
    password_hash: str


dash_set_password = One[DashSetPassword, IdRow]("dash_set_password")


@dataclass(frozen=True, slots=True)
class DashFindUser:
    email: str


class FoundUser(TypedDict):
    id: int
    password_hash: str | None


dash_find_user = One[DashFindUser, FoundUser]("dash_find_user")


@dataclass(frozen=True, slots=True)
class DashCreateSession:
    token_hash: bytes
    user_id: int
    csrf_token: str
    ttl_s: float


dash_create_session = One[DashCreateSession, IdRow]("dash_create_session")


@dataclass(frozen=True, slots=True)
class DashFindSession:
    token_hash: bytes


class SessionUser(TypedDict):
    """The user of a live session."""

    user_id: int
    email: str
    role: str
    tenant_id: int
    tenant_name: str
    csrf_token: str


dash_find_session = One[DashFindSession, SessionUser]("dash_find_session")


@dataclass(frozen=True, slots=True)
class DashDeleteSession:
    token_hash: bytes


dash_delete_session = Exec[DashDeleteSession]("dash_delete_session")


@dataclass(frozen=True, slots=True)
class DashCreateLoginLink:
    token_hash: bytes
    user_id: int
    ttl_s: float


dash_create_login_link = Exec[DashCreateLoginLink]("dash_create_login_link")


@dataclass(frozen=True, slots=True)
class DashUseLoginLink:
    token_hash: bytes


class LinkUser(TypedDict):
    user_id: int


dash_use_login_link = One[DashUseLoginLink, LinkUser]("dash_use_login_link")


@dataclass(frozen=True, slots=True)
class DashSetRole:
    tenant_id: int
    email: str
    role: str


dash_set_role = One[DashSetRole, IdRow]("dash_set_role")


@dataclass(frozen=True, slots=True)
class DashUserPasswordHash:
    user_id: int


class PasswordHash(TypedDict):
    password_hash: str | None


dash_user_password_hash = One[DashUserPasswordHash, PasswordHash]("dash_user_password_hash")


@dataclass(frozen=True, slots=True)
class DashTenantByName:
    name: str


dash_tenant_by_name = One[DashTenantByName, IdRow]("dash_tenant_by_name")
