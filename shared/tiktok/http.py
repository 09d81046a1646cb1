"""How the TikTok client talks HTTP: browser headers, cookies, redirects, the WAF, metrics.

Two kinds of request, as a browser makes them:

- API calls (webcast, api-live): an XHR from the web app, ``Origin``/``Referer`` of
  www.tiktok.com, no redirect followed (a 302 there is information);
- www pages (``/@user``, ``/@user/live``): a top-level navigation (``Sec-Fetch-Mode:
  navigate``, no ``Origin``); redirects inside TikTok are followed (case, trailing slash,
  locale), one to ``/login`` is a country block; a SlardarWAF proof-of-work page is solved in a
  thread and the page fetched again with the answer. With ``impersonate`` set, pages go
  through curl_cffi with a real browser's TLS fingerprint (yt-dlp does the same, #14473).

Cookies are exactly the configured ones (plus a WAF answer for the one request it is good
for): cookies a response sets are never kept, so no request carries state from another.

Egress (``shared.tiktok.guards``): a proxy on a private address is refused (a literal one when
the client is made, a name before the first request), and the client's stream GETs go only to
the allowed stream hosts. A transport failure is reported with a fixed phrase; its text, which
a proxy could fill, goes to the log only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookiejar import CookieJar
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

import httpx

from shared.egress import Refusal, StreamPolicy, ip_of, proxy_refusal
from shared.logging import get_logger, redact_text
from shared.tiktok import waf
from shared.tiktok.errors import (
    CountryBlocked,
    NetworkTimeout,
    ProxyNotAllowed,
    TikTokError,
    UnexpectedResponse,
    WafBlocked,
)
from shared.tiktok.guards import ProxyGuard, ProxyRefused, StreamGuard, transport_reason
from shared.tiktok.metrics import OUTCOME_OK, Endpoint, count_request
from shared.tiktok.targets import is_tiktok_host

log = get_logger(__name__)

# A current desktop Chrome (late 2026); TIKTOK_USER_AGENT overrides it.
DEFAULT_USER_AGENT: Final = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
)
TIKTOK_ORIGIN: Final = "https://www.tiktok.com"
MAX_BODY_BYTES: Final = 8 * 1024 * 1024  # live pages are ~1 MB; anything far larger is wrong
MAX_PAGE_REDIRECTS: Final = 5
PROXY_SCHEMES: Final = ("http", "https", "socks5", "socks5h")
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})

_JSON_ACCEPT = "application/json, text/plain, */*"
_HTML_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    "image/apng,*/*;q=0.8"
)
_LANGUAGE = "en-US,en;q=0.9"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: httpx.Headers
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(slots=True)
class Step:
    """One request as ``tlr check`` shows it: what was asked and what came back."""

    endpoint: str
    url: str
    http_status: int | None = None
    outcome: str = ""
    waf: str | None = None  # "solved", "unsolvable" or "refused" when a challenge was met
    elapsed_ms: float = 0.0


Trace = Callable[[Step], None]


class _NoJar(CookieJar):
    """A jar that keeps nothing: each request carries exactly the cookies we choose."""

    def extract_cookies(self, response: Any, request: Any) -> None:  # noqa: ARG002
        return None

    def add_cookie_header(self, request: Any) -> None:  # noqa: ARG002
        return None


def _chrome_hints(user_agent: str) -> dict[str, str]:
    """The client hints a Chrome with this User-Agent sends; none for other browsers."""
    marker = "Chrome/"
    if marker not in user_agent or "Edg/" in user_agent:
        return {}
    major = user_agent.split(marker, 1)[1].split(".", 1)[0]
    if not major.isdigit():
        return {}
    platform = "Windows" if "Windows" in user_agent else "macOS" if "Mac OS" in user_agent else ""
    hints = {
        "sec-ch-ua": f'"Chromium";v="{major}", "Google Chrome";v="{major}", "Not_A Brand";v="99"',
        "sec-ch-ua-mobile": "?0",
    }
    if platform:
        hints["sec-ch-ua-platform"] = f'"{platform}"'
    return hints


def _strip_query(url: str) -> str:
    """The URL without its query: stream signatures and ids stay out of traces."""
    return url.split("?", 1)[0]


class Requester:
    """One HTTP identity (proxy, cookies, User-Agent) towards TikTok; ``aclose()`` it.

    ``stream_policy``: where the client's stream GETs may go (default: TikTok's CDNs, no
    private address). ``allow_private_proxy``: accept a proxy on a private address.
    """

    def __init__(
        self,
        *,
        web_base: str,
        proxy: str | None = None,
        cookies: dict[str, str] | None = None,
        timeout: float = 10.0,
        user_agent: str = DEFAULT_USER_AGENT,
        impersonate: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        trace: Trace | None = None,
        stream_policy: StreamPolicy | None = None,
        allow_private_proxy: bool = False,
    ) -> None:
        if proxy is not None and urlsplit(proxy).scheme.lower() not in PROXY_SCHEMES:
            # The URL itself is not repeated: it may carry a password.
            msg = f"proxy URL scheme must be one of {', '.join(PROXY_SCHEMES)}"
            raise ValueError(msg)
        self._proxy_guard = _proxy_guard(proxy, allow_private_proxy)
        hooks: list[Callable[[httpx.Request], Any]] = []
        if self._proxy_guard is not None:
            hooks.append(self._proxy_guard)
        policy = stream_policy if stream_policy is not None else StreamPolicy()
        hooks.append(StreamGuard(policy, via_proxy=proxy is not None))
        self._web_host = urlsplit(web_base).netloc
        self._cookies = {k: v for k, v in (cookies or {}).items() if v}
        self._trace = trace
        self._user_agent = user_agent
        self._hints = _chrome_hints(user_agent)
        try:
            self._http = httpx.AsyncClient(
                headers={"User-Agent": user_agent, "Accept-Language": _LANGUAGE},
                cookies=_NoJar(),
                proxy=proxy,
                timeout=httpx.Timeout(timeout),
                follow_redirects=False,
                trust_env=False,  # proxy=None always means a direct connection
                transport=transport,
                event_hooks={"request": hooks},
            )
        except (ValueError, ImportError, httpx.InvalidURL):
            msg = "invalid proxy URL (for socks5, install httpx[socks])"
            raise ValueError(msg) from None
        self._browser = _Impersonating(impersonate, proxy, timeout) if impersonate else None

    @property
    def http(self) -> httpx.AsyncClient:
        """The plain client (same proxy, no cookies): what pulls the FLV itself."""
        return self._http

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._browser is not None:
            await self._browser.aclose()

    # --- requests ------------------------------------------------------------------------

    async def api(
        self,
        endpoint: Endpoint,
        url: str,
        params: dict[str, str] | None = None,
        *,
        referer: str | None = None,
        user_agent: str | None = None,
    ) -> Reply:
        """An XHR of the web app: 200 or a TikTokError (403/429 are the edge refusing us).
        ``user_agent`` replaces ours where a signature is bound to another one."""
        headers = {
            "Accept": _JSON_ACCEPT,
            "Origin": TIKTOK_ORIGIN,
            "Referer": referer or f"{TIKTOK_ORIGIN}/",
            "Sec-Fetch-Dest": "empty",
            "Sec-Fetch-Mode": "cors",
            "Sec-Fetch-Site": "same-origin" if "/api-live/" in url else "same-site",
            **(_chrome_hints(user_agent) if user_agent else self._hints),
            **self._cookie_header(None),
        }
        if user_agent:
            headers["User-Agent"] = user_agent
        with self.observe(endpoint, url) as step:
            reply = await self._get_httpx(step, url, params, headers)
            expect_ok(reply, endpoint)
            return reply

    async def page(self, endpoint: Endpoint, url: str) -> Reply:
        """A www page as a browser navigates to it: redirects within TikTok followed, a
        redirect to /login is CountryBlocked, a WAF challenge solved once (WafBlocked if the
        answer is refused or the page is an unsolvable block)."""
        extra: dict[str, str] | None = None
        solved = False
        for _ in range(MAX_PAGE_REDIRECTS + 2):
            with self.observe(endpoint, url) as step:
                reply = await self._navigate(step, url, extra)
                extra = None
                if reply.status in REDIRECTS:
                    url = self._follow(endpoint, url, reply)
                    continue
                expect_ok(reply, endpoint)
                challenge = _challenge_of(reply, endpoint)
                if challenge is None:
                    if solved:
                        step.waf = "passed"
                    return reply
                if solved:
                    step.waf = "refused"
                    raise WafBlocked(endpoint=endpoint, reason="challenge answer refused")
                try:
                    extra = await waf.solve_in_thread(challenge)
                except waf.ChallengeError as exc:
                    step.waf = "unsolvable"
                    raise WafBlocked(endpoint=endpoint, reason=str(exc)) from None
                step.waf = "solved"
                solved = True
        detail = f"more than {MAX_PAGE_REDIRECTS} redirects"
        raise UnexpectedResponse(endpoint=endpoint, detail=detail)

    async def raw(self, step: Step, url: str) -> Reply:
        """One navigation, nothing followed or solved (short links: the caller reads the
        ``Location`` itself, one hop at a time)."""
        return await self._navigate(step, url, None)

    def _follow(self, endpoint: Endpoint, url: str, reply: Reply) -> str:
        location = urljoin(url, str(reply.headers.get("location", "")))
        parts = urlsplit(location)
        if parts.path.rstrip("/") == "/login":
            raise CountryBlocked(target=_strip_query(url))
        if parts.netloc != self._web_host and not is_tiktok_host(parts.hostname):
            detail = "redirect away from TikTok"
            raise UnexpectedResponse(endpoint=endpoint, detail=detail)
        return location

    async def _navigate(self, step: Step, url: str, extra: dict[str, str] | None) -> Reply:
        headers = {
            "Accept": _HTML_ACCEPT,
            "Sec-Fetch-Dest": "document",
            "Sec-Fetch-Mode": "navigate",
            "Sec-Fetch-Site": "none",
            "Sec-Fetch-User": "?1",
            "Upgrade-Insecure-Requests": "1",
            **self._cookie_header(extra),
        }
        if self._browser is not None:
            # Its User-Agent and client hints match its TLS fingerprint; ours would not. It is
            # no httpx client: the proxy is checked here, as the hook does for httpx.
            if self._proxy_guard is not None:
                try:
                    await self._proxy_guard.check()
                except ProxyRefused:
                    raise ProxyNotAllowed from None
            return await self._browser.get(step, url, headers)
        return await self._get_httpx(step, url, None, {**headers, **self._hints})

    def _cookie_header(self, extra: dict[str, str] | None) -> dict[str, str]:
        cookies = {**self._cookies, **(extra or {})}
        if not cookies:
            return {}
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}

    async def _get_httpx(
        self, step: Step, url: str, params: dict[str, str] | None, headers: dict[str, str]
    ) -> Reply:
        try:
            async with self._http.stream("GET", url, params=params, headers=headers) as response:
                step.http_status = response.status_code
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        detail = f"body larger than {MAX_BODY_BYTES} bytes"
                        raise UnexpectedResponse(endpoint=step.endpoint, detail=detail)
                    chunks.append(chunk)
                return Reply(response.status_code, response.headers, b"".join(chunks))
        except ProxyRefused:
            raise ProxyNotAllowed from None
        except httpx.TransportError as exc:
            raise NetworkTimeout(endpoint=step.endpoint, reason=_failed(step, exc)) from None
        except httpx.HTTPError as exc:
            raise UnexpectedResponse(endpoint=step.endpoint, detail=type(exc).__name__) from None

    # --- observation ---------------------------------------------------------------------

    @contextmanager
    def observe(self, endpoint: Endpoint, url: str, **fields: object) -> Iterator[Step]:
        """Count, log and trace one request; non-TikTok exceptions become
        UnexpectedResponse so callers only ever see TikTokError."""
        step = Step(endpoint=endpoint, url=_strip_query(url))
        started = time.monotonic()
        outcome = "cancelled"  # stays so only if a BaseException (cancellation) goes through
        try:
            yield step
            outcome = OUTCOME_OK
        except TikTokError as exc:
            outcome = exc.outcome
            raise
        except Exception as exc:
            detail = f"cannot process the answer ({type(exc).__name__})"
            wrapped = UnexpectedResponse(endpoint=endpoint, detail=detail)
            outcome = wrapped.outcome
            log.warning("tiktok.parse_failed", endpoint=endpoint, exc_info=True)
            raise wrapped from exc
        finally:
            step.outcome = outcome
            step.elapsed_ms = round((time.monotonic() - started) * 1000, 1)
            count_request(endpoint, outcome)
            log.debug(
                "tiktok.request",
                endpoint=endpoint,
                outcome=outcome,
                http_status=step.http_status,
                waf=step.waf,
                elapsed_ms=step.elapsed_ms,
                **fields,
            )
            if self._trace is not None:
                self._trace(step)


def _failed(step: Step, exc: Exception) -> str:
    """Log a transport failure with its text; return the fixed phrase an answer may carry."""
    # redact_text: a proxy error could quote the proxy URL with its password.
    detail = redact_text(str(exc))[:300] or type(exc).__name__
    log.warning("tiktok.transport_failed", endpoint=step.endpoint, error=detail)
    return transport_reason(exc)


def _proxy_guard(proxy: str | None, allow_private: bool) -> ProxyGuard | None:
    """The hook that checks ``proxy``'s addresses, if it has a name to resolve.

    Raises:
        ValueError: a proxy on a private address (ClientPool documents a ValueError for
            options it cannot use), or a host that is no host name nor IP address.
    """
    if proxy is None:
        return None
    parts = urlsplit(proxy)
    host = parts.hostname or ""
    refusal = proxy_refusal(host, allow_private=allow_private)
    if refusal == Refusal.PRIVATE_ADDRESS:
        raise ValueError(ProxyNotAllowed().message)
    if refusal is not None:
        # 2130706433 and the like: the C resolver reads them as (any) IP address.
        msg = "proxy host must be a host name or an IP address"
        raise ValueError(msg)
    if allow_private or ip_of(host) is not None:
        return None  # nothing to resolve: allowed anyway, or a public address
    return ProxyGuard(host, 0)


def _challenge_of(reply: Reply, endpoint: Endpoint) -> waf.Challenge | None:
    """The WAF challenge of a 200 page, if it is one (malformed ones are WafBlocked)."""
    head = reply.body[:65536].decode("utf-8", "replace")
    try:
        challenge = waf.parse_challenge(head)
    except waf.ChallengeError as exc:
        waf.WAF_CHALLENGES.labels(outcome="malformed").inc()
        raise WafBlocked(endpoint=endpoint, reason=str(exc)) from None
    return challenge


def expect_ok(reply: Reply, endpoint: Endpoint) -> None:
    """HTTP-level verdict: TikTok answers 200 even for its own errors, so 403 and 429 are the
    edge refusing us (WafBlocked) and anything else but 200 is unexpected."""
    if reply.status == 200:
        return
    if reply.status in (403, 429):
        retry_after = reply.headers.get("retry-after", "")
        delay = float(retry_after) if retry_after.isdigit() else None
        raise WafBlocked(endpoint=endpoint, reason=f"HTTP {reply.status}", retry_after=delay)
    raise UnexpectedResponse(endpoint=endpoint, detail=f"HTTP {reply.status}")


class _Impersonating:
    """www pages through curl_cffi with a browser's TLS/HTTP2 fingerprint."""

    def __init__(self, target: str, proxy: str | None, timeout: float) -> None:
        from curl_cffi.requests import AsyncSession  # only loaded when configured

        self._session: Any = AsyncSession(impersonate=target, proxy=proxy, timeout=timeout)

    async def aclose(self) -> None:
        await self._session.close()

    async def get(self, step: Step, url: str, headers: dict[str, str]) -> Reply:
        from curl_cffi.requests.exceptions import RequestException

        try:
            response = await self._session.get(
                url, headers=headers, allow_redirects=False, max_recv_speed=0
            )
        except RequestException as exc:
            raise NetworkTimeout(endpoint=step.endpoint, reason=_failed(step, exc)) from None
        finally:
            self._session.cookies.clear()  # like _NoJar: nothing carries over
        step.http_status = response.status_code
        body = response.content
        if len(body) > MAX_BODY_BYTES:
            detail = f"body larger than {MAX_BODY_BYTES} bytes"
            raise UnexpectedResponse(endpoint=step.endpoint, detail=detail)
        plain = httpx.Headers(list(response.headers.items()))
        return Reply(response.status_code, plain, body)
