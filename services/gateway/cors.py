"""CORS for browser clients: exactly the origins in CORS_ORIGINS, nothing for any other."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Send

from services.gateway.errors import error_response
from shared.errors import ErrorCode

ALLOW_METHODS = ("GET", "POST", "PATCH", "DELETE")
ALLOW_HEADERS = ("X-API-Key", "Content-Type", "X-Correlation-ID", "Idempotency-Key")
# What a browser script may read of a response: the id to quote, and when to retry.
EXPOSE_HEADERS = (
    "X-Correlation-ID",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "X-RateLimit-Status",
)
MAX_AGE = 600  # seconds a browser may cache a preflight answer


class CorsMiddleware(CORSMiddleware):
    """Starlette's CORSMiddleware, stricter: a response to another origin carries no CORS
    header at all, and a refused preflight answers with the standard error body."""

    def __init__(self, app: ASGIApp, *, origins: Sequence[str]) -> None:
        super().__init__(
            app,
            # An origin never ends in "/", but one written with it in CORS_ORIGINS would
            # silently never match.
            allow_origins=[o.rstrip("/") for o in origins],
            allow_methods=ALLOW_METHODS,
            allow_headers=ALLOW_HEADERS,
            expose_headers=EXPOSE_HEADERS,
            allow_credentials=False,  # the API key is a header, not a cookie
            max_age=MAX_AGE,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        # Starlette's text names what was refused: "Disallowed CORS origin, headers".
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        msg = f"CORS preflight refused: {refused} not allowed"
        headers = {"Vary": response.headers.get("vary", "Origin")}
        return error_response(400, ErrorCode.VALIDATION_ERROR, msg, headers)

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        origin = request_headers.get("origin")
        if (
            message["type"] == "http.response.start"
            and origin is not None
            and not self.is_allowed_origin(origin)
        ):
            MutableHeaders(scope=message).add_vary_header("Origin")
            await send(message)
            return
        await super().send(message, send, request_headers)
