"""Webhook targets: the event's JSON POSTed as declared in the catalogue, signed with the
subscription's secret (HMAC-SHA256 over ``<timestamp>.<body>``), redirects never followed;
without the job's sealed proxy and cookies (a host the subscriber chose gets no ciphertext of
a secret, and an admin's subscription hears every key's jobs)."""

from __future__ import annotations

import hashlib
import hmac
import time
from types import TracebackType
from typing import Self

import httpx
import msgspec

from services.notifier.destinations import check_destination
from services.notifier.handlers import DeliveryFailed
from shared import __version__
from shared import events as ev
from shared.notifications import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)
from shared.tiktok.guards import transport_reason


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The value of X-TLR-Signature: ``sha256=`` and the hex HMAC-SHA256, keyed with the
    subscription's secret, of the timestamp header, a dot and the body as sent."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def without_sealed(event: ev.Event) -> ev.Event:
    """``event`` with its options' sealed proxy and cookies left out (null, as declared)."""
    options = getattr(event, "options", None)
    if isinstance(options, ev.RecordingOptions) and (options.proxy or options.cookies):
        clean = msgspec.structs.replace(options, proxy=None, cookies=None)
        return msgspec.structs.replace(event, options=clean)
    return event


class WebhookSender:
    """The ``Sender`` of webhook subscriptions; one HTTP client for every target."""

    def __init__(self, *, timeout: float, allow_private: bool) -> None:
        self.allow_private = allow_private
        # trust_env off: no HTTP(S)_PROXY or .netrc of the host applies to a user's target.
        self._client = httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": f"tlr-notifier/{__version__}"},
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.aclose()

    async def send(self, target: str, secret: str | None, event: ev.Event) -> None:
        await check_destination(target, allow_private=self.allow_private)
        body = ev.encode(without_sealed(event))
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: event.type_name(),
            DELIVERY_HEADER: event.event_id,
            TIMESTAMP_HEADER: timestamp,
        }
        if secret is not None:
            headers[SIGNATURE_HEADER] = signature(secret, timestamp, body)
        try:
            response = await self._client.post(target, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(transport_reason(exc)) from None
        if not 200 <= response.status_code < 300:
            msg = f"the target answered HTTP {response.status_code}"
            raise DeliveryFailed(msg)
