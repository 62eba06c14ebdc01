"""The engine's REST API: runs, workers, task definitions, workflow runs and tokens.

Every ``/api`` route needs ``authorization: Bearer <token>`` and sees only the token's
tenant. Runs and workers are named by their external UUIDs; the engine's bigint ids never
appear in a response or a cursor. Errors always have the shape of
:class:`~stoker.engine.api.models.ErrorBody`.

This module builds the app (:func:`create_app`); the routes are in
:mod:`stoker.engine.api.routes`, what they depend on in :mod:`~stoker.engine.api.deps`,
failures in :mod:`~stoker.engine.api.errors` and the request checks in
:mod:`~stoker.engine.api.middleware`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI

from stoker.db import Executor
from stoker.engine.api.deps import ApiState, storable_query
from stoker.engine.api.errors import add_error_handlers
from stoker.engine.api.metrics import router as metrics
from stoker.engine.api.middleware import CatchAll, GuardBodies, StorableBodies
from stoker.engine.api.routes import ROUTERS
from stoker.engine.auth import TokenAuth
from stoker.engine.crons import CronAdmin
from stoker.engine.definitions import Definitions
from stoker.engine.dispatcher.served import ServedTasks
from stoker.engine.observe import Observe
from stoker.engine.schedules import Schedules

if TYPE_CHECKING:
    from stoker.engine.events import EventAdmin
    from stoker.engine.ingest import Ingest
    from stoker.engine.ingest.workflows import WorkflowIngest
    from stoker.engine.runs.bulk import BulkOps
    from stoker.engine.runs.ops import RunOps
    from stoker.engine.signals import Signals
    from stoker.engine.webhooks import Webhooks
    from stoker.engine.workers import PauseTarget

DOCS_ASSETS = "/docs/assets"


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs`` from the assets installed with the engine, no CDN.

    Engines run on laptops without network and behind firewalls; a docs page that fetches
    its scripts from the internet is blank there. The ``swagger-ui-bundle-v2`` package
    ships Swagger UI's built files; they are served under ``/docs/assets``.
    """
    from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
    from fastapi.responses import HTMLResponse
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")
    redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="Stoker API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
            oauth2_redirect_url=redirect,
            # The default validator badge is an image from swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(redirect, include_in_schema=False)
    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


def create_app(
    db: Executor,
    auth: TokenAuth,
    *,
    version: str,
    served: ServedTasks | None = None,
    engine_id: str = "",
    max_body_bytes: int = 5 * 1024 * 1024,
    schedules: Schedules | None = None,
    ops: RunOps | None = None,
    crons: CronAdmin | None = None,
    events: EventAdmin | None = None,
    webhooks: Webhooks | None = None,
    bulk: BulkOps | None = None,
    dispatcher: PauseTarget | None = None,
    ingest: Ingest | None = None,
    workflow_ingest: WorkflowIngest | None = None,
    definitions: Definitions | None = None,
    signals: Signals | None = None,
    dashboard: bool = True,
    observe: Observe | None = None,
) -> FastAPI:
    """The REST API over ``db``, authenticating with ``auth``; request bodies are at most
    ``max_body_bytes``.

    ``served`` tells which tasks have live workers (the engine shares its own; by default
    one of the API's own, reading the ``worker`` table). ``schedules``: the engine's
    (whose creates wake its controller at once); by default one of the API's own, whose
    creates reach the leader through ``stoker_schedules``.
    one of the API's own, reading the ``worker`` table). ``ops``: the engine's run
    operations, for the routes that change runs (reset). ``webhooks``: the engine's incoming
    webhooks (without it, ``/webhooks/...`` answers 503). ``bulk``: the engine's bulk
    operations and ``dispatcher`` its worker streams (pauses apply there at once);
    ``ingest`` and ``workflow_ingest`` create the runs REST triggers ask for;
    ``definitions`` write rate limits (refreshing the engine's caches).

    OpenAPI is served at ``/openapi.json`` and interactive docs at ``/docs``. The web
    dashboard (``dashboard``) is served under ``/ui`` (:mod:`stoker.engine.dashboard`);
    ``signals``, the engine's run signals, make its pages live.
    """
    app = FastAPI(
        title="Stoker",
        version=version,
        # FastAPI's own pages load their scripts from a CDN; /docs is served below instead.
        docs_url=None,
        redoc_url=None,
        description="REST API of the Stoker engine: runs, workers and task definitions. "
        "Send `authorization: Bearer <token>` on every /api route.",
    )
    if schedules is None:
        schedules = Schedules(
            db,
            Definitions(db, on_limits_changed=lambda _tenant: None),
            engine_id=engine_id or "api",
            max_payload_bytes=max_body_bytes,
            on_changed=lambda: None,
        )
    if observe is None:
        # Without an engine: logs and run events read alike; a stream's subscribers are
        # woken by polling (no writer here to wake them).
        observe = Observe(db)
    app.state.stoker = ApiState(
        db,
        auth,
        served or ServedTasks(db),
        engine_id,
        schedules,
        ops,
        crons,
        events,
        webhooks,
        bulk,
        dispatcher,
        ingest,
        workflow_ingest,
        definitions,
        observe,
    )
    app.router.dependencies.append(Depends(storable_query))
    for router in ROUTERS:
        app.include_router(router)
    _serve_docs(app)
    app.include_router(metrics)
    if dashboard:
        from stoker.engine.dashboard import mount

        mount(app, db, served=app.state.stoker.served, signals=signals, ops=ops, bulk=bulk)
    add_error_handlers(app)
    app.add_middleware(StorableBodies)
    app.add_middleware(CatchAll)
    app.add_middleware(GuardBodies, auth=auth, limit=max_body_bytes)
    return app
