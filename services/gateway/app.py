"""The FastAPI application factory: no globals, everything hangs off ``app.state``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI

from services.gateway.auth_failures import AuthFailures
from services.gateway.body_limits import BodyLimitMiddleware
from services.gateway.cors import CorsMiddleware
from services.gateway.deps import require_api_key
from services.gateway.errors import EDGE_RESPONSES, ERROR_RESPONSES, install_error_handlers
from services.gateway.hot_routes import HotRoutes
from services.gateway.middleware import ErrorMiddleware, RequestContextMiddleware
from services.gateway.nats_link import NatsLink
from services.gateway.routes import (
    asyncapi,
    diagnostics,
    egresses,
    files,
    health,
    jobs,
    recordings,
    services,
    subscriptions,
    watchers,
)
from services.gateway.settings import GatewaySettings
from shared import __version__
from shared.secrets import SecretBox

DESCRIPTION = """
REST API of the distributed TikTok LIVE recorder. Every route except health, readiness,
metrics and these docs needs an `X-API-Key` header. Every error has the body
`{error_code, error_message, correlation_id}`; send `X-Correlation-ID` to choose the id.
Request bodies are JSON (`Content-Type: application/json`) of at most MAX_BODY_BYTES.
A key sees and changes only the jobs, watchers and files it made (another key's answer 404,
as unknown ones do); a key with `role=admin` sees all, and alone may call the fleet-wide
routes (services, diagnostics, index rebuild, the egress pool).
"""


def create_app(settings: GatewaySettings, link: NatsLink | None = None) -> FastAPI:
    """Build the app. With ``link`` given (tests), the caller owns the NATS connection."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if link is not None:
            yield
            return
        async with NatsLink(settings) as owned:
            app.state.link = owned
            yield

    app = FastAPI(
        title="TikTok LIVE recorder",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        responses=EDGE_RESPONSES,
        # A path ending in "/" is a 404, not a 307 to the path without it: an encoded
        # "/jobs/; rm -rf /" must not be redirected to "/jobs/; rm -rf ".
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.link = link
    app.state.secrets = SecretBox(settings.secret_key) if settings.secret_key else None
    app.state.auth_failures = AuthFailures(settings.auth_failures_per_min)
    install_error_handlers(app)
    # Added innermost first. Outermost, the request context: every answer (a preflight, a
    # 413, a 500) carries the correlation id. CORS wraps the rest so a browser can read error
    # answers too; the body is checked before any route runs, the hot routes' too.
    app.add_middleware(HotRoutes)
    bulk_limit = max(settings.max_body_bytes, watchers.BULK_MAX_BYTES)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        larger={("POST", watchers.BULK_PATH): bulk_limit},
    )
    app.add_middleware(ErrorMiddleware)
    if settings.cors_origins:
        app.add_middleware(CorsMiddleware, origins=settings.cors_origins)
    app.add_middleware(RequestContextMiddleware)

    app.include_router(health.router)
    app.include_router(asyncapi.router)
    protected = APIRouter(dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)
    protected.include_router(recordings.router)
    protected.include_router(watchers.router)
    protected.include_router(jobs.router)
    protected.include_router(files.router)
    protected.include_router(subscriptions.router)
    protected.include_router(services.router)
    protected.include_router(diagnostics.router)
    protected.include_router(egresses.router)
    app.include_router(protected)
    return app
