"""The ops endpoints of a service process on METRICS_PORT: ``/metrics``, ``/healthz``, ``/ready``.

A few lines of asyncio instead of a web framework: three GETs, no bodies, one response per
connection. Serving them on the event loop is deliberate: a loop blocked by a bug stops answering
``/healthz``, which is what a liveness probe should notice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from shared.logging import get_logger
from shared.metrics import render_latest

log = get_logger(__name__)

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_MAX_REQUEST_HEAD = 8192
_READ_TIMEOUT = 5.0


class OpsServer:
    """Serve the ops endpoints on ``host:port`` while the process runs; ``ready`` decides /ready."""

    def __init__(self, port: int, ready: Callable[[], bool], *, host: str = "0.0.0.0") -> None:
        self.port = port
        self.host = host
        self._ready = ready
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = sock.getsockname()[1]  # the real port when asked for 0
        log.info("ops_http.listening", port=self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        status, body, content_type = self._route(head[:_MAX_REQUEST_HEAD])
        response = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode() + (b"" if head.startswith(b"HEAD ") else body)
        with contextlib.suppress(OSError):
            writer.write(response)
            await writer.drain()
        writer.close()

    def _route(self, head: bytes) -> tuple[int, bytes, str]:
        method, _, rest = head.partition(b" ")
        target = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        text = "text/plain; charset=utf-8"
        if target not in (b"/metrics", b"/healthz", b"/ready"):
            return 404, b"not found\n", text
        if method not in (b"GET", b"HEAD"):
            return 405, b"method not allowed\n", text
        if target == b"/metrics":
            body, content_type = render_latest()
            return 200, body, content_type
        if target == b"/healthz":
            return 200, b'{"status":"ok"}\n', "application/json"
        if self._ready():
            return 200, b'{"status":"ready"}\n', "application/json"
        return 503, b'{"status":"not ready"}\n', "application/json"
