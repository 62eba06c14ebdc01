"""The REST API's routes, one ``APIRouter`` per resource; :data:`ROUTERS` in the order the
app includes them (which is the order of the OpenAPI document).

A new route goes in the module of its resource, or a new module here listed in ROUTERS.
"""

from __future__ import annotations

from fastapi import APIRouter

from stoker.engine.api.routes import (
    actions,
    crons,
    durable,
    events,
    health,
    observe,
    pauses,
    rate_limits,
    runs,
    schedules,
    tasks,
    tokens,
    triggers,
    webhooks,
    workers,
    workflows,
)

ROUTERS: list[APIRouter] = [
    health.router,
    runs.router,
    actions.router,
    observe.router,
    durable.router,
    workers.router,
    tasks.router,
    triggers.router,
    rate_limits.router,
    crons.router,
    schedules.router,
    events.router,
    pauses.router,
    workflows.router,
    tokens.router,
    webhooks.router,
    webhooks.incoming,
]
