"""The standard error body, and the handlers that map every error (a refused command, a NATS
outage, a bad request) to an answer of that shape."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextvars import ContextVar
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.gateway.commands import CommandError, Conflict, Invalid, NotFound
from services.gateway.micro_client import ServiceUnavailable
from services.gateway.nats_link import NotConnected
from shared.bus import TRANSIENT
from shared.errors import ErrorCode

# Set by the correlation middleware for the duration of one request.
CORRELATION_ID: ContextVar[str] = ContextVar("correlation_id", default="")


class ErrorBody(BaseModel):
    """What every non-2xx response carries."""

    error_code: ErrorCode = Field(description="Stable machine-readable code")
    error_message: str = Field(description="What went wrong, for a human")
    correlation_id: str = Field(description="Id to quote when reporting the problem; in logs too")


class ApiError(Exception):
    """Raised by routes and dependencies; rendered as :class:`ErrorBody`."""

    def __init__(
        self,
        status: int,
        code: ErrorCode,
        message: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


# How a bare HTTP status (from Starlette's routing) maps to an error code.
_STATUS_CODES = {
    400: ErrorCode.VALIDATION_ERROR,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.VALIDATION_ERROR,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.SERVICE_UNAVAILABLE,
}


# How a command's refusal is answered.
_REFUSALS: dict[type[CommandError], tuple[int, ErrorCode]] = {
    Invalid: (422, ErrorCode.VALIDATION_ERROR),
    NotFound: (404, ErrorCode.NOT_FOUND),
    Conflict: (409, ErrorCode.CONFLICT),
}
# What keeps the gateway from reaching NATS or a service behind it: all a 503.
OUTAGES: tuple[type[Exception], ...] = (*TRANSIENT, NotConnected, ServiceUnavailable)


def outage_message(exc: Exception) -> str:
    """Which dependency is out, never why: a reply's details are the service's own."""
    if isinstance(exc, ServiceUnavailable):
        return f"the {exc.service} is not reachable"
    if isinstance(exc, NotConnected):
        return "NATS is not connected"
    return "NATS is not reachable"


def error_response(
    status: int, code: ErrorCode, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error_code=code, error_message=message, correlation_id=CORRELATION_ID.get())
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _loc_part(part: object) -> str:
    """A field name as sent can be anything (an unknown key is the client's): shown only
    when it is short and plain."""
    text = str(part)
    return text if _PLAIN_NAME.fullmatch(text) else "?"


def describe_validation(exc: RequestValidationError | ValidationError) -> str:
    """``field: why`` for each error; never the value sent (it may be a secret or a payload)."""
    parts = []
    for err in exc.errors()[:10]:
        where = ".".join(_loc_part(p) for p in err.get("loc", ()) if p != "body") or "body"
        why = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {why}")
    return "; ".join(parts) or "invalid request"


def _api_error(exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


def _http_error(exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(
        exc.status_code,
        ErrorCode.INTERNAL if exc.status_code >= 500 else ErrorCode.VALIDATION_ERROR,
    )
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))


def _validation_error(exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, ErrorCode.VALIDATION_ERROR, describe_validation(exc))


def refusal(exc: CommandError) -> tuple[int, ErrorCode]:
    """The status and error code a refused command is answered with."""
    return next(v for t, v in _REFUSALS.items() if isinstance(exc, t))


def _refused(exc: Exception) -> JSONResponse:
    assert isinstance(exc, CommandError)
    status, code = refusal(exc)
    return error_response(status, code, str(exc))


def _outage(exc: Exception) -> JSONResponse:
    return error_response(503, ErrorCode.SERVICE_UNAVAILABLE, outage_message(exc))


# How each error is answered: by the app's exception handlers, and by the hot routes, which run
# outside FastAPI's routing (see hot_routes).
_RENDERERS: dict[type[Exception], Callable[[Exception], JSONResponse]] = {
    ApiError: _api_error,
    StarletteHTTPException: _http_error,
    RequestValidationError: _validation_error,
    **dict.fromkeys(_REFUSALS, _refused),
    **dict.fromkeys(OUTAGES, _outage),
}


def response_for(exc: Exception) -> JSONResponse | None:
    """The answer to ``exc`` as the exception handlers give it; None for one they leave (a 500).
    Looked up along the class's MRO, as Starlette does."""
    for cls in type(exc).__mro__:
        render = _RENDERERS.get(cls)
        if render is not None:
            return render(exc)
    return None


def install_error_handlers(app: FastAPI) -> None:
    """Register handlers so 4xx from routing, validation and routes share one body."""
    for exc_class, render in _RENDERERS.items():

        async def handler(
            _request: Request,
            exc: Exception,
            render: Callable[[Exception], JSONResponse] = render,
        ) -> JSONResponse:
            return render(exc)

        app.add_exception_handler(exc_class, handler)


def _error(description: str) -> dict[str, object]:
    return {"model": ErrorBody, "description": description}


# What the edge answers on any route, before the route runs (see body_limits, middleware).
EDGE_RESPONSES: dict[int | str, dict[str, object]] = {
    400: _error("Malformed request: Content-Length, or a body that does not parse"),
    413: _error("Request body larger than MAX_BODY_BYTES"),
    500: _error("Internal error; quote the correlation_id"),
}
# Documented on every protected route, so /openapi.json tells clients the error shape.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    **EDGE_RESPONSES,
    401: _error("Missing X-API-Key"),
    403: _error("Unknown API key"),
    422: _error("Invalid request: error_message names each field and why"),
    429: _error(
        "Rate limit reached: the key's, or too many failed authentications from this "
        "address; retry after Retry-After seconds"
    ),
    503: _error("NATS, or a service behind it, is not reachable; retry later"),
}


def documented(status: int, description: str) -> dict[int | str, dict[str, object]]:
    """One more answer a route may give, for its ``responses`` in /openapi.json."""
    return {status: _error(description)}


# Fleet-wide routes: an admin's key only (role=admin in API_KEYS_FILE).
ADMIN_ONLY = documented(403, "Unknown API key, or a key without role=admin")
# Routes that take a target: room_id or url, exactly one.
BAD_TARGET = documented(400, "Neither or both of room_id and url; or a malformed request")
# Routes that ask the scheduler about a watcher.
SCHEDULER_UNAVAILABLE = documented(503, "NATS or the scheduler is not reachable")
# Routes that take a request body (POST): a non-empty one must be JSON.
JSON_BODY_RESPONSES: dict[int | str, dict[str, object]] = {
    415: _error("Request body is not application/json"),
}
