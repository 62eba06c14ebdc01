"""The ``stoker`` command line: ``lite``, ``engine``, ``migrate``, ``token``,
``enqueue-role``, ``worker``, ``cron``, ``task`` and ``workflow`` (:mod:`stoker.cli_crons`),
``event`` (:mod:`stoker.cli_events`), ``webhook`` (:mod:`stoker.cli_webhooks`), ``runs``,
``workers`` and ``rate-limit`` (:mod:`stoker.cli_runs`), ``logs`` (:mod:`stoker.cli_logs`) and
``user`` (:mod:`stoker.cli_users`).

A user mistake (bad configuration, unknown app path, missing database) is printed as one
line in red with exit code 2, never as a traceback.
"""

from __future__ import annotations

import asyncio
import difflib
import importlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
import typer.core
from rich.console import Console
from rich.panel import Panel

from stoker._sdk.execution import check_executor
from stoker.cli_crons import cron_app, task_app, workflow_app
from stoker.cli_events import event_app
from stoker.cli_logs import logs as logs_command
from stoker.cli_runs import rate_limit_app, run_app, worker_app
from stoker.cli_users import user_app
from stoker.cli_webhooks import webhook_app
from stoker.config import (
    ClientSettings,
    EngineSettings,
    data_dir,
    lite_webhook_key,
    profile_path,
)
from stoker.errors import ConfigError, StokerError

if TYPE_CHECKING:
    from stoker.lite import LiteLock


def _hide_flag_types() -> None:
    """Keeps ``--help`` from printing ``<bool>`` after flags, which take no value.

    Typer's rich help shows every option's type, flags included; plain click help does not.
    """
    original = getattr(typer.core.TyperOption, "display_type_rich", None)
    if original is None:
        return

    def display_type_rich(self: typer.core.TyperOption, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        result: str | None = original(self, ctx)
        return result

    setattr(typer.core.TyperOption, "display_type_rich", display_type_rich)  # noqa: B010


_hide_flag_types()

app = typer.Typer(
    name="stoker",
    help="Stoker: a distributed task queue and durable workflow engine on PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    # A traceback's local variables would include database URLs and tokens.
    pretty_exceptions_show_locals=False,
)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")
schedule_app = typer.Typer(
    help="Scheduled runs of the tenant of STOKER_TOKEN (or `stoker lite`'s profile).",
    no_args_is_help=True,
)
app.add_typer(schedule_app, name="schedule")
enqueue_role_app = typer.Typer(
    help="Database roles that may enqueue runs in their own transactions.", no_args_is_help=True
)
app.add_typer(enqueue_role_app, name="enqueue-role")
app.add_typer(cron_app, name="cron")
app.add_typer(task_app, name="task")
app.add_typer(workflow_app, name="workflow")
app.add_typer(event_app, name="event")
app.add_typer(webhook_app, name="webhook")
app.add_typer(user_app, name="user")
app.command("logs")(logs_command)
app.add_typer(run_app, name="runs")
app.add_typer(worker_app, name="workers")
app.add_typer(rate_limit_app, name="rate-limit")
console = Console(stderr=True)

T = TypeVar("T")


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _run(fn: Callable[[], T]) -> T:
    """Runs a command body, turning Stoker errors into one red line and exit code 2."""
    try:
        return fn()
    except StokerError as exc:
        raise _fail(exc.message) from None


def _warn_unknown_env() -> None:
    """Names ``STOKER_*`` variables that no setting reads (a typo is otherwise silent)."""
    known = {
        f"STOKER_{name.upper()}"
        for model in (EngineSettings, ClientSettings)
        for name, field in model.model_fields.items()
        if field.validation_alias is None
    } | {"STOKER_HOME", "STOKER_PROFILE"}
    for var in sorted(v for v in os.environ if v.startswith("STOKER_") and v not in known):
        close = difflib.get_close_matches(var, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        console.print(
            f"[yellow]warning:[/] {var} is not a Stoker setting and is ignored{hint}",
            highlight=False,
            soft_wrap=True,
        )


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]


def _print_version(value: bool) -> None:
    if value:
        from stoker import __version__

        print(f"stoker {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Stoker: a distributed task queue and durable workflow engine on PostgreSQL."""


@app.command()
def lite(
    data: Annotated[
        Path | None, typer.Option("--data-dir", help="Where data and profile live.")
    ] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(
            help="gRPC port for workers and clients.",
            show_default="STOKER_GRPC_PORT, else 7077",
        ),
    ] = None,
    http_port: Annotated[
        int | None,
        typer.Option(help="HTTP port of the REST API.", show_default="STOKER_HTTP_PORT, else 7078"),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Runs the engine on an embedded Postgres (or DATABASE_URL), ready for local use."""
    from stoker import lite as lite_mode

    _logging(verbose)
    _warn_unknown_env()
    if data is not None:
        os.environ["STOKER_HOME"] = str(data)
    home = data_dir()
    # One lite per data directory: a second would share the embedded Postgres and rewrite
    # the profile. Held until this process ends.
    lock = lite_mode.LiteLock(home)
    _run(lock.acquire)
    server: Any = None
    url = os.environ.get("DATABASE_URL", "")
    # Until the engine takes signals over, SIGTERM exits through the `finally` below, so
    # the embedded server is stopped rather than left running without its owner.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        if not url:
            console.print(f"starting the embedded Postgres in {home / 'pg'} ...")
            server, url = _run(lambda: lite_mode.start_embedded_postgres(home))
        # Flags win; otherwise STOKER_GRPC_PORT / STOKER_HTTP_PORT, then the defaults.
        ports = {
            k: v for k, v in (("grpc_port", grpc_port), ("http_port", http_port)) if v is not None
        }
        _lite(url, ports, lock, embedded=server is not None)
    finally:
        # Stops the embedded server however the engine ended (it also stops at exit).
        if server is not None:
            server.cleanup()
        lock.release()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _lite(url: str, ports: dict[str, int], lock: LiteLock, embedded: bool) -> None:
    from stoker import lite as lite_mode

    # Lite is for this machine: plaintext on loopback, whatever STOKER_TLS_* say.
    plaintext = {"tls_cert_file": "", "tls_key_file": "", "tls_client_ca_file": ""}
    # Webhook secrets are encrypted with STOKER_WEBHOOK_SECRET_KEY, else with a key lite
    # keeps in its data directory.
    key = {} if os.environ.get("STOKER_WEBHOOK_SECRET_KEY") else {"webhook_secret_key": ""}
    if key:
        key["webhook_secret_key"] = _run(lite_webhook_key)
    settings = _run(lambda: EngineSettings.load(database_url=url, **ports, **plaintext, **key))
    _run(lambda: _check_ports(settings))

    hatchet = ""

    async def provision() -> lite_mode.Provisioned:
        nonlocal hatchet
        async with _database(settings) as conn:
            done = await lite_mode.provision(conn, settings.schema_name, lite_mode.previous_token())
            if settings.hatchet_enabled:
                from stoker.db import Executor
                from stoker.db.store import tenants as tenant_store

                row = await tenant_store.create_tenant(
                    Executor(conn), tenant_store.CreateTenant(lite_mode.LITE_TENANT)
                )
                assert row is not None
                hatchet = _hatchet_token(settings, str(row["external_id"]), done.token)
            return done

    done = _run(lambda: asyncio.run(provision()))
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    http = f"http://{settings.http_host}:{settings.http_port}"
    lock.record(address, http)
    where = lite_mode.remember(settings, done.token)
    database = f"embedded, in {data_dir() / 'pg'}" if embedded else "DATABASE_URL"
    console.print(
        Panel.fit(
            f"dashboard       {http}/ui/login/link?token={done.sign_in_token}\n"
            f"                (signs you in once; then {http}/ui/)\n"
            f"engine (gRPC)   {address}\n"
            f"REST API        {http}/api/v1\n"
            f"API docs        {http}/docs\n"
            f"API token       {done.token}{'  (new)' if done.created else ''}\n"
            f"profile         {where}\n"
            f"database        {database}\n\n"
            "Clients and workers on this machine find the engine through the profile.\n"
            "For curl and for other machines, run in your shell:",
            title="stoker lite",
        )
    )
    # Outside the panel, so the lines copy and paste cleanly.
    console.print(
        f"export STOKER_ADDRESS={address}\nexport STOKER_TOKEN={done.token}\n",
        highlight=False,
        soft_wrap=True,
    )
    if hatchet:
        # Hatchet's SDK, unchanged, through the Hatchet front door (docs/hatchet.md).
        console.print(
            f"export HATCHET_CLIENT_TOKEN={hatchet}\n"
            f"export HATCHET_CLIENT_HOST_PORT={settings.grpc_host}:{settings.hatchet_port}\n"
            "export HATCHET_CLIENT_TLS_STRATEGY=none\n",
            highlight=False,
            soft_wrap=True,
        )
    from stoker._core.loop import run as run_loop
    from stoker.engine import serve

    _run(lambda: run_loop(serve(settings), uvloop=settings.uvloop))


@app.command()
def engine(
    migrate: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Apply migrations first.")
    ] = True,
    verbose: Verbose = False,
) -> None:
    """Runs the engine against DATABASE_URL (the production form)."""
    _logging(verbose)
    _warn_unknown_env()
    settings = _run(EngineSettings.load)
    if migrate:
        _run(lambda: asyncio.run(_migrate(settings)))
    else:
        _run(lambda: asyncio.run(_check_migrated(settings)))
    _run(lambda: _check_ports(settings))
    from stoker._core.loop import run as run_loop
    from stoker.engine import serve

    _run(lambda: run_loop(serve(settings), uvloop=settings.uvloop))


def _check_ports(settings: EngineSettings) -> None:
    """Refuses ports another process listens on (gRPC would share them silently)."""
    wanted = [("gRPC", settings.grpc_host, settings.grpc_port)]
    if settings.http_enabled:
        wanted.append(("HTTP", settings.http_host, settings.http_port))
    for what, host, port in wanted:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # As servers do: a restart must not trip over the last run's TIME_WAIT sockets.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on {host}:{port} for {what} ({exc.strerror}): is another "
                    "engine or `stoker lite` running? Choose other ports with "
                    "--grpc-port/--http-port or STOKER_GRPC_PORT/STOKER_HTTP_PORT"
                ) from None


@asynccontextmanager
async def _database(settings: EngineSettings) -> AsyncIterator[Any]:
    """A connection to DATABASE_URL; an unreachable or unmigrated database is a ConfigError."""
    import psycopg

    from stoker.db import connect

    try:
        conn = await connect(settings.database_url, settings.schema_name)
    except psycopg.OperationalError as exc:
        raise ConfigError(f"cannot connect to Postgres: {_first_line(exc)}") from None
    try:
        yield conn
    except psycopg.errors.UndefinedTable as exc:
        raise ConfigError(
            f"schema {settings.schema_name!r} is not set up ({_first_line(exc)}): "
            "run `stoker migrate` first"
        ) from None
    except psycopg.Error as exc:
        raise ConfigError(f"Postgres refused: {_first_line(exc)}") from None
    finally:
        await conn.close()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


async def _migrate(settings: EngineSettings) -> list[str]:
    from stoker.db import apply_migrations

    async with _database(settings) as conn:
        applied = await apply_migrations(conn, settings.schema_name)
    return [f"{m.version:04d}_{m.name}" for m in applied]


async def _check_migrated(settings: EngineSettings) -> None:
    """Refuses to start an engine (--no-migrate) on a schema older than its code."""
    from stoker.db import pending_migrations

    async with _database(settings) as conn:
        pending = await pending_migrations(conn, settings.schema_name)
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        raise ConfigError(
            f"schema {settings.schema_name!r} lacks migrations {names}: run `stoker migrate`, "
            "or start the engine without --no-migrate"
        )


@app.command()
def migrate() -> None:
    """Applies pending migrations to DATABASE_URL."""
    settings = _run(EngineSettings.load)
    applied = _run(lambda: asyncio.run(_migrate(settings)))
    if applied:
        for name in applied:
            console.print(f"applied {name}")
    else:
        console.print("the schema is up to date")


def _hatchet_token(settings: EngineSettings, tenant_external_id: str, token: str) -> str:
    """A Hatchet-style token (HATCHET_CLIENT_TOKEN) carrying ``token``, for the Hatchet
    front door of an engine with ``settings`` (docs/hatchet.md)."""
    from stoker.engine.hatchet import tokens

    return tokens.encode(
        tokens.HatchetClaims(
            sub=tenant_external_id,
            server_url=f"http://{settings.http_host}:{settings.http_port}",
            grpc_broadcast_address=f"{settings.grpc_host}:{settings.hatchet_port}",
            stoker_token=token,
        )
    )


@token_app.command("create")
def token_create(
    tenant: Annotated[str, typer.Option(help="The tenant (created when missing).")],
    name: Annotated[str, typer.Option(help="A label for the token.")] = "default",
    admin: Annotated[
        bool, typer.Option("--admin", help="Admin role: may also manage the tenant's tokens.")
    ] = False,
    expires_in: Annotated[
        str | None,
        typer.Option(help="Lifetime, such as 30m, 12h or 90d (default: never expires)."),
    ] = None,
    hatchet: Annotated[
        bool,
        typer.Option(
            "--hatchet",
            help="Print a Hatchet-style token (HATCHET_CLIENT_TOKEN) for the Hatchet front "
            "door instead (docs/hatchet.md).",
        ),
    ] = False,
) -> None:
    """Creates an API token for a tenant and prints it (it is stored only as a hash)."""
    settings = _run(EngineSettings.load)
    from stoker.engine.api.routes.tokens import expiry

    expires_at = _run(lambda: expiry(expires_in))

    async def create() -> str:
        from stoker.db import Executor
        from stoker.db.store import tenants as tenant_store
        from stoker.engine.auth import ADMIN, MEMBER, create_token

        async with _database(settings) as conn:
            db = Executor(conn)
            row = await tenant_store.create_tenant(db, tenant_store.CreateTenant(tenant))
            assert row is not None
            token = await create_token(
                db,
                int(row["id"]),
                name=name,
                role=ADMIN if admin else MEMBER,
                expires_at=expires_at,
            )
        return _hatchet_token(settings, str(row["external_id"]), token) if hatchet else token

    print(_run(lambda: asyncio.run(create())))


@token_app.command("list")
def token_list(
    tenant: Annotated[
        str | None, typer.Option(help="Only this tenant's tokens (default: every tenant).")
    ] = None,
    include_revoked: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False,
) -> None:
    """Lists API tokens (never their secrets): id, tenant, name, role, expiry, last use."""
    settings = _run(EngineSettings.load)

    async def fetch() -> list[Any]:
        from stoker.db import Executor
        from stoker.engine.auth import list_tokens

        async with _database(settings) as conn:
            rows = await list_tokens(Executor(conn), None, include_revoked=include_revoked)
        return [r for r in rows if tenant is None or r["tenant_name"] == tenant]

    from rich.table import Table

    table = Table("id", "tenant", "name", "role", "created", "expires", "last used", "revoked")

    def when(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"

    for row in _run(lambda: asyncio.run(fetch())):
        table.add_row(
            str(row["external_id"]),
            row["tenant_name"],
            row["name"],
            row["role"],
            when(row["created_at"]),
            when(row["expires_at"]),
            when(row["last_used_at"]),
            when(row["revoked_at"]),
        )
    Console(width=200).print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id, as `stoker token list` shows.")],
) -> None:
    """Revokes an API token: every engine replica refuses it within a second."""
    import uuid

    settings = _run(EngineSettings.load)
    try:
        external_id = uuid.UUID(token_id)
    except ValueError:
        raise _fail(f"{token_id!r} is not a token id (see `stoker token list`)") from None

    async def revoke() -> int | None:
        from stoker.db import Executor
        from stoker.engine.auth import revoke_token

        async with _database(settings) as conn:
            return await revoke_token(Executor(conn), external_id, None, sender="cli")

    if _run(lambda: asyncio.run(revoke())) is None:
        raise _fail(f"no unrevoked token {token_id} (see `stoker token list --all`)")
    console.print(f"revoked {token_id}")


@enqueue_role_app.command("grant")
def enqueue_role_grant(
    role: Annotated[str, typer.Argument(help="The application's database role (must exist).")],
    tenant: Annotated[str, typer.Option(help="The tenant its runs belong to.")],
) -> None:
    """Lets a database role enqueue runs for a tenant inside its own transactions
    (run_no_wait(..., connection=conn)): maps it to the tenant and grants it USAGE on the
    schema and EXECUTE on enqueue_runs(text), nothing else."""
    settings = _run(EngineSettings.load)

    async def grant() -> int:
        from stoker.db import Executor
        from stoker.engine.inbox import roles

        async with _database(settings) as conn:
            return await roles.grant(Executor(conn), role, tenant)

    _run(lambda: asyncio.run(grant()))
    console.print(f"role {role} enqueues runs for tenant {tenant}")


@enqueue_role_app.command("revoke")
def enqueue_role_revoke(
    role: Annotated[str, typer.Argument(help="The database role.")],
) -> None:
    """Takes a role's permission to enqueue back (its tenant mapping and EXECUTE)."""
    settings = _run(EngineSettings.load)

    async def revoke() -> bool:
        from stoker.db import Executor
        from stoker.engine.inbox import roles

        async with _database(settings) as conn:
            return await roles.revoke(Executor(conn), role)

    if not _run(lambda: asyncio.run(revoke())):
        raise _fail(f"role {role} may not enqueue (see `stoker enqueue-role list`)")
    console.print(f"role {role} may no longer enqueue")


@enqueue_role_app.command("list")
def enqueue_role_list() -> None:
    """Lists the roles that may enqueue, and their tenants."""
    settings = _run(EngineSettings.load)

    async def fetch() -> list[Any]:
        from stoker.db import Executor
        from stoker.engine.inbox import roles

        async with _database(settings) as conn:
            return list(await roles.list_roles(Executor(conn)))

    from rich.table import Table

    table = Table("role", "tenant", "granted")
    for row in _run(lambda: asyncio.run(fetch())):
        table.add_row(
            row["role_name"], row["tenant_name"], row["created_at"].strftime("%Y-%m-%d %H:%M:%S")
        )
    Console(width=200).print(table)


def _when(value: str, what: str) -> Any:
    """An ISO 8601 time (UTC when it has no zone), or a delay from now such as ``10m``."""
    from datetime import UTC, datetime

    from stoker.config import parse_duration

    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        try:
            delta = parse_duration(value, what)
        except StokerError:
            raise _fail(
                f"{what}: {value!r} is neither an ISO 8601 time nor a delay such as '10m'"
            ) from None
        assert delta is not None
        return datetime.now(UTC) + delta
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@schedule_app.command("list")
def schedule_list(
    task: Annotated[
        list[str] | None, typer.Option(help="Task or workflow name (repeatable).")
    ] = None,
    status: Annotated[
        list[str] | None, typer.Option(help="SCHEDULED, FIRED or FAILED (repeatable).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
) -> None:
    """Lists scheduled runs by due time: id, what, when, status, run."""
    from rich.table import Table

    from stoker import Stoker

    client = Stoker()
    try:
        rows = _run(lambda: client.schedules.list(task=task, status=status, limit=limit))
    finally:
        client.close()
    table = Table("id", "task / workflow", "at (UTC)", "status", "run", "error")
    for r in rows:
        table.add_row(
            r.id,
            r.task_name or r.workflow_name or "",
            r.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            r.status,
            r.run_id or "-",
            r.error or "",
        )
    Console(width=200).print(table)


@schedule_app.command("move")
def schedule_move(
    schedule_id: Annotated[str, typer.Argument(help="The scheduled run's id.")],
    at: Annotated[str, typer.Argument(help="ISO 8601 time (UTC if no zone), or a delay: 10m")],
    strict: Annotated[bool, typer.Option(help="Refuse a time in the past.")] = False,
) -> None:
    """Reschedules a run that has not fired yet."""
    from stoker import Stoker

    when = _when(at, "at")
    client = Stoker()
    try:
        moved = _run(lambda: client.schedules.update(schedule_id, at=when, strict=strict))
    finally:
        client.close()
    console.print(f"{moved.id} now fires at {moved.at.isoformat()}")


@schedule_app.command("delete")
def schedule_delete(
    schedule_ids: Annotated[list[str] | None, typer.Argument(help="Scheduled run ids.")] = None,
    task: Annotated[
        list[str] | None, typer.Option(help="Task or workflow name (repeatable).")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Due at or after (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Due before (ISO 8601).")] = None,
) -> None:
    """Deletes runs not fired yet: these ids, or every one matching the filter."""
    from stoker import Stoker

    if not schedule_ids and not (task or since or until):
        raise _fail("give scheduled run ids, or a filter (--task, --since, --until)")
    client = Stoker()
    try:
        deleted = _run(
            lambda: client.schedules.bulk_delete(
                schedule_ids,
                task=task,
                since=_when(since, "--since") if since else None,
                until=_when(until, "--until") if until else None,
            )
        )
    finally:
        client.close()
    console.print(f"deleted {len(deleted)} scheduled run(s)")
    for sid in deleted:
        print(sid)


def load_app(target: str) -> Any:
    """The ``Stoker`` app at ``module:attribute``; ConfigError saying what is wrong."""
    from stoker import Stoker

    found = load_attribute(target)
    if not isinstance(found, Stoker):
        raise ConfigError(f"{target} is a {type(found).__name__}, not a stoker.Stoker app")
    return found


def load_attribute(target: str) -> Any:
    """The object at ``module:attribute`` (the module imported from the current folder
    first); ConfigError saying what is wrong."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"expected MODULE:ATTRIBUTE (like hello:app), got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from None
    found = getattr(module, attr, None)
    if found is None:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r}")
    return found


def _labels(values: list[str]) -> dict[str, str | int]:
    labels: dict[str, str | int] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--label takes KEY=VALUE, got {item!r}")
        labels[key] = int(value) if value.lstrip("-").isdigit() else value
    return labels


@app.command()
def worker(
    target: Annotated[str, typer.Argument(help="The app, as MODULE:ATTRIBUTE (e.g. hello:app).")],
    name: Annotated[
        str | None, typer.Option(help="The worker's name (default: host name and pid).")
    ] = None,
    slots: Annotated[int, typer.Option(help="Task slots.")] = 100,
    durable_slots: Annotated[int, typer.Option(help="Slots for durable tasks.")] = 0,
    label: Annotated[
        list[str] | None, typer.Option(help="A worker label KEY=VALUE (repeatable).")
    ] = None,
    grace: Annotated[
        float,
        typer.Option(help="Seconds running tasks get to finish on stop before being handed back."),
    ] = 30.0,
    log_max_lines: Annotated[
        int | None,
        typer.Option(help="Log lines one attempt keeps, then a marker line (default 1000)."),
    ] = None,
    log_max_bytes: Annotated[
        int | None, typer.Option(help="Log bytes one attempt keeps (default 1 MiB).")
    ] = None,
    log_line_max_bytes: Annotated[
        int | None,
        typer.Option(help="Bytes one log line keeps, then it is truncated (default 16 KiB)."),
    ] = None,
    health_port: Annotated[
        int | None,
        typer.Option(help="Serve /healthz, /readyz and /metrics (the worker's own) on this port."),
    ] = None,
    health_host: Annotated[
        str, typer.Option(help="The address the health endpoint listens on.")
    ] = "0.0.0.0",
    max_loop_block: Annotated[
        float,
        typer.Option(help="Seconds the event loop may be blocked before /healthz says 503."),
    ] = 5.0,
    executor: Annotated[
        str | None,
        typer.Option(
            help="Where sync tasks without an executor of their own run: 'thread' or "
            "'process' (default: the worker's shared thread pool)."
        ),
    ] = None,
    lifespan: Annotated[
        str | None,
        typer.Option(
            help="The worker's lifespan, as MODULE:ATTRIBUTE (an @asynccontextmanager "
            "function; what it yields is ctx.lifespan)."
        ),
    ] = None,
    reload: Annotated[
        bool,
        typer.Option(
            "--reload",
            help="For development: run the worker in a child process and restart it when "
            "a .py file under the current folder changes.",
        ),
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Runs a worker for every task of an app until SIGINT/SIGTERM (twice: stop now)."""
    if reload:
        args = [a for a in sys.argv[1:] if a != "--reload"]
        raise typer.Exit(reload_worker([sys.executable, "-m", "stoker", *args], Path.cwd()))
    _logging(verbose)
    _warn_unknown_env()
    stoker_app = _run(lambda: load_app(target))
    labels = _run(lambda: _labels(label or []))
    runner = _run(
        lambda: stoker_app.worker(
            name,
            slots=slots,
            durable_slots=durable_slots,
            labels=labels,
            grace=grace,
            log_max_lines=log_max_lines,
            log_max_bytes=log_max_bytes,
            log_line_max_bytes=log_line_max_bytes,
            health_port=health_port,
            health_host=health_host,
            max_loop_block_s=max_loop_block,
            executor=check_executor(executor, "stoker worker --executor"),
            lifespan=load_attribute(lifespan) if lifespan else None,
        )
    )
    _run(runner.start)


RELOAD_POLL_S = 0.5
"""How often ``stoker worker --reload`` looks at the files' modification times."""
_SKIPPED_DIRS = {"__pycache__", "node_modules", "venv", "site-packages"}


def _sources(root: Path) -> dict[str, float]:
    """The .py files under ``root`` (hidden and environment folders left out) and their
    modification times."""
    found: dict[str, float] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIPPED_DIRS]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                try:
                    found[path] = os.stat(path).st_mtime
                except OSError:
                    pass
    return found


def reload_worker(argv: list[str], root: Path) -> int:
    """Runs ``argv`` (a worker) and restarts it whenever a source under ``root`` changes:
    the running worker gets SIGTERM and drains as usual. SIGINT/SIGTERM here stop the
    worker and return its exit code."""
    import subprocess
    import time

    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    seen = _sources(root)
    while True:
        child = subprocess.Popen(argv)
        while True:
            time.sleep(RELOAD_POLL_S)
            if stopping:
                return child.wait()
            now = _sources(root)
            if now != seen:
                changed = sorted(p for p in now.keys() | seen.keys() if now.get(p) != seen.get(p))
                seen = now
                console.print(
                    f"[yellow]{os.path.relpath(changed[0], root)} changed; restarting the "
                    "worker[/]",
                    highlight=False,
                )
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
                    child.wait()
                break


@app.command("run")
def run_task(
    task: Annotated[str, typer.Argument(help="The task's name, as registered by its workers.")],
    input: Annotated[
        str, typer.Option("--input", "-i", help="The run's input as JSON (default: {}).")
    ] = "{}",
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Print the run id and return at once.")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds to wait for the result (default: no limit).")
    ] = None,
    metadata: Annotated[
        str | None, typer.Option(help="Additional metadata as a JSON object.")
    ] = None,
) -> None:
    """Runs a task by name and prints its output as JSON (exit 1 if the run failed)."""
    from stoker import Stoker, TaskRunError

    value = _run(lambda: _json_option(input, "--input"))
    extra = _run(lambda: _json_option(metadata, "--metadata")) if metadata else None
    if extra is not None and not isinstance(extra, dict):
        raise _fail("--metadata takes a JSON object")
    client = Stoker()
    try:
        options: dict[str, Any] = {"additional_metadata": extra} if extra else {}
        ref = _run(lambda: client.run_no_wait(task, value, **options))
        if no_wait:
            typer.echo(ref.run_id)
            return
        try:
            output = ref.result(timeout=timeout)
        except TaskRunError as exc:
            console.print(
                f"[red]run {exc.run_id} {exc.status.lower()}:[/] {exc.error_type}: "
                f"{exc.error_message}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None
        except TimeoutError:
            raise _fail(f"run {ref.run_id} did not finish within {timeout:g}s") from None
        except StokerError as exc:
            raise _fail(exc.message) from None
        typer.echo(json.dumps(output))
    finally:
        client.close()


def _json_option(text: str | None, option: str) -> Any:
    try:
        return json.loads(text or "null")
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{option} is not valid JSON: {exc}") from None


@app.command()
def profile() -> None:
    """Prints where the SDK looks for the lite profile."""
    console.print(str(profile_path()))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
