"""The fleet as NATS sees it: every service instance answering a micro PING (admins only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from services.gateway.deps import LinkDep, require_admin
from services.gateway.errors import ADMIN_ONLY, ApiError, ErrorBody
from shared.errors import ErrorCode
from shared.micro import ping_all

router = APIRouter(tags=["services"], dependencies=[Depends(require_admin)], responses=ADMIN_ONLY)


class ServiceInstance(BaseModel):
    name: str = Field(description="Service name: gateway, scheduler, recorder, uploader, indexer")
    id: str = Field(description="Instance id given by nats.micro")
    version: str
    metadata: dict[str, str] = Field(default_factory=dict)


class ServiceList(BaseModel):
    items: list[ServiceInstance]


@router.get(
    "/services",
    summary="Service instances answering on NATS ($SRV.PING)",
    responses={503: {"model": ErrorBody, "description": "NATS is not connected"}},
)
async def list_services(link: LinkDep) -> ServiceList:
    if link.bus is None or not link.bus.nc.is_connected:
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "NATS not connected")
    replies = await ping_all(link.bus.nc)
    items = [
        ServiceInstance(
            name=str(r.get("name", "")),
            id=str(r.get("id", "")),
            version=str(r.get("version", "")),
            metadata={str(k): str(v) for k, v in (r.get("metadata") or {}).items()},
        )
        for r in replies
    ]
    items.sort(key=lambda s: (s.name, s.id))
    return ServiceList(items=items)
