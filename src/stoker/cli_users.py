"""``stoker user create|list|delete|set-password``: the people who sign in to the
dashboard (:mod:`stoker.engine.dashboard.users`), written straight to ``DATABASE_URL``
like ``stoker token``. A mistake (bad email or role, a taken email, a short password) is
one red line and exit code 2.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

user_app = typer.Typer(
    help="Dashboard users: create, list, delete, set-password.", no_args_is_help=True
)

Role = Annotated[
    str, typer.Option(help="admin (also manages users), operator (acts on runs) or viewer.")
]
PasswordStdin = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from standard input."),
]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


def _with_db(work: Any) -> Any:
    """Runs ``await work(db)`` on a connection to DATABASE_URL."""
    from stoker.cli import _database, _run
    from stoker.config import EngineSettings
    from stoker.db import Executor

    settings = _run(EngineSettings.load)

    async def go() -> Any:
        async with _database(settings) as conn:
            return await work(Executor(conn))

    return _run(lambda: asyncio.run(go()))


@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Argument(help="The user's email; they sign in with it.")],
    role: Role = "viewer",
    tenant: Annotated[str, typer.Option(help="The user's tenant (created when missing).")] = (
        "default"
    ),
    password_stdin: PasswordStdin = False,
) -> None:
    """Creates a dashboard user with a password (argon2-hashed)."""
    from stoker.cli import _run
    from stoker.engine.auth import create_tenant
    from stoker.engine.dashboard.users import check_role, hash_password, normalize_email

    # Bad input fails before a password is asked for.
    _run(lambda: (normalize_email(email), check_role(role)))
    password = _password(password_stdin)
    _run(lambda: hash_password(password))

    async def create(db: Any) -> None:
        from stoker.engine.dashboard.users import create_user

        await create_user(db, await create_tenant(db, tenant), email, role, password)

    _with_db(create)
    Console().print(f"created {normalize_email(email)} ({role}) in tenant {tenant}")


@user_app.command("list")
def user_list(
    tenant: Annotated[
        str | None, typer.Option(help="Only this tenant's users (default: every tenant).")
    ] = None,
) -> None:
    """Lists dashboard users."""

    async def rows(db: Any) -> list[Any]:
        from stoker.engine.auth import create_tenant
        from stoker.engine.dashboard.users import list_users

        tenant_id = await create_tenant(db, tenant) if tenant else None
        return await list_users(db, tenant_id)

    table = Table("email", "role", "tenant", "password", "created")
    for u in _with_db(rows):
        table.add_row(
            u["email"],
            u["role"],
            u["tenant_name"],
            "set" if u["has_password"] else "none (link only)",
            u["created_at"].isoformat(timespec="seconds"),
        )
    Console(width=200).print(table)


@user_app.command("delete")
def user_delete(email: Annotated[str, typer.Argument(help="The user's email.")]) -> None:
    """Deletes a dashboard user and signs out their sessions."""

    async def delete(db: Any) -> None:
        from stoker.engine.dashboard.users import delete_user

        await delete_user(db, email)

    _with_db(delete)
    Console().print(f"deleted {email}")


@user_app.command("set-password")
def user_set_password(
    email: Annotated[str, typer.Argument(help="The user's email.")],
    password_stdin: PasswordStdin = False,
) -> None:
    """Sets a dashboard user's password."""
    password = _password(password_stdin)

    async def change(db: Any) -> None:
        from stoker.engine.dashboard.users import set_password

        await set_password(db, email, password)

    _with_db(change)
    Console().print(f"password of {email} set")
