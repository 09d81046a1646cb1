"""FastAPI dependencies: settings, the NATS link, and the API key check."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

import nats.js.errors
import structlog
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from nats.js.kv import KeyValue

from services.gateway.errors import ApiError
from services.gateway.nats_link import NatsLink
from shared.bus import TRANSIENT
from shared.config import GatewaySettings
from shared.errors import ErrorCode
from shared.secrets import SecretBox
from shared.subjects import JOBS_BUCKET

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="One of the keys in API_KEYS"
)


def get_settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


def get_link(request: Request) -> NatsLink:
    link: NatsLink = request.app.state.link
    return link


def get_secrets(request: Request) -> SecretBox | None:
    box: SecretBox | None = request.app.state.secrets
    return box


async def get_jobs_kv(request: Request) -> KeyValue:
    """The ``jobs`` bucket; 503 while NATS is not usable."""
    link = get_link(request)
    if link.bus is None or not link.bus.nc.is_connected:
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "NATS is not connected")
    try:
        return await link.bus.kv(JOBS_BUCKET)
    except (*TRANSIENT, nats.js.errors.NotFoundError) as exc:
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "job store not available") from exc


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
LinkDep = Annotated[NatsLink, Depends(get_link)]
SecretsDep = Annotated[SecretBox | None, Depends(get_secrets)]
JobsDep = Annotated[KeyValue, Depends(get_jobs_kv)]


def key_id(key: str) -> str:
    """A short, non-reversible name for a key, for logs and metrics."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


async def require_api_key(
    settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)] = None
) -> str:
    """401 without a key, 403 with an unknown one. Compared in constant time."""
    if not key:
        raise ApiError(401, ErrorCode.UNAUTHORIZED, "missing X-API-Key header")
    given = key.encode()
    known = False
    for candidate in settings.api_keys:
        known |= hmac.compare_digest(given, candidate.encode())
    if not known:
        raise ApiError(403, ErrorCode.FORBIDDEN, "unknown API key")
    structlog.contextvars.bind_contextvars(api_key_id=key_id(key))
    return key


ApiKeyDep = Annotated[str, Depends(require_api_key)]
