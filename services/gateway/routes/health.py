"""Liveness, readiness and Prometheus metrics: open to all, no API key."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel

from services.gateway.deps import LinkDep
from services.gateway.errors import ApiError, ErrorBody
from shared.errors import ErrorCode
from shared.metrics import render_latest

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    summary="Readiness: NATS connected and every stream and bucket usable",
    responses={503: {"model": ErrorBody, "description": "NATS or JetStream not usable"}},
)
async def ready(link: LinkDep) -> Health:
    if not await link.ready():
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "NATS or JetStream not usable")
    return Health(status="ready")


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    body, content_type = render_latest()
    return Response(body, media_type=content_type)
