"""``GET /metrics``: the engine's Prometheus metrics, in the text exposition format.

Unauthenticated, like most scrape targets: it carries counters only, never a tenant's data.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Every metric registered in this engine process."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
