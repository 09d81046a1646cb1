"""The standard error body and the handlers that give every error that shape."""

from __future__ import annotations

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


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
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


# Documented on every protected route, so /openapi.json tells clients the error shape.
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "Missing X-API-Key"},
    403: {"model": ErrorBody, "description": "Unknown API key"},
    422: {"model": ErrorBody, "description": "Invalid request"},
    500: {"model": ErrorBody, "description": "Internal error"},
}
