"""FastAPI dependencies: settings, the NATS link, and the API key check."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

import structlog
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from services.gateway.errors import ApiError
from services.gateway.nats_link import NatsLink
from shared.config import GatewaySettings
from shared.errors import ErrorCode

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="One of the keys in API_KEYS"
)


def get_settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


def get_link(request: Request) -> NatsLink:
    link: NatsLink = request.app.state.link
    return link


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
LinkDep = Annotated[NatsLink, Depends(get_link)]


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
