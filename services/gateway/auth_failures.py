"""Failed authentications per client address: past AUTH_FAILURES_PER_MIN in a minute, 429."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from prometheus_client import Counter

from shared.metrics import PREFIX

WINDOW = 60.0  # seconds an address's failures count, from its first one
# Addresses remembered at most (about 100 bytes each); past it the one that failed least
# recently is forgotten, so a flood from many addresses cannot grow the process without bound.
MAX_ADDRESSES = 65_536

AUTH_REFUSED = Counter(
    f"{PREFIX}_gateway_auth_refused_total",
    "Requests refused before a route ran: missing key (401), unknown key (403), or an "
    "address over AUTH_FAILURES_PER_MIN (429)",
    ["reason"],
)


class AuthFailures:
    """Failed authentications of each client address, in this process only.

    Counters in memory, not NATS: a request with a good key pays one dict lookup, and a
    guesser is slowed per gateway process (N replicas let it try N times as often, still
    far too slowly to find a key). Each address gets ``limit`` failures in a fixed minute
    that starts with its first one.
    """

    def __init__(
        self,
        limit: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        self.limit = limit
        self.clock = clock
        self.max_addresses = max_addresses
        # address -> (when its window started, failures in it); least recently failed first.
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def retry_after(self, address: str) -> int | None:
        """Whole seconds until ``address`` may try again, or None when it may now."""
        found = self._windows.get(address)
        if found is None:
            return None
        started, count = found
        left = started + WINDOW - self.clock()
        if left <= 0:
            del self._windows[address]
            return None
        return max(1, math.ceil(left)) if count >= self.limit else None

    def failed(self, address: str) -> None:
        """Count one failed authentication of ``address``."""
        now = self.clock()
        started, count = self._windows.pop(address, (now, 0))
        if now - started >= WINDOW:
            started, count = now, 0
        self._windows[address] = (started, count + 1)
        while len(self._windows) > self.max_addresses:
            self._windows.popitem(last=False)
