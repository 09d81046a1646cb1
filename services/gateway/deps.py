"""FastAPI dependencies: settings, the NATS link, the correlation id, the API key check (with
failed attempts limited per client address), the admin check and the rate limit."""

from __future__ import annotations

from typing import Annotated

import nats.js.errors
import structlog
from fastapi import Depends, Request, Response, Security
from fastapi.security import APIKeyHeader
from starlette.datastructures import State

from services.gateway.api_keys import ApiKey, ApiKeyRegistry
from services.gateway.auth_failures import AUTH_REFUSED, AuthFailures
from services.gateway.errors import CORRELATION_ID, ApiError
from services.gateway.nats_link import NatsLink
from services.gateway.ratelimit import RateLimiter, enforce
from services.gateway.settings import GatewaySettings
from shared.bus import TRANSIENT
from shared.documents import KvDocuments
from shared.errors import ErrorCode
from shared.events import new_id
from shared.job_store import JobStore
from shared.secrets import SecretBox
from shared.subjects import JOBS_BUCKET

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="One of the keys in API_KEYS or API_KEYS_FILE"
)


# Dependencies are ``async def`` even when they await nothing: FastAPI runs a plain ``def``
# dependency on a worker thread, a thread hop per dependency per request.


def _settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


def _link(request: Request) -> NatsLink:
    link: NatsLink = request.app.state.link
    return link


async def get_settings(request: Request) -> GatewaySettings:
    return _settings(request)


async def get_link(request: Request) -> NatsLink:
    return _link(request)


async def get_secrets(request: Request) -> SecretBox | None:
    box: SecretBox | None = request.app.state.secrets
    return box


async def job_store(link: NatsLink) -> JobStore:
    """The job store over the ``jobs`` bucket; 503 while NATS is not usable."""
    if link.bus is None or not link.bus.nc.is_connected:
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "NATS is not connected")
    try:
        return JobStore(KvDocuments(await link.bus.kv(JOBS_BUCKET)))
    except (*TRANSIENT, nats.js.errors.NotFoundError) as exc:
        raise ApiError(503, ErrorCode.SERVICE_UNAVAILABLE, "job store not available") from exc


async def get_job_store(request: Request) -> JobStore:
    return await job_store(_link(request))


async def get_correlation_id() -> str:
    """The request's correlation id, which the events it causes carry too."""
    return CORRELATION_ID.get() or new_id()


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
LinkDep = Annotated[NatsLink, Depends(get_link)]
SecretsDep = Annotated[SecretBox | None, Depends(get_secrets)]
JobsDep = Annotated[JobStore, Depends(get_job_store)]
CorrelationDep = Annotated[str, Depends(get_correlation_id)]


def api_keys(state: State, settings: GatewaySettings) -> ApiKeyRegistry:
    """The key registry; ``__main__`` loads it at start, else (tests) it is loaded once here."""
    registry: ApiKeyRegistry | None = getattr(state, "api_keys", None)
    if registry is None:
        registry = ApiKeyRegistry.from_settings(settings)
        state.api_keys = registry
    return registry


async def get_api_keys(request: Request) -> ApiKeyRegistry:
    return api_keys(request.app.state, _settings(request))


def rate_limiter(state: State) -> RateLimiter | None:
    """The limiter on the link's connection; None until NATS was first reached."""
    link: NatsLink = state.link
    if link.bus is None:
        return None
    limiter: RateLimiter | None = getattr(state, "rate_limiter", None)
    if limiter is None or limiter.nc is not link.bus.nc:
        settings: GatewaySettings = state.settings
        limiter = RateLimiter(link.bus.nc, default_limit=settings.rate_limit_per_min)
        state.rate_limiter = limiter
    return limiter


def get_rate_limiter(request: Request) -> RateLimiter | None:
    return rate_limiter(request.app.state)


def client_address(request: Request) -> str:
    """The client's address: the peer's, or the one X-Forwarded-For gives when the peer is a
    proxy in FORWARDED_ALLOW_IPS (uvicorn rewrites the ASGI scope before we see it)."""
    return request.client.host if request.client else "unknown"


def check_api_key(
    registry: ApiKeyRegistry, failures: AuthFailures, address: str, key: str | None
) -> ApiKey:
    """401 without a key, 403 with an unknown one (compared in constant time); 429, before
    the key is even looked at, for an address past AUTH_FAILURES_PER_MIN failures."""
    wait = failures.retry_after(address)
    if wait is not None:
        AUTH_REFUSED.labels("throttled").inc()
        message = f"too many failed authentications from this address; retry in {wait} s"
        raise ApiError(429, ErrorCode.RATE_LIMITED, message, headers={"Retry-After": str(wait)})
    if not key:
        failures.failed(address)
        AUTH_REFUSED.labels("missing").inc()
        raise ApiError(401, ErrorCode.UNAUTHORIZED, "missing X-API-Key header")
    found = registry.lookup(key)
    if found is None:
        failures.failed(address)
        AUTH_REFUSED.labels("unknown").inc()
        raise ApiError(403, ErrorCode.FORBIDDEN, "unknown API key")
    # Not "api_key_name": the log redaction hides any field named like api_key.
    structlog.contextvars.bind_contextvars(key_name=found.name)
    return found


async def authenticate(
    request: Request,
    registry: Annotated[ApiKeyRegistry, Depends(get_api_keys)],
    key: Annotated[str | None, Security(api_key_header)] = None,
) -> ApiKey:
    """The key's entry, or the 401, 403 or 429 of :func:`check_api_key`."""
    failures: AuthFailures = request.app.state.auth_failures
    return check_api_key(registry, failures, client_address(request), key)


async def require_api_key(
    request: Request, response: Response, api_key: Annotated[ApiKey, Depends(authenticate)]
) -> ApiKey:
    """Authenticate, then count the request against the key's rate limit (429 when spent)."""
    headers = await enforce(get_rate_limiter(request), api_key, request.method)
    response.headers.update(headers)
    # An error response built later (a 404 from the route) does not see ``response``; this lets
    # an error handler or middleware add the headers to it too.
    request.state.rate_limit_headers = headers
    return api_key


ApiKeyDep = Annotated[ApiKey, Depends(require_api_key)]


async def require_admin(api_key: ApiKeyDep) -> ApiKey:
    """403 unless the key has ``role=admin``: a fleet-wide operation, not an id lookup."""
    if not api_key.admin:
        raise ApiError(403, ErrorCode.FORBIDDEN, "this needs an API key with role=admin")
    return api_key


AdminDep = Annotated[ApiKey, Depends(require_admin)]
