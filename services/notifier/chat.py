"""Apprise targets (Telegram, Discord, Slack, ntfy, email, JSON... from one URL): a short human
message. Apprise is synchronous: each notification runs on a worker thread."""

from __future__ import annotations

import asyncio
import logging

import apprise

from services.notifier.destinations import check_destination
from services.notifier.handlers import DeliveryFailed
from services.notifier.messages import TITLE, message
from shared import events as ev
from shared.logging import get_logger
from shared.notifications import host_checked

log = get_logger(__name__)

# Apprise logs the URLs it sends to, tokens included: none of it reaches our logs.
logging.getLogger("apprise").setLevel(logging.CRITICAL + 1)


def _notify(url: str, text: str) -> bool:
    targets = apprise.Apprise()
    try:
        if not targets.add(url):
            return False
        return bool(targets.notify(body=text, title=TITLE))
    except Exception as exc:  # a plugin's bug is a failed attempt; its text may quote the URL
        log.warning("notifier.apprise_failed", error_type=type(exc).__name__)
        return False


class AppriseSender:
    """The ``Sender`` of Apprise subscriptions."""

    def __init__(self, *, timeout: float, allow_private: bool) -> None:
        self.timeout = timeout
        self.allow_private = allow_private

    async def send(self, target: str, secret: str | None, event: ev.Event) -> None:  # noqa: ARG002  (Apprise signs nothing)
        if host_checked("apprise", target):
            await check_destination(target, allow_private=self.allow_private)
        try:
            async with asyncio.timeout(self.timeout):
                sent = await asyncio.to_thread(_notify, target, message(event))
        except TimeoutError:
            msg = "no answer in time"
            raise DeliveryFailed(msg) from None
        if not sent:
            msg = "the Apprise target did not accept the notification"
            raise DeliveryFailed(msg)
