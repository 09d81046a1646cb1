"""Request bodies at the edge: at most MAX_BODY_BYTES (else 413), and JSON when sent (else 415)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.errors import error_response
from shared.errors import ErrorCode

# Methods whose body a route reads: a non-empty one must be JSON.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON_MEDIA_TYPE = "application/json"
_DIGITS = re.compile(r"[0-9]{1,19}")


class BodyLimitMiddleware:
    """Pure ASGI middleware: reads the whole body (at most ``max_bytes``) before the app runs,
    then replays it, so no route ever sees a partial or oversized body.

    A Content-Length over the limit is refused before a byte is read; a body without one
    (chunked) is counted as it streams in and refused as soon as it passes the limit.
    ``larger`` gives a few routes, by method and path, a limit of their own (a bulk import).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int,
        larger: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = dict(larger or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        lengths = headers.getlist("content-length")
        if len(set(lengths)) > 1 or not all(_DIGITS.fullmatch(v) for v in lengths):
            # Two readings of one body is how requests get smuggled past a proxy.
            msg = "Content-Length must be one non-negative integer"
            await error_response(400, ErrorCode.VALIDATION_ERROR, msg)(scope, receive, send)
            return
        limit = self.larger.get((scope["method"], scope["path"]), self.max_bytes)
        if lengths and int(lengths[0]) > limit:
            await self._too_large(scope, receive, send, limit)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left: nobody to answer
            body += message.get("body", b"")
            if len(body) > limit:
                await self._too_large(scope, receive, send, limit)
                return
            more = message.get("more_body", False)
        if body and scope["method"] in BODY_METHODS and not is_json(headers.get("content-type")):
            msg = f"Content-Type must be {JSON_MEDIA_TYPE} for a request body"
            response = error_response(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, msg)
            await response(scope, receive, send)
            return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        msg = f"request body larger than {limit} bytes"
        # The rest of the body is never read: the connection is not worth keeping.
        headers = {"Connection": "close"}
        response = error_response(413, ErrorCode.PAYLOAD_TOO_LARGE, msg, headers)
        await response(scope, receive, send)


def is_json(content_type: str | None) -> bool:
    """``application/json``, with or without parameters (``; charset=utf-8``)."""
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == JSON_MEDIA_TYPE


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over the buffered body once, then waits on the real one (for the
    disconnect)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
