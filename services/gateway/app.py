"""The FastAPI application factory: no globals, everything hangs off ``app.state``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI

from services.gateway.deps import require_api_key
from services.gateway.errors import ERROR_RESPONSES, install_error_handlers
from services.gateway.middleware import RequestContextMiddleware
from services.gateway.nats_link import NatsLink
from services.gateway.routes import files, health, jobs, recordings, services, watchers
from shared import __version__
from shared.config import GatewaySettings
from shared.secrets import SecretBox

DESCRIPTION = """
REST API of the distributed TikTok LIVE recorder. Every route except health, readiness,
metrics and these docs needs an `X-API-Key` header. Every error has the body
`{error_code, error_message, correlation_id}`; send `X-Correlation-ID` to choose the id.
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
    )
    app.state.settings = settings
    app.state.link = link
    app.state.secrets = SecretBox(settings.secret_key) if settings.secret_key else None
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)

    app.include_router(health.router)
    protected = APIRouter(dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)
    protected.include_router(recordings.router)
    protected.include_router(watchers.router)
    protected.include_router(jobs.router)
    protected.include_router(files.router)
    protected.include_router(services.router)
    app.include_router(protected)
    return app
