"""The engine services the dashboard's admin pages act through.

The dashboard is served by the same app as the REST API, so its pages reach the engine's
services (crons, schedules, events, webhooks, token auth) through the API's state
(:class:`~stoker.engine.api.deps.ApiState`) and change things exactly as the REST API and
the SDK do. An app served without an engine has no crons, events or webhooks service: the
pages that need one say so instead of failing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stoker.engine.api.deps import ApiState
from stoker.engine.dashboard.core import PageError, Ui

if TYPE_CHECKING:
    from stoker.engine.crons import CronAdmin
    from stoker.engine.events import EventAdmin
    from stoker.engine.webhooks import Webhooks


def api(ui: Ui) -> ApiState:
    """The REST API's state of the app serving the page."""
    state: ApiState = ui.request.app.state.stoker
    return state


def _missing(what: str) -> PageError:
    return PageError(503, f"{what} are managed by the engine, and this server runs without one")


def crons(ui: Ui) -> CronAdmin:
    """The engine's cron administration (503 without an engine)."""
    found = api(ui).crons
    if found is None:
        raise _missing("crons and pauses")
    return found


def events(ui: Ui) -> EventAdmin:
    """The engine's events and filters (503 without an engine)."""
    found = api(ui).events
    if found is None:
        raise _missing("events and filters")
    return found


def webhooks(ui: Ui) -> Webhooks:
    """The engine's incoming webhooks (503 without an engine)."""
    found = api(ui).webhooks
    if found is None:
        raise _missing("webhooks")
    return found
