"""``GET /diagnostics/tiktok``: run the TikTok resolution chain once from the gateway's host.

Admins only: it spends the host's standing with TikTok, which every watcher shares."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from services.gateway.deps import SettingsDep, require_admin
from services.gateway.errors import ADMIN_ONLY, ApiError
from services.gateway.validators import ROOM_ID_PATTERN, check_room_id, check_target_url
from shared.errors import ErrorCode
from shared.tiktok import TikTokClient, diagnose
from shared.tiktok.factory import client_from_settings, signer_from_settings
from shared.tiktok.http import Trace

router = APIRouter(
    tags=["diagnostics"], dependencies=[Depends(require_admin)], responses=ADMIN_ONLY
)


class CheckStep(BaseModel):
    endpoint: str = Field(description="profile_page, live_page, user_room, room_info, ...")
    url: str = Field(description="Without its query")
    http_status: int | None = None
    outcome: str = Field(description="ok, or the lower-cased error code")
    waf: str | None = Field(None, description="solved, passed, refused or unsolvable")
    elapsed_ms: float


class StreamProbeOut(BaseModel):
    quality: str
    source: str
    url: str = Field(description="Without its query (the signature stays private)")
    http_status: int | None = None
    bytes: int
    media: bool = Field(description="FLV arrived (at least 4 KB)")
    error: str | None = None


class CheckOut(BaseModel):
    """Each step of one resolution from this host: what a user looks at when a live does not
    record."""

    target: str
    ok: bool = Field(description="Resolved, and a live room has a stream that plays")
    steps: list[CheckStep]
    room_id: str | None = None
    unique_id: str | None = None
    status: int | None = Field(None, description="2 live, 3 paused, 4 ended")
    title: str | None = None
    info_source: str | None = Field(None, description="room_info, live_page or user_room")
    probes: list[StreamProbeOut]
    stream: StreamProbeOut | None = Field(None, description="The first URL that played")
    error_code: str | None = None
    error: str | None = None


def _target(value: str) -> str:
    try:
        return check_room_id(value)
    except ValueError:
        pass
    try:
        return check_target_url(value)
    except ValueError as exc:
        raise ApiError(422, ErrorCode.VALIDATION_ERROR, str(exc)) from None


@router.get(
    "/diagnostics/tiktok",
    summary="Resolve a target once from this host and show every step (tlr check)",
)
async def check_tiktok(
    settings: SettingsDep,
    target: Annotated[
        str,
        Query(
            min_length=1,
            max_length=300,
            description=f"@user, a TikTok URL, or a room id ({ROOM_ID_PATTERN})",
            examples=["@alice"],
        ),
    ],
    probe: Annotated[bool, Query(description="Also pull the stream URLs until one plays")] = True,
) -> CheckOut:
    signer = signer_from_settings(settings)

    def make(trace: Trace) -> TikTokClient:
        return client_from_settings(settings, signer=signer, trace=trace)

    try:
        report = await diagnose.check(_target(target), make, probe=probe)
    finally:
        if signer is not None:
            await signer.aclose()
    return CheckOut.model_validate(report.to_json())
