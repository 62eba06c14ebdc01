"""``stoker webhook ...``: incoming webhooks of the tenant — create, list, get, update,
delete — through the SDK's ``app.webhooks``, as a client of the engine (``STOKER_ADDRESS``
and ``STOKER_TOKEN``, or the lite profile). A mistake is one red line and exit code 2.

The secret is taken from ``--secret`` or, better kept out of the shell's history, from
the ``WEBHOOK_SECRET`` environment variable. It is never printed.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stoker.cli_crons import _client, _fail, _run, out

if TYPE_CHECKING:
    from stoker import Webhook, WebhookAuth

webhook_app = typer.Typer(
    help="Incoming webhooks: create, list, get, update, delete.", no_args_is_help=True
)

AUTH_KINDS = ("hmac", "stripe", "github", "slack", "basic", "api-key")

Auth = Annotated[str | None, typer.Option("--auth", help=f"One of {', '.join(AUTH_KINDS)}.")]
Secret = Annotated[
    str | None,
    typer.Option(
        envvar="WEBHOOK_SECRET",
        help="HMAC/Stripe/GitHub/Slack secret, Basic password or API key ($WEBHOOK_SECRET).",
        show_envvar=False,
    ),
]
Header = Annotated[str | None, typer.Option(help="hmac, api-key: the header to read.")]
Algorithm = Annotated[str, typer.Option(help="hmac: sha1, sha256 or sha512.")]
Encoding = Annotated[str, typer.Option(help="hmac: hex or base64.")]
Prefix = Annotated[str, typer.Option(help="hmac: text before the signature (sha256=).")]
User = Annotated[str | None, typer.Option(help="basic: the user name.")]
Tolerance = Annotated[float, typer.Option(help="stripe, slack: replay tolerance in seconds.")]
Scope = Annotated[
    str | None, typer.Option("--scope", help="CEL: the event's scope ('' removes it on update).")
]
Dedup = Annotated[
    str | None,
    typer.Option(
        "--dedup",
        help="CEL naming a request's delivery: a repeated delivery makes no new event "
        "(default for stripe: the event id, github: X-GitHub-Delivery; '' for none).",
    ),
]


def _auth(
    kind: str,
    secret: str | None,
    header: str | None,
    algorithm: str,
    encoding: str,
    prefix: str,
    user: str | None,
    tolerance: float,
) -> WebhookAuth:
    from stoker import HMAC, ApiKey, Basic, GitHubSignature, SlackSignature, StripeSignature

    if not secret:
        raise _fail("give the secret with --secret or the WEBHOOK_SECRET environment variable")
    kind = kind.lower()
    if kind == "hmac":
        return HMAC(secret, header or "X-Signature", algorithm, encoding, prefix)
    if kind == "stripe":
        return StripeSignature(secret, tolerance)
    if kind == "github":
        return GitHubSignature(secret)
    if kind == "slack":
        return SlackSignature(secret, tolerance)
    if kind == "basic":
        if not user:
            raise _fail("--auth basic needs --user")
        return Basic(user, secret)
    if kind == "api-key":
        if not header:
            raise _fail("--auth api-key needs --header")
        return ApiKey(header, secret)
    raise _fail(f"unknown --auth {kind!r}: use one of {', '.join(AUTH_KINDS)}")


def _show(w: Webhook) -> dict[str, Any]:
    return {
        "id": w.id,
        "name": w.name,
        "path": w.path,
        "auth": {"kind": w.auth_kind, **w.auth_options},
        "event_key_expression": w.event_key_expression,
        "scope_expression": w.scope_expression,
        "dedup_expression": w.dedup_expression,
        "created_at": w.created_at.isoformat(),
        "updated_at": w.updated_at.isoformat(),
    }


def _print(w: Webhook) -> None:
    print(json.dumps(_show(w), indent=2))


@webhook_app.command("create")
def webhook_create(
    name: Annotated[str, typer.Argument(help="The webhook's name (part of its URL).")],
    event_key: Annotated[
        str, typer.Option("--event-key", help="CEL over input (the body) and headers.")
    ],
    auth: Auth = None,
    secret: Secret = None,
    header: Header = None,
    algorithm: Algorithm = "sha256",
    encoding: Encoding = "hex",
    prefix: Prefix = "",
    user: User = None,
    tolerance: Tolerance = 300,
    scope: Scope = None,
    dedup: Dedup = None,
) -> None:
    """Creates a webhook and prints it, with the path it receives POSTs on."""
    if auth is None:
        raise _fail(f"give --auth (one of {', '.join(AUTH_KINDS)})")
    spec = _auth(auth, secret, header, algorithm, encoding, prefix, user, tolerance)
    extra: dict[str, Any] = {} if dedup is None else {"dedup_expression": dedup or None}
    _print(
        _run(
            lambda: _client().webhooks.create(
                name, auth=spec, event_key_expression=event_key, scope_expression=scope, **extra
            )
        )
    )


@webhook_app.command("list")
def webhook_list() -> None:
    """The tenant's webhooks: name, auth, event key expression, path."""
    from rich.table import Table

    table = Table("name", "auth", "event key", "scope", "path")
    for w in _run(lambda: _client().webhooks.list()):
        table.add_row(
            w.name, w.auth_kind, w.event_key_expression, w.scope_expression or "-", w.path
        )
    out.print(table)


@webhook_app.command("get")
def webhook_get(name: Annotated[str, typer.Argument(help="The webhook's name.")]) -> None:
    """One webhook as JSON (never its secret)."""
    _print(_run(lambda: _client().webhooks.get(name)))


@webhook_app.command("update")
def webhook_update(
    name: Annotated[str, typer.Argument(help="The webhook's name.")],
    event_key: Annotated[str | None, typer.Option("--event-key", help="A new event key.")] = None,
    auth: Auth = None,
    secret: Secret = None,
    header: Header = None,
    algorithm: Algorithm = "sha256",
    encoding: Encoding = "hex",
    prefix: Prefix = "",
    user: User = None,
    tolerance: Tolerance = 300,
    scope: Scope = None,
    dedup: Dedup = None,
) -> None:
    """Changes a webhook: a new auth (--auth with its secret: a rotation), expressions."""
    changes: dict[str, Any] = {}
    if auth is not None:
        changes["auth"] = _auth(auth, secret, header, algorithm, encoding, prefix, user, tolerance)
    if event_key is not None:
        changes["event_key_expression"] = event_key
    if scope is not None:
        changes["scope_expression"] = scope or None
    if dedup is not None:
        changes["dedup_expression"] = dedup or None
    if not changes:
        raise _fail("nothing to change: give --auth, --event-key, --scope or --dedup")
    _print(_run(lambda: _client().webhooks.update(name, **changes)))


@webhook_app.command("delete")
def webhook_delete(name: Annotated[str, typer.Argument(help="The webhook's name.")]) -> None:
    """Deletes a webhook; its URL answers 404 from then on."""
    _run(lambda: _client().webhooks.delete(name))
    print(f"deleted webhook {name}")
