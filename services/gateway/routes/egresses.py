"""The egress pool (admins only): add or replace an egress, list them with their health,
remove one. The scheduler owns the pool; changes are JetStream commands it applies moments
later (``egress.added``, ``egress.removed``), reads ask it over NATS request/reply.

A proxy is checked (where it points: ALLOW_PRIVATE_PROXIES) and sealed before it leaves the
gateway, as a watcher's is; no answer ever shows it, only the egress's name and health.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.gateway import micro_client
from services.gateway.deps import CorrelationDep, LinkDep, SecretsDep, SettingsDep, require_admin
from services.gateway.errors import (
    ADMIN_ONLY,
    JSON_BODY_RESPONSES,
    SCHEDULER_UNAVAILABLE,
    ApiError,
    documented,
)
from services.gateway.schemas import Ok
from services.gateway.validators import ProxyUrl, check_proxy_destination
from shared.egresses import NAME_PATTERN, EgressStatus, check_name
from shared.errors import ErrorCode
from shared.events import EgressAdded, EgressRemoved

router = APIRouter(tags=["egresses"], dependencies=[Depends(require_admin)], responses=ADMIN_ONLY)

EgressName = Annotated[
    str,
    Field(min_length=1, max_length=40, examples=["eu-1"]),
    AfterValidator(check_name),
]
NOT_FOUND = documented(404, "No such egress")


class EgressCreate(BaseModel):
    """Body of POST /egresses: an egress of the pool, direct or through a proxy."""

    model_config = ConfigDict(extra="forbid")

    name: EgressName = Field(description=f"Its label in metrics and answers ({NAME_PATTERN})")
    proxy: ProxyUrl | None = Field(
        None,
        description="Proxy URL (sealed, never shown again); null: a direct egress. Not on a "
        "private address unless the deployment allows it (ALLOW_PRIVATE_PROXIES)",
    )
    requests_per_min: float | None = Field(
        None, gt=0, le=100_000, description="Its budget; null: TIKTOK_REQUESTS_PER_MIN"
    )


class EgressAccepted(BaseModel):
    name: str
    kind: Literal["direct", "proxy"]
    status: Literal["PENDING"] = "PENDING"


class EgressOut(BaseModel):
    """One egress: what it is (never its URL), its health and its load."""

    name: str
    kind: Literal["direct", "proxy"]
    source: Literal["file", "api"] = Field(description="EGRESS_FILE or POST /egresses")
    requests_per_min: float = Field(description="Its budget")
    state: Literal["healthy", "blocked", "down", "probing"]
    reason: str | None = Field(None, description="Why blocked or down: an error code")
    since: datetime | None = None
    backoff_s: float = Field(description="Until its next probe, while blocked or down")
    assigned_watchers: int
    need_per_min: float = Field(description="Requests a minute its watchers cost")
    requests: int
    waf_answers: int = Field(description="WAF pages and empty bodies")
    challenge_solves: int
    errors: int

    @classmethod
    def of(cls, s: EgressStatus) -> EgressOut:
        return cls(
            name=s.name,
            kind=s.kind,
            source=s.source,
            requests_per_min=s.requests_per_min,
            state=s.state,
            reason=s.reason,
            since=s.since,
            backoff_s=s.backoff_s,
            assigned_watchers=s.assigned_watchers,
            need_per_min=s.need_per_min,
            requests=s.requests,
            waf_answers=s.waf_answers,
            challenge_solves=s.challenge_solves,
            errors=s.errors,
        )


class EgressListOut(BaseModel):
    items: list[EgressOut]
    healthy_capacity_per_min: float = Field(description="The budgets of the healthy egresses")
    need_per_min: float = Field(description="What the pool's watchers cost")


@router.post(
    "/egresses",
    status_code=202,
    summary="Add an egress to the pool, or replace the one of that name (admins)",
    responses={**JSON_BODY_RESPONSES, **SCHEDULER_UNAVAILABLE},
)
async def add_egress(
    body: EgressCreate,
    link: LinkDep,
    box: SecretsDep,
    settings: SettingsDep,
    correlation_id: CorrelationDep,
) -> EgressAccepted:
    """Watchers without a proxy of their own are spread over the pool's healthy egresses."""
    proxy = body.proxy
    if proxy is not None:
        if box is None:
            why = "proxy: this deployment has no SECRET_KEY to protect proxy credentials"
            raise ApiError(422, ErrorCode.VALIDATION_ERROR, why)
        try:
            await check_proxy_destination(proxy, allow_private=settings.allow_private_proxies)
        except ValueError as exc:  # a fixed phrase: it never quotes the proxy
            raise ApiError(422, ErrorCode.VALIDATION_ERROR, f"proxy: {exc}") from None
        proxy = box.seal(proxy)
    await link.require_bus().publish(
        EgressAdded(
            correlation_id=correlation_id,
            name=body.name,
            proxy=proxy,
            requests_per_min=body.requests_per_min,
        )
    )
    return EgressAccepted(name=body.name, kind="direct" if proxy is None else "proxy")


@router.get(
    "/egresses",
    summary="The egress pool with each egress's health (admins)",
    responses=SCHEDULER_UNAVAILABLE,
)
async def list_egresses(link: LinkDep) -> EgressListOut:
    """Requests, WAF answers, challenge solves, errors, backoff and assigned watchers."""
    reply = await micro_client.list_egresses(link.require_bus().nc)
    return EgressListOut(
        items=[EgressOut.of(s) for s in reply.items],
        healthy_capacity_per_min=reply.healthy_capacity_per_min,
        need_per_min=reply.need_per_min,
    )


@router.delete(
    "/egresses/{name}",
    summary="Take an egress out of the pool; its watchers move to the others (admins)",
    responses={**NOT_FOUND, **SCHEDULER_UNAVAILABLE},
)
async def remove_egress(
    name: Annotated[str, Path(max_length=40, description="The egress's name")],
    link: LinkDep,
    correlation_id: CorrelationDep,
) -> Ok:
    bus = link.require_bus()
    pool = await micro_client.list_egresses(bus.nc)
    if name not in {s.name for s in pool.items}:
        raise ApiError(404, ErrorCode.NOT_FOUND, "no such egress")
    await bus.publish(EgressRemoved(correlation_id=correlation_id, name=name))
    return Ok()
