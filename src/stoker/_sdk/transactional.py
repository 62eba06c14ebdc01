"""Transactional enqueue: runs written through the application's own open transaction.

``task.run_no_wait(input, connection=conn)`` (and ``aio_run_no_wait``, ``run_many``, and
the same on workflows) does not call the engine. It validates the runs exactly as a normal
trigger does (input model, options, idempotency key, payload limit), gives each run its id
here, and runs one statement on ``conn``, inside whatever transaction ``conn`` has open::

    SELECT stoker.enqueue_runs($1)   -- $1: a JSON array of the runs

``enqueue_runs()`` (``db/schema.sql``) inserts the runs into the engine's inbox for the
tenant mapped to the connection's database role, and sends ``stoker_inbox``. If the
transaction rolls back (or a savepoint around the call does), the runs never existed; when
it commits, an engine replica hears the NOTIFY and writes the runs
(:mod:`stoker.engine.inbox`). The engine need not be up: the runs start when it is.

Supported connections, recognised by type without importing any of these libraries:

* psycopg 3: ``psycopg.Connection`` (sync), ``psycopg.AsyncConnection`` (async);
* asyncpg: ``asyncpg.Connection`` and pool connections (async);
* SQLAlchemy: ``Session``/``Connection`` (sync), ``AsyncSession``/``AsyncConnection``
  (async), on a PostgreSQL engine (psycopg, psycopg2 or asyncpg driver);
* Django: ``django.db.connection`` or ``connections[alias]`` (sync) on the PostgreSQL
  backend: the statement joins the current ``atomic()`` block.

A sync connection goes with ``run_no_wait``/``run_many``, an async one with
``aio_run_no_wait``/``aio_run_many``; anything else is a TypeError naming the kinds. A
database without the schema (or the function), or a role that may not call it, gives
:class:`~stoker.errors.TransactionalEnqueueError` (the transaction is then aborted, as
after any failed statement).
"""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from stoker.errors import TransactionalEnqueueError

SUPPORTED = (
    "psycopg.Connection, psycopg.AsyncConnection, asyncpg.Connection, SQLAlchemy "
    "Session/Connection/AsyncSession/AsyncConnection, or django.db.connection"
)

_STATEMENT = re.sub(
    r"^--.*\n",
    "",
    (resources.files("stoker") / "_sdk" / "enqueue.sql").read_text(encoding="utf-8"),
    flags=re.MULTILINE,
).strip()
_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True)
class InboxRun:
    """One run to enqueue, validated: its id, what it runs, and its encoded payloads."""

    run_id: str
    kind: str  # "task" or "workflow"
    name: str
    input: bytes
    additional_metadata: bytes
    priority: int
    desired_worker_id: str
    idempotency_key: str
    idempotency_ttl_ms: int
    definition: str = ""
    """A task's configuration (JSON): the engine registers the task from it if it does
    not know the task yet (the application may enqueue before any worker declared it)."""


def new_run_id() -> str:
    """The id a transactionally enqueued run gets (random: an id is not guessable)."""
    return str(uuid.uuid4())


def runs_json(runs: Sequence[InboxRun]) -> str:
    """The ``enqueue_runs()`` argument. Inputs and metadata are already JSON (validated by
    the task or workflow): they are spliced in as they are, not parsed again."""
    import json

    parts = []
    for r in runs:
        head = json.dumps(
            {
                "id": r.run_id,
                "kind": r.kind,
                "name": r.name,
                "priority": r.priority,
                "worker": r.desired_worker_id,
                "key": r.idempotency_key,
                "ttl_ms": r.idempotency_ttl_ms,
            }
        )
        parts.append(
            f'{head[:-1]}, "input": {r.input.decode() or "null"}, '
            f'"metadata": {r.additional_metadata.decode() or "{}"}, '
            f'"definition": {r.definition or "null"}}}'
        )
    return "[" + ", ".join(parts) + "]"


def statement(schema: str, param: str) -> str:
    """The statement for one driver's placeholder style."""
    if not _SCHEMA.match(schema):
        raise TransactionalEnqueueError(f"schema_name {schema!r} is not a plain identifier")
    return _STATEMENT.format(schema=f'"{schema}"', param=param)


# -- recognising connections ---------------------------------------------------------


def _is(obj: Any, module: str, *names: str) -> bool:
    """Whether ``obj`` is an instance of ``module.name`` (only if already imported)."""
    mod = sys.modules.get(module)
    if mod is None:
        return False
    return any(isinstance(obj, t) for n in names if isinstance(t := getattr(mod, n, None), type))


def kind_of(conn: Any) -> str | None:
    """``psycopg``, ``psycopg_async``, ``asyncpg``, ``sqlalchemy``, ``sqlalchemy_async``,
    ``django``, or None for anything else."""
    if _is(conn, "psycopg", "Connection"):
        return "psycopg"
    if _is(conn, "psycopg", "AsyncConnection"):
        return "psycopg_async"
    if _is(conn, "asyncpg", "Connection") or _is(conn, "asyncpg.pool", "PoolConnectionProxy"):
        return "asyncpg"
    if _is(conn, "sqlalchemy.orm", "Session") or _is(conn, "sqlalchemy.engine", "Connection"):
        return "sqlalchemy"
    if _is(conn, "sqlalchemy.ext.asyncio", "AsyncSession", "AsyncConnection"):
        return "sqlalchemy_async"
    if _is(conn, "django.utils.connection", "ConnectionProxy") or _is(
        conn, "django.db.backends.base.base", "BaseDatabaseWrapper"
    ):
        return "django"
    return None


_ASYNC = {"psycopg_async", "asyncpg", "sqlalchemy_async"}


def check_connection(conn: Any, *, aio: bool, what: str) -> str:
    """The connection's kind; TypeError for an unsupported one, or one of the wrong
    flavour for the method called."""
    kind = kind_of(conn)
    if kind is None:
        raise TypeError(
            f"{what}: connection= takes {SUPPORTED}; got {type(conn).__module__}."
            f"{type(conn).__qualname__}"
        )
    if aio and kind not in _ASYNC:
        raise TypeError(
            f"{what}: {type(conn).__qualname__} is a blocking connection; "
            "use run_no_wait/run_many with it, or pass an async connection"
        )
    if not aio and kind in _ASYNC:
        raise TypeError(
            f"{what}: {type(conn).__qualname__} is an async connection; "
            "use aio_run_no_wait/aio_run_many (awaited) with it"
        )
    if kind == "django" and getattr(conn, "vendor", "postgresql") != "postgresql":
        raise TypeError(
            f"{what}: the Django connection is to {conn.vendor}; transactional enqueue "
            "needs the PostgreSQL backend on the engine's database"
        )
    return kind


# -- writing ---------------------------------------------------------------------------


def enqueue(conn: Any, kind: str, runs: Sequence[InboxRun], schema: str) -> None:
    """Runs ``enqueue_runs()`` on a blocking connection, in its open transaction."""
    arg = runs_json(runs)
    try:
        if kind == "psycopg":
            conn.execute(statement(schema, "%s"), (arg,)).fetchone()
        elif kind == "sqlalchemy":
            from sqlalchemy import text

            conn.execute(text(statement(schema, "CAST(:runs AS text)")), {"runs": arg})
        else:  # django
            with conn.cursor() as cursor:
                cursor.execute(statement(schema, "%s"), [arg])
    except Exception as exc:
        explained = _explained(exc, schema)
        if explained is None:
            raise
        raise explained from exc


async def aio_enqueue(conn: Any, kind: str, runs: Sequence[InboxRun], schema: str) -> None:
    """Runs ``enqueue_runs()`` on an async connection, in its open transaction."""
    arg = runs_json(runs)
    try:
        if kind == "psycopg_async":
            await (await conn.execute(statement(schema, "%s"), (arg,))).fetchone()
        elif kind == "asyncpg":
            await conn.fetchval(statement(schema, "$1::text"), arg)
        else:  # sqlalchemy_async
            from sqlalchemy import text

            await conn.execute(text(statement(schema, "CAST(:runs AS text)")), {"runs": arg})
    except Exception as exc:
        explained = _explained(exc, schema)
        if explained is None:
            raise
        raise explained from exc


def _sqlstate(exc: BaseException) -> tuple[str, str]:
    """The SQLSTATE and server message of a driver error, through the wrappers of
    SQLAlchemy (``.orig``) and Django (``__cause__``)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        code = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(code, str) and code:
            diag = getattr(seen, "diag", None)
            message = getattr(diag, "message_primary", None) or str(seen)
            return code, str(message).strip()
        seen = getattr(seen, "orig", None) or seen.__cause__
    return "", ""


def _explained(exc: BaseException, schema: str) -> TransactionalEnqueueError | None:
    """A clear error for a connection to the wrong database or a role without access."""
    code, message = _sqlstate(exc)
    if code in ("3F000", "42883"):  # invalid_schema_name, undefined_function
        return TransactionalEnqueueError(
            f"the connection's database has no Stoker schema {schema!r} "
            f"({schema}.enqueue_runs() does not exist): transactional enqueue needs a "
            "connection to the engine's database, migrated by `stoker migrate` (or set "
            "STOKER_SCHEMA_NAME to the engine's schema); the transaction is aborted"
        )
    if code == "42501":  # insufficient_privilege
        return TransactionalEnqueueError(
            f"{message}; the role needs USAGE on schema {schema}, EXECUTE on "
            f"{schema}.enqueue_runs(text) and a tenant (`stoker enqueue-role grant ROLE "
            "--tenant NAME` does all three; docs/transactional.md); the transaction is aborted"
        )
    return None


__all__ = [
    "SUPPORTED",
    "InboxRun",
    "aio_enqueue",
    "check_connection",
    "enqueue",
    "kind_of",
    "new_run_id",
    "runs_json",
]
