"""The standard error body and the handlers that give every error that shape."""

from __future__ import annotations

import re
from contextvars import ContextVar
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def _describe_validation(exc: RequestValidationError) -> str:
    """``field: why`` for each error; never the value sent (it may be a secret or a payload)."""
    parts = []
    for err in exc.errors()[:10]:
        where = ".".join(_loc_part(p) for p in err.get("loc", ()) if p != "body") or "body"
        why = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {why}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Register handlers so 4xx from routing, validation and routes share one body."""

    async def on_api_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    async def on_http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(
            exc.status_code,
            ErrorCode.INTERNAL if exc.status_code >= 500 else ErrorCode.VALIDATION_ERROR,
        )
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return error_response(exc.status_code, code, message, dict(exc.headers or {}))

    async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, ErrorCode.VALIDATION_ERROR, _describe_validation(exc))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)


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
    429: _error("Rate limit reached; retry after Retry-After seconds"),
    503: _error("NATS, or a service behind it, is not reachable; retry later"),
}
# Routes that take a request body (POST): a non-empty one must be JSON.
JSON_BODY_RESPONSES: dict[int | str, dict[str, object]] = {
    415: _error("Request body is not application/json"),
}
