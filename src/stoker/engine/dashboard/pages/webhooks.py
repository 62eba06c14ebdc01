"""``/ui/webhooks``: incoming webhooks (how each authenticates, the event key it makes)
and event filters (which task or workflow an event starts, under which CEL expression);
an operator creates a filter, or deletes one created at run time, and creates or edits a
webhook (``/ui/webhooks/{name}/edit``: its secret is never shown; leaving it empty keeps the
current authentication).

Read through the engine's :class:`~stoker.engine.webhooks.Webhooks` and
:class:`~stoker.engine.events.EventAdmin`; secrets are never shown.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi.responses import HTMLResponse, RedirectResponse, Response

from stoker.engine.dashboard.core import (
    OPERATOR,
    PREFIX,
    ActionDep,
    PageError,
    PageRouter,
    Ui,
    UiDep,
)
from stoker.engine.dashboard.pages_services import events, webhooks
from stoker.engine.dashboard.pages_tasks import definitions
from stoker.engine.webhooks import WebhookSpec
from stoker.engine.webhooks.verify import (
    ALGORITHMS,
    DEFAULT_TOLERANCE_S,
    ENCODINGS,
    KINDS,
    AuthSpec,
)
from stoker.errors import InvalidRequestError, NotFoundError, StokerError

router = PageRouter(nav="webhooks")


async def _page(
    ui: Ui,
    problem: str | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    hooks = await webhooks(ui).list(ui.user.tenant_id)
    filters = await events(ui).list_filters(ui.user.tenant_id, limit=1000)
    targets = [
        f"{d.kind}:{d.name}" for d in await definitions(ui.db, ui.user.tenant_id, datetime.now(UTC))
    ]
    return ui.render(
        "webhooks.html",
        active="webhooks",
        hooks=hooks,
        filters=filters,
        targets=targets,
        problem=problem,
        values=values or {},
        status_code=status_code,
    )


@router.get("/webhooks")
async def webhooks_page(ui: UiDep) -> HTMLResponse:
    """Webhooks and filters."""
    return await _page(ui)


@router.post("/filters")
async def create_filter(ui: ActionDep) -> Response:
    """Creates a filter: events start ``target`` (``task:NAME`` or ``workflow:NAME``) only
    when ``expression`` (CEL over ``input`` and ``additional_metadata``) holds."""
    form = {k: v[0] for k, v in (await ui.form()).items()}
    kind, _, name = form.get("target", "").partition(":")
    try:
        await events(ui).create_filter(
            ui.user.tenant_id,
            task_name=name if kind == "task" else "",
            workflow_name=name if kind == "workflow" else "",
            expression=form.get("expression", ""),
            scope=form.get("scope", "").strip(),
            payload=form.get("payload", "").strip().encode(),
        )
    except StokerError as exc:
        return await _page(ui, str(exc), form, 422)
    url = f"{PREFIX}/webhooks"
    if ui.request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


@router.post("/filters/{filter_id}/delete")
async def delete_filter(ui: ActionDep, filter_id: str) -> Response:
    """Deletes a filter created at run time (code filters go with the code)."""
    try:
        await events(ui).delete_filter(ui.user.tenant_id, filter_id)
    except NotFoundError:
        raise PageError(404, f"no filter {filter_id!r} in this tenant") from None
    except StokerError as exc:
        raise PageError(409, str(exc)) from None
    url = f"{PREFIX}/webhooks"
    if ui.request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


WEBHOOK_FIELDS = (
    "name", "auth_kind", "secret", "header", "algorithm", "encoding", "prefix", "username",
    "tolerance_s", "event_key_expression", "scope_expression", "dedup_expression",
)  # fmt: skip


def _hook_form(
    ui: Ui,
    *,
    editing: str | None,
    values: dict[str, str],
    problem: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return ui.render(
        "webhook_form.html",
        active="webhooks",
        editing=editing,
        values=values,
        kinds=KINDS,
        algorithms=sorted(ALGORITHMS),
        encodings=ENCODINGS,
        default_tolerance=DEFAULT_TOLERANCE_S,
        problem=problem,
        status_code=status_code,
    )


def _auth(form: dict[str, str]) -> AuthSpec:
    tolerance = form.get("tolerance_s", "").strip()
    try:
        tolerance_s = int(tolerance) if tolerance else 0
    except ValueError:
        raise InvalidRequestError(f"the tolerance {tolerance!r} is not a whole number") from None
    return AuthSpec(
        kind=form.get("auth_kind", ""),
        secret=form.get("secret", ""),
        header=form.get("header", "").strip(),
        algorithm=form.get("algorithm", "").strip(),
        encoding=form.get("encoding", "").strip(),
        prefix=form.get("prefix", ""),
        username=form.get("username", "").strip(),
        tolerance_s=tolerance_s,
    )


async def _fields(ui: Ui) -> dict[str, str]:
    form = await ui.form()
    return {k: form.get(k, [""])[0] for k in WEBHOOK_FIELDS}


def _to_list(ui: Ui) -> Response:
    url = f"{PREFIX}/webhooks"
    if ui.request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


@router.get("/webhooks/new")
async def new_webhook(ui: UiDep) -> HTMLResponse:
    """The form for a new webhook (operators)."""
    ui.require(OPERATOR)
    return _hook_form(ui, editing=None, values={"auth_kind": "HMAC", "header": "X-Signature"})


@router.post("/webhooks")
async def create_webhook(ui: ActionDep) -> Response:
    """Creates a webhook from the form; the form again with the problem when it is bad
    (nothing is stored then)."""
    form = await _fields(ui)
    shown = {k: v for k, v in form.items() if k != "secret"}
    try:
        await webhooks(ui).create(
            ui.user.tenant_id,
            form["name"].strip(),
            WebhookSpec(
                auth=_auth(form),
                event_key_expression=form["event_key_expression"],
                scope_expression=form["scope_expression"].strip() or None,
                dedup_expression=form["dedup_expression"].strip() or None,
            ),
        )
    except StokerError as exc:
        return _hook_form(ui, editing=None, values=shown, problem=str(exc), status_code=422)
    return _to_list(ui)


def _stored_values(row: Any) -> dict[str, str]:
    options = dict(row["auth_options"] or {})
    return {
        "name": row["name"],
        "auth_kind": row["auth_kind"],
        **{k: str(v) for k, v in options.items()},
        "event_key_expression": row["event_key_expression"],
        "scope_expression": row["scope_expression"] or "",
        "dedup_expression": row["dedup_expression"] or "",
    }


@router.get("/webhooks/{name}/edit")
async def edit_webhook_page(ui: UiDep, name: str) -> HTMLResponse:
    """The form to change a webhook, with what it has now (never its secret)."""
    ui.require(OPERATOR)
    try:
        row = await webhooks(ui).get(ui.user.tenant_id, name)
    except StokerError:
        raise PageError(404, f"no webhook named {name!r} in this tenant") from None
    return _hook_form(ui, editing=name, values=_stored_values(row))


@router.post("/webhooks/{name}/edit")
async def edit_webhook(ui: ActionDep, name: str) -> Response:
    """Changes a webhook: its expressions, and its authentication when a new secret is
    given (an empty secret keeps the current one, kind and options included)."""
    form = await _fields(ui)
    shown = {k: v for k, v in form.items() if k != "secret"}
    shown["name"] = name
    try:
        await webhooks(ui).update(
            ui.user.tenant_id,
            name,
            WebhookSpec(
                auth=_auth(form) if form["secret"] else None,
                event_key_expression=form["event_key_expression"],
                scope_expression=form["scope_expression"].strip(),
                dedup_expression=form["dedup_expression"].strip(),
            ),
        )
    except NotFoundError:
        raise PageError(404, f"no webhook named {name!r} in this tenant") from None
    except StokerError as exc:
        return _hook_form(ui, editing=name, values=shown, problem=str(exc), status_code=422)
    return RedirectResponse(f"{PREFIX}/webhooks#webhook-{quote(name, safe='')}", status_code=303)
