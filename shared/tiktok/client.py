"""The async TikTok client: resolve targets, batch-check rooms, read room info (TIKTOK.md §2).

Production and tests differ only in ``web_base`` and ``webcast_base``. Rules this client keeps:

- A positive ``check_alive`` is only a hint (it said "alive" for every id in 2026-07, #454):
  ``confirm_live`` re-reads ``room/info`` before anyone starts recording.
- Paused rooms (status 3) are live-but-paused, never ended.
- Every failure is a TikTokError with an ErrorCode; httpx exceptions never escape.
- Cookie values and proxy credentials are never logged nor put in error messages.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Final
from urllib.parse import urljoin, urlsplit

import httpx

from shared.logging import get_logger, redact_text
from shared.tiktok.errors import (
    CountryBlocked,
    LiveOffline,
    NetworkTimeout,
    TikTokError,
    UnexpectedResponse,
    WafBlocked,
)
from shared.tiktok.metrics import OUTCOME_OK, Endpoint, count_request
from shared.tiktok.models import RoomInfo, RoomRef
from shared.tiktok.parsing import (
    parse_check_alive,
    parse_live_page,
    parse_profile_page,
    parse_room_info,
    parse_user_room,
)
from shared.tiktok.targets import Target, is_room_id, parse_target, parse_url, unique_id_of

log = get_logger(__name__)

DEFAULT_USER_AGENT: Final = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/136.0.0.0 Safari/537.36"
)
# Referer and Origin are TikTok's own even against the fake: the real site checks them.
TIKTOK_ORIGIN: Final = "https://www.tiktok.com"
WEB_AID: Final = "1988"  # TikTok's web app id, sent on every api-live and webcast call
# No documented limit exists; 50 ids per check_alive call is the safe default callers use.
CHECK_ALIVE_BATCH: Final = 50
MAX_BODY_BYTES: Final = 8 * 1024 * 1024  # live pages are ~1 MB; anything far larger is wrong
MAX_SHORT_LINK_HOPS: Final = 5
SESSION_COOKIES: Final = ("sessionid", "sessionid_ss", "sid_tt")
PROXY_SCHEMES: Final = ("http", "https", "socks5", "socks5h")

_JSON_ACCEPT = "application/json, text/plain, */*"
_HTML_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PAGE_USER_RE = re.compile(r"tiktok\.com/@([A-Za-z0-9_.]{1,24})")


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    headers: httpx.Headers
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(slots=True)
class _Call:
    """One observed request: filled in by _get, read by _observe for the log line."""

    endpoint: Endpoint
    http_status: int | None = None


class TikTokClient:
    """Async client over one ``httpx.AsyncClient`` (use ``async with``, or ``aclose()``).

    ``cookies`` are sent on every request (all requests go to TikTok). ``proxy`` is any URL
    httpx accepts (http, https, socks5 with the socksio extra). Environment proxy variables
    are ignored so ``proxy=None`` always means a direct connection. ``transport`` is a test
    seam (httpx.MockTransport); production leaves it None.
    """

    def __init__(
        self,
        *,
        web_base: str,
        webcast_base: str,
        proxy: str | None = None,
        cookies: dict[str, str] | None = None,
        timeout: float = 10.0,
        user_agent: str = DEFAULT_USER_AGENT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.web_base = _base_url(web_base, "web_base")
        self.webcast_base = _base_url(webcast_base, "webcast_base")
        self._logged_in = any((cookies or {}).get(name) for name in SESSION_COOKIES)
        headers = {
            "User-Agent": user_agent,
            "Referer": f"{TIKTOK_ORIGIN}/",
            "Origin": TIKTOK_ORIGIN,
            "Accept-Language": "en-US,en;q=0.9",
            "Accept": _JSON_ACCEPT,
        }
        if proxy is not None and urlsplit(proxy).scheme.lower() not in PROXY_SCHEMES:
            # The URL itself is not repeated: it may carry a password.
            msg = f"proxy URL scheme must be one of {', '.join(PROXY_SCHEMES)}"
            raise ValueError(msg)
        try:
            self._http = httpx.AsyncClient(
                headers=headers,
                cookies=cookies,
                proxy=proxy,
                timeout=httpx.Timeout(timeout),
                follow_redirects=False,  # a 302 is information here (country block, short link)
                trust_env=False,
                transport=transport,
            )
        except (ValueError, ImportError, httpx.InvalidURL):
            msg = "invalid proxy URL (for socks5, install httpx[socks])"
            raise ValueError(msg) from None

    async def __aenter__(self) -> TikTokClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        """The underlying client (same proxy and cookies), for streaming the FLV itself."""
        return self._http

    # --- public API ----------------------------------------------------------------------

    async def resolve(self, target: str) -> RoomRef:
        """A room reference for a room id, ``@user``/``user`` or TikTok URL (ValueError for
        anything else). A room id is returned as is, without a request: a country-blocked
        www must not stop a room id target (webcast keeps working).

        Users go through api-live ``user/room`` first; if TikTok blocks or garbles it, the
        ``/@user/live`` page; if that redirects to login (country block), the profile page.
        The room id may be stale or None: ``confirm_live`` says whether it is live.
        """
        parsed = parse_target(target)
        if parsed.kind == "short_link":
            parsed = await self._follow_short_link(parsed.value)
        if parsed.kind == "room_id":
            return RoomRef(room_id=parsed.value, unique_id=None)
        return await self._resolve_user(parsed.value)

    async def user_room(self, unique_id: str) -> RoomRef:
        """api-live ``user/room`` only: UserNotFound, WafBlocked on an empty/HTML body,
        UnexpectedResponse on an unknown shape."""
        unique_id = unique_id_of(unique_id)
        params = {"aid": WEB_AID, "sourceType": "54", "uniqueId": unique_id}
        with self._observe("user_room") as call:
            reply = await self._get(call, f"{self.web_base}/api-live/user/room/", params)
            _expect_ok(reply, "user_room")
            return parse_user_room(reply.body, unique_id)

    async def live_page_room(self, unique_id: str) -> RoomRef:
        """The ``/@user/live`` page only: CountryBlocked on a redirect, WafBlocked on a
        challenge page, UserNotFound without LiveRoom."""
        unique_id = unique_id_of(unique_id)
        with self._observe("live_page") as call:
            reply = await self._get(call, f"{self.web_base}/@{unique_id}/live", page=True)
            if reply.status in _REDIRECTS:
                raise CountryBlocked(target=f"@{unique_id}")
            _expect_ok(reply, "live_page")
            return parse_live_page(reply.text(), unique_id)

    async def check_alive(self, room_ids: Sequence[str]) -> dict[str, bool]:
        """One ``check_alive`` request for all ``room_ids`` (callers batch, ≤ CHECK_ALIVE_BATCH
        is the safe default): ``{room_id: alive}``; ids TikTok omits are absent. If it omits
        every id, WafBlocked (see parse_check_alive). ``alive`` is a hint: confirm_live it.
        """
        ids = list(dict.fromkeys(room_ids))  # de-duplicated, order kept
        for room_id in ids:
            _check_room_id(room_id)
        if not ids:
            return {}
        params = {
            "aid": WEB_AID,
            "region": "CH",  # what the CLI sends; answers do not depend on it
            "room_ids": ",".join(ids),
            "user_is_login": "true",
        }
        url = f"{self.webcast_base}/webcast/room/check_alive/"
        with self._observe("check_alive", rooms=len(ids)) as call:
            reply = await self._get(call, url, params)
            _expect_ok(reply, "check_alive")
            return parse_check_alive(reply.body, ids)

    async def room_info(self, room_id: str) -> RoomInfo:
        """``webcast/room/info`` for one room, whatever its status (2 live, 3 paused, 4 ended).

        4003110 is AgeRestricted (private if the body says to follow the creator), 10011
        (unknown room id) UserNotFound, an empty or HTML body WafBlocked.
        """
        _check_room_id(room_id)
        params = {"aid": WEB_AID, "room_id": room_id}
        with self._observe("room_info", room_id=room_id) as call:
            reply = await self._get(call, f"{self.webcast_base}/webcast/room/info/", params)
            _expect_ok(reply, "room_info")
            return parse_room_info(reply.body, room_id, logged_in=self._logged_in)

    async def confirm_live(self, room_id: str) -> RoomInfo:
        """``room_info``, raising LiveOffline unless the room is live (2) or paused (3).

        This is the confirmation every positive ``check_alive`` needs before recording.
        A paused room is returned: it is not over, and the caller decides whether to wait.
        """
        info = await self.room_info(room_id)
        if info.is_live or info.is_paused:
            return info
        raise LiveOffline(target=f"room {room_id}", status=info.status)

    # --- resolution steps ----------------------------------------------------------------

    async def _resolve_user(self, unique_id: str) -> RoomRef:
        try:
            return await self.user_room(unique_id)
        except (WafBlocked, UnexpectedResponse) as exc:
            # Unsigned api-live calls are often refused; the HTML page is a second chance.
            log.info("tiktok.resolve_fallback", unique_id=unique_id, reason=exc.outcome)
        try:
            return await self.live_page_room(unique_id)
        except CountryBlocked as blocked:
            # Only LIVE pages are redirected; the profile may still name the room, and
            # webcast (room/info, check_alive) works from blocked countries.
            try:
                ref = await self._profile_room(unique_id)
            except TikTokError:
                raise blocked from None
            if ref.room_id is None:
                raise
            return ref

    async def _profile_room(self, unique_id: str) -> RoomRef:
        with self._observe("profile_page") as call:
            reply = await self._get(call, f"{self.web_base}/@{unique_id}", page=True)
            if reply.status in _REDIRECTS:
                raise CountryBlocked(target=f"@{unique_id}")
            _expect_ok(reply, "profile_page")
            return parse_profile_page(reply.text(), unique_id)

    async def _follow_short_link(self, url: str) -> Target:
        """Follow vm/vt.tiktok.com redirects by hand, one TikTok host at a time, until a
        location names a user or room; never fetch the final www page itself."""
        for _ in range(MAX_SHORT_LINK_HOPS):
            with self._observe("short_link") as call:
                reply = await self._get(call, url, page=True)
                if reply.status in _REDIRECTS:
                    location = urljoin(url, reply.headers.get("location", ""))
                    try:
                        target = parse_url(location)
                    except ValueError:
                        detail = "redirect to a page that names no user"
                        raise UnexpectedResponse(endpoint="short_link", detail=detail) from None
                    if target.kind != "short_link":
                        return target
                    url = target.value
                    continue
                _expect_ok(reply, "short_link")
                # Some short links answer 200 with the canonical URL in the page.
                match = _PAGE_USER_RE.search(reply.text())
                if match is None:
                    raise UnexpectedResponse(endpoint="short_link", detail="page names no user")
                return Target("user", match.group(1))
        detail = f"more than {MAX_SHORT_LINK_HOPS} redirects"
        raise UnexpectedResponse(endpoint="short_link", detail=detail)

    # --- plumbing ------------------------------------------------------------------------

    @contextmanager
    def _observe(self, endpoint: Endpoint, **fields: object) -> Iterator[_Call]:
        """Count and log one request's outcome; non-TikTok exceptions become
        UnexpectedResponse so callers only ever see TikTokError."""
        call = _Call(endpoint)
        started = time.monotonic()
        outcome = "cancelled"  # stays so only if a BaseException (cancellation) goes through
        try:
            yield call
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
            count_request(endpoint, outcome)
            log.debug(
                "tiktok.request",
                endpoint=endpoint,
                outcome=outcome,
                http_status=call.http_status,
                elapsed_ms=round((time.monotonic() - started) * 1000, 1),
                **fields,
            )

    async def _get(
        self,
        call: _Call,
        url: str,
        params: dict[str, str] | None = None,
        *,
        page: bool = False,
    ) -> _Reply:
        headers = {"Accept": _HTML_ACCEPT} if page else None
        try:
            async with self._http.stream("GET", url, params=params, headers=headers) as response:
                call.http_status = response.status_code
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        detail = f"body larger than {MAX_BODY_BYTES} bytes"
                        raise UnexpectedResponse(endpoint=call.endpoint, detail=detail)
                    chunks.append(chunk)
                return _Reply(response.status_code, response.headers, b"".join(chunks))
        except httpx.TransportError as exc:
            # redact_text: a proxy error could quote the proxy URL with its password.
            reason = redact_text(str(exc))[:200] or type(exc).__name__
            raise NetworkTimeout(endpoint=call.endpoint, reason=reason) from None
        except httpx.HTTPError as exc:
            raise UnexpectedResponse(endpoint=call.endpoint, detail=type(exc).__name__) from None


def _expect_ok(reply: _Reply, endpoint: Endpoint) -> None:
    """HTTP-level verdict: TikTok answers 200 even for its own errors, so 403 and 429 are the
    edge refusing us (WafBlocked) and anything else but 200 is unexpected."""
    if reply.status == 200:
        return
    if reply.status in (403, 429):
        retry_after = reply.headers.get("retry-after", "")
        delay = float(retry_after) if retry_after.isdigit() else None
        raise WafBlocked(endpoint=endpoint, reason=f"HTTP {reply.status}", retry_after=delay)
    raise UnexpectedResponse(endpoint=endpoint, detail=f"HTTP {reply.status}")


def _check_room_id(room_id: str) -> None:
    if not is_room_id(room_id):
        msg = f"not a TikTok room id (15-20 digits): {room_id!r}"
        raise ValueError(msg)


def _base_url(value: str, name: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        msg = f"{name} must be an http(s) URL"
        raise ValueError(msg)
    return value.rstrip("/")
