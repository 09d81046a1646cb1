"""An optional signing service for api-live (``TIKTOK_SIGNER_URL``), never required.

TikTok answers ``/api-live/user/room/`` with an empty 200 body unless its URL carries an
``X-Bogus`` signature (upstream #330/#332, 2025-08). The upstream CLI asks tikrec.com and
loses username mode whenever that is down (#469); TikTokLive runs its own sign server. We
resolve users from the www pages first, and call api-live only when an operator runs a signer.

The contract (any service that keeps it works)::

    POST <TIKTOK_SIGNER_URL>
    Content-Type: application/json
    {"url": "https://www.tiktok.com/api-live/user/room/?aid=1988&sourceType=54&uniqueId=alice"}

    200 {"signed_url": "<the same URL with its signature parameters added>",
         "user_agent": "<optional: the User-Agent the signature is bound to>"}

The signed URL must keep the unsigned one's scheme, host and path: a signer cannot send us
anywhere else. Any other answer is a failed step, and resolution goes on without api-live.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import httpx

from shared.logging import get_logger, redact_text
from shared.tiktok.errors import NetworkTimeout, UnexpectedResponse
from shared.tiktok.guards import transport_reason

log = get_logger(__name__)

MAX_REPLY_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Signed:
    url: str
    user_agent: str | None = None


class Signer:
    """Client of one signing service (a direct connection: it is the operator's own)."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            msg = "TIKTOK_SIGNER_URL must be an http(s) URL"
            raise ValueError(msg)
        self._url = url
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def sign(self, unsigned: str) -> Signed:
        """The signed form of ``unsigned`` (NetworkTimeout / UnexpectedResponse otherwise)."""
        try:
            response = await self._http.post(self._url, json={"url": unsigned})
        except httpx.HTTPError as exc:
            # Its text to the log only: what an API answer may say is a fixed phrase.
            log.warning("tiktok.signer_failed", error=redact_text(str(exc))[:300])
            raise NetworkTimeout(endpoint="signer", reason=transport_reason(exc)) from None
        if response.status_code != 200:
            detail = f"HTTP {response.status_code}"
            raise UnexpectedResponse(endpoint="signer", detail=detail)
        if len(response.content) > MAX_REPLY_BYTES:
            raise UnexpectedResponse(endpoint="signer", detail="reply too large")
        try:
            reply = json.loads(response.content)
            signed = reply["signed_url"]
        except (ValueError, KeyError, TypeError):
            raise UnexpectedResponse(endpoint="signer", detail="no signed_url") from None
        if not isinstance(signed, str) or not _same_resource(unsigned, signed):
            raise UnexpectedResponse(endpoint="signer", detail="signed URL names another place")
        agent = reply.get("user_agent") if isinstance(reply, dict) else None
        return Signed(signed, agent if isinstance(agent, str) and agent else None)


def _same_resource(unsigned: str, signed: str) -> bool:
    a, b = urlsplit(unsigned), urlsplit(signed)
    return (a.scheme, a.netloc, a.path) == (b.scheme, b.netloc, b.path)
