"""A process's TikTok clients, one per (proxy, cookies file), under one policy for both options."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Final

from shared.config import Settings
from shared.events import RecordingOptions
from shared.secrets import SecretBox, SecretError
from shared.tiktok.client import TikTokClient
from shared.tiktok.cookies import load_cookies
from shared.tiktok.factory import client_from_settings, signer_from_settings
from shared.tiktok.http import Step

DIRECT: Final = "direct"
# A client no job or watcher used for this long is closed (proxies come and go: an egress pool
# of thousands must not keep a TLS context and a connection pool for each one for ever).
IDLE_CLOSE: Final = 600.0
_SWEEP_EVERY: Final = 60.0

Key = tuple[str | None, str | None]
# Sees every request of the pool's clients, with the options' proxy as given (sealed).
Observer = Callable[[str | None, Step], None]


class ClientPool:
    """The TikTok clients of one process: every job or watcher with the same proxy and cookies
    file shares one client, so TLS contexts and connection pools are made once, not per job.

    Options the process cannot honour raise; nothing is ever done without them. A sealed proxy
    that cannot be opened (no SECRET_KEY, another key, damaged) raises SecretError: going
    direct instead would show TikTok the IP the proxy is there to hide. A cookies file that
    cannot be loaded raises CookiesError. Both are ValueErrors, as is a proxy URL that opens
    but no client accepts, or one on a private address (ALLOW_PRIVATE_PROXIES off; a name
    resolving to one is refused at its first request: ProxyNotAllowed). No message quotes
    the proxy URL or a cookie value.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        idle_close: float = IDLE_CLOSE,
        clock: Callable[[], float] = time.monotonic,
        observe: Observer | None = None,
    ) -> None:
        self._settings = settings
        self._observe = observe
        self._idle_close = idle_close
        self._clock = clock
        self._used: dict[Key, float] = {}
        self._held: Counter[Key] = Counter()
        self._swept = clock()
        self._closing: set[asyncio.Task[None]] = set()
        # A malformed SECRET_KEY raises SecretError here: a misconfigured process fails at start.
        self._secrets = SecretBox(settings.secret_key) if settings.secret_key else None
        self._signer = signer_from_settings(settings)
        self._clients: dict[Key, TikTokClient] = {}
        self._closed = False

    def client(self, options: RecordingOptions) -> TikTokClient:
        """The shared client for ``options.proxy`` and ``options.cookies`` (made on first use).

        Raises SecretError (proxy), CookiesError (cookies), ValueError (unusable proxy URL).
        """
        if self._closed:
            msg = "the TikTok client pool is closed"
            raise RuntimeError(msg)
        key = self._key(options)
        proxy = key[0]
        self._used[key] = self._clock()
        self._close_idle()
        client = self._clients.get(key)
        if client is None:
            cookies = (
                load_cookies(options.cookies, self._settings.cookies_dir)
                if options.cookies
                else None
            )
            sealed = options.proxy
            trace = None
            if self._observe is not None:
                observe = self._observe
                trace = lambda step: observe(sealed, step)  # noqa: E731
            client = client_from_settings(
                self._settings, proxy=proxy, cookies=cookies, signer=self._signer, trace=trace
            )
            self._clients[key] = client
        return client

    @contextlib.contextmanager
    def holding(self, options: RecordingOptions) -> Iterator[TikTokClient]:
        """The client for ``options``, kept open (never closed as idle) while held: a
        recording holds it for as long as it streams through it."""
        client = self.client(options)
        key = self._key(options)
        self._held[key] += 1
        try:
            yield client
        finally:
            self._held[key] -= 1
            self._used[key] = self._clock()

    @property
    def size(self) -> int:
        """How many clients are open."""
        return len(self._clients)

    def _key(self, options: RecordingOptions) -> Key:
        return (self._proxy(options), options.cookies)

    def _close_idle(self) -> None:
        now = self._clock()
        if now - self._swept < _SWEEP_EVERY:
            return
        self._swept = now
        for key in [k for k, used in self._used.items() if now - used >= self._idle_close]:
            if self._held[key] > 0:
                continue
            self._used.pop(key)
            client = self._clients.pop(key, None)
            if client is not None:
                task = asyncio.get_running_loop().create_task(client.aclose())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    def egress(self, options: RecordingOptions) -> str:
        """Where requests for ``options`` leave from: ``direct`` or ``proxy-<8 hex>``, a label
        that names the proxy without showing it (metrics, logs, the scheduler's budget).

        Raises SecretError like :meth:`client`.
        """
        proxy = self._proxy(options)
        if proxy is None:
            return DIRECT
        return "proxy-" + hashlib.sha256(proxy.encode()).hexdigest()[:8]

    async def aclose(self) -> None:
        """Close every client and the signer; the pool makes no client afterwards."""
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        if self._signer is not None:
            await self._signer.aclose()

    def _proxy(self, options: RecordingOptions) -> str | None:
        if options.proxy is None:
            return None
        if self._secrets is None:
            msg = "options.proxy is sealed but this process has no SECRET_KEY"
            raise SecretError(msg)
        try:
            return self._secrets.unseal(options.proxy)
        except SecretError as exc:
            # SecretBox's reason (another key or damaged, not sealed) never quotes the value.
            msg = f"options.proxy cannot be used: {exc}"
            raise SecretError(msg) from exc
