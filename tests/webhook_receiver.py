"""A real HTTP receiver on loopback for notification tests: records every request, answers
each with the next status of a script (then 200), and lets a test await a count."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

from tests.loopback import LoopbackServer


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    status: int  # what the receiver answered

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver(LoopbackServer):
    """HTTP/1.1 with keep-alive; ``statuses`` are answered in turn, then 200 for good."""

    def __init__(self, *statuses: int) -> None:
        self.script = list(statuses)
        self.requests: list[Received] = []
        self._changed = asyncio.Condition()

    @property
    def delivered(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    async def wait_for(self, count: int, *, delivered: bool = True, timeout: float = 15) -> None:
        """Until ``count`` requests arrived (answered 2xx unless ``delivered`` is False)."""

        def enough() -> bool:
            return len(self.delivered if delivered else self.requests) >= count

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(enough)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while head := await reader.readuntil(b"\r\n\r\n"):
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {}
                for line in lines:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status = self.script.pop(0) if self.script else 200
                async with self._changed:
                    self.requests.append(Received(method, path, headers, body, status))
                    self._changed.notify_all()
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok".encode("latin-1")
                )
                await writer.drain()
        writer.close()
