"""Which egress and which TikTok client a watcher's checks go through.

A watcher with its own proxy keeps it (labelled ``proxy-<8 hex>``, as before the pool). Every
other watcher goes through the egress the pool assigns it, or direct while the pool is empty.
The clients come from the process's :class:`ClientPool`, keyed by (proxy, cookies), so a
watcher's cookies still go with it whichever egress it is on.
"""

from __future__ import annotations

import msgspec

from services.scheduler.egress_pool import Egress, EgressPool
from shared.events import RecordingOptions
from shared.tiktok import TikTokClient
from shared.tiktok.http import Step
from shared.tiktok.pool import DIRECT, ClientPool
from shared.watchers import Watcher


def cost(w: Watcher, batch_size: int) -> float:
    """Requests/s a watcher costs: a share of a check_alive batch, plus a resolve for a user
    (the same sum as :meth:`WatcherStore.need`)."""
    share = 1.0 / batch_size + (1.0 if w.unique_id else 0.0)
    return share / max(1, w.poll_interval)


class EgressRouter:
    """``egress_of`` and ``client_for`` of the poller, over the pool and the clients."""

    def __init__(self, pool: EgressPool, clients: ClientPool, batch_size: int) -> None:
        self.pool = pool
        self.clients = clients
        self.batch_size = batch_size

    def _pooled(self, w: Watcher) -> Egress | None:
        if w.options.proxy is not None:
            return None
        return self.pool.egress_for(w.key, cost(w, self.batch_size))

    def egress_of(self, w: Watcher) -> str:
        """The egress's name (raises SecretError for a watcher proxy that cannot be used)."""
        eg = self._pooled(w)
        return eg.name if eg is not None else self.clients.egress(w.options)

    def client_for(self, w: Watcher) -> TikTokClient:
        eg = self._pooled(w)
        if eg is None:
            return self.clients.client(w.options)
        return self.clients.client(msgspec.structs.replace(w.options, proxy=eg.proxy))

    def egress_client(self, eg: Egress) -> TikTokClient:
        """A client of the egress alone (no cookies): its probe."""
        return self.clients.client(RecordingOptions(proxy=eg.proxy))

    def observe(self, proxy: str | None, step: Step) -> None:
        """Every TikTok request of the process's clients (``proxy`` sealed): count the WAF
        challenges solved through each pool egress."""
        if step.waf != "solved":
            return
        for eg in self.pool.egresses.values():
            if eg.proxy == proxy:
                self.pool.solved(eg.name)
                return


__all__ = ["DIRECT", "EgressRouter", "cost"]
