"""Correlation ids, one log line per request, and the last-resort 500 with the error body."""

from __future__ import annotations

import re
import time

import structlog
from prometheus_client import Counter, Histogram
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.errors import CORRELATION_ID, error_response
from shared.errors import ErrorCode
from shared.events import new_id
from shared.logging import get_logger
from shared.metrics import PREFIX

log = get_logger(__name__)

# Labelled by route template (/jobs/{task_id}), never the raw path: ids would be unbounded.
HTTP_REQUESTS = Counter(
    f"{PREFIX}_http_requests_total",
    "HTTP requests answered by the gateway, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    f"{PREFIX}_http_request_seconds", "Time to answer an HTTP request, by route template", ["route"]
)
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def route_label(scope: Scope) -> str:
    """The matched route's template, or "unmatched" (404s must not mint new label values)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


HEADER = "X-Correlation-ID"
# A client's id is echoed into logs and headers, so it must be short and inert.
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def correlation_id_from(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-correlation-id":
            text: str = value.decode("latin-1")
            if _VALID_ID.fullmatch(text):
                return text
            break
    return new_id()


async def _guarded(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run ``app``; an exception it lets out is logged with its trace and answered with the
    standard 500 body (no trace, no message), unless the response had already started."""
    started = False

    async def tracking_send(message: Message) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    try:
        await app(scope, receive, tracking_send)
    except Exception:
        # Full traceback to the log under the correlation id; none to the client.
        log.exception("http.unhandled_error", method=scope["method"], path=scope["path"])
        if not started:
            response = error_response(500, ErrorCode.INTERNAL, "internal error")
            await response(scope, receive, tracking_send)


class RequestContextMiddleware:
    """Pure ASGI middleware, outermost: binds the correlation id, echoes it, logs the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = correlation_id_from(scope)
        token = CORRELATION_ID.set(cid)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(correlation_id=cid)
        status = 499  # nginx's "client closed request": it left before any answer
        began = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[HEADER] = cid
            await send(message)

        try:
            # Also a backstop for the middleware between this one and ErrorMiddleware.
            await _guarded(self.app, scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - began
            route = route_label(scope)
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_SECONDS.labels(route).observe(elapsed)
            log.info(
                "http.request",
                method=scope["method"],
                path=scope["path"],
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 2),
            )
            CORRELATION_ID.reset(token)
            structlog.contextvars.clear_contextvars()


class ErrorMiddleware:
    """Pure ASGI middleware: the standard 500 for an unhandled error, placed inside CORS so a
    browser may read that answer too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await _guarded(self.app, scope, receive, send)
