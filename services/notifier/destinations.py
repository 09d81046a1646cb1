"""The egress rules (``shared.egress``) on a notification target's host, judged right before
every attempt: a name is resolved then, so one that came to point at a private address since
the subscription was made is refused (unless ALLOW_PRIVATE_WEBHOOKS)."""

from __future__ import annotations

from urllib.parse import urlsplit

from services.notifier.handlers import DeliveryFailed
from shared.egress import canonical_host, ip_of, is_private, resolve
from shared.logging import get_logger

log = get_logger(__name__)

REFUSED = "the target's host is a private address, which is not allowed"


async def check_destination(url: str, *, allow_private: bool) -> None:
    """Raise DeliveryFailed unless ``url``'s host may be reached."""
    parts = urlsplit(url)
    try:
        host = canonical_host(parts.hostname or "")
        port = parts.port or (443 if parts.scheme.endswith("s") else 80)
    except ValueError:
        msg = "the target's host is not valid"
        raise DeliveryFailed(msg) from None
    if allow_private:
        return
    ip = ip_of(host)
    if ip is not None:
        addresses = [ip]
    else:
        try:
            addresses = await resolve(host, port)
        except OSError:  # TimeoutError included
            msg = "the target's host does not resolve"
            raise DeliveryFailed(msg) from None
    if any(is_private(a) for a in addresses):
        log.warning("notifier.destination_refused")
        raise DeliveryFailed(REFUSED)
