"""The async TikTok client: resolve targets, batch-check rooms, read room info (TIKTOK.md §2, §6).

Production and tests differ only in ``web_base`` and ``webcast_base``. Rules this client keeps:

- ``@user`` targets resolve through the profile page, then the live page, then api-live (only
  with a signer): each step moves on after a WAF page, an empty or an unexpected body.
- "Not found" is believed only when two sources say it (TikTok has sent 19881007 for live
  users, pages without ``LiveRoom`` when it soft-blocks, 10011 for some 18+ rooms).
- A positive ``check_alive`` is only a hint (it said "alive" for every id in 2026-07, #454):
  ``confirm_live`` re-reads ``room/info`` before anyone starts recording.
- ``room/info`` answering 4003110 to a flagged IP is not the end: the live page (or signed
  api-live) carries the same stream URLs when the user is known (upstream 7.7).
- Paused rooms (status 3) are live-but-paused, never ended.
- Every failure is a TikTokError with an ErrorCode; httpx exceptions never escape.
- Cookie values and proxy credentials are never logged nor put in error messages.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Final
from urllib.parse import urlencode, urljoin, urlsplit

import httpx

from shared.egress import StreamPolicy
from shared.logging import get_logger
from shared.tiktok.errors import (
    AgeRestricted,
    CountryBlocked,
    LiveOffline,
    TikTokError,
    UnexpectedResponse,
    UserNotFound,
    WafBlocked,
)
from shared.tiktok.http import DEFAULT_USER_AGENT, REDIRECTS, Requester, Trace, expect_ok
from shared.tiktok.models import RoomInfo, RoomRef
from shared.tiktok.parsing import (
    PageState,
    parse_check_alive,
    parse_live_page,
    parse_profile_page,
    parse_room_info,
    parse_user_room,
)
from shared.tiktok.signer import Signer
from shared.tiktok.targets import Target, is_room_id, parse_target, parse_url, unique_id_of

log = get_logger(__name__)

WEB_AID: Final = "1988"  # TikTok's web app id, sent on every api-live and webcast call
# No documented limit exists; 50 ids per check_alive call is the safe default callers use.
CHECK_ALIVE_BATCH: Final = 50
MAX_SHORT_LINK_HOPS: Final = 5
SESSION_COOKIES: Final = ("sessionid", "sessionid_ss", "sid_tt")
# Two sources must agree before a user is "not found".
NOT_FOUND_SOURCES: Final = 2
_PAGE_USER_RE = re.compile(r"tiktok\.com/@([A-Za-z0-9_.]{1,24})")

__all__ = ["CHECK_ALIVE_BATCH", "DEFAULT_USER_AGENT", "TikTokClient"]


class TikTokClient:
    """Async client of one HTTP identity (use ``async with``, or ``aclose()``).

    ``cookies`` are sent on every request to TikTok (never to the CDN). ``proxy`` is any URL
    httpx accepts (http, https, socks5). Environment proxy variables are ignored so
    ``proxy=None`` always means a direct connection. ``impersonate`` (a curl_cffi target such
    as ``chrome``) fetches www pages with that browser's TLS fingerprint. ``signer`` enables
    api-live. ``trace`` sees every request (``tlr check``). ``transport`` is a test seam.
    ``stream_policy`` says where :attr:`http`'s stream GETs may go (default: TikTok's CDNs,
    no private address); ``allow_private_proxy`` accepts a proxy on a private address.
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
        impersonate: str | None = None,
        signer: Signer | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        trace: Trace | None = None,
        stream_policy: StreamPolicy | None = None,
        allow_private_proxy: bool = False,
    ) -> None:
        self.web_base = _base_url(web_base, "web_base")
        self.webcast_base = _base_url(webcast_base, "webcast_base")
        self._logged_in = any((cookies or {}).get(name) for name in SESSION_COOKIES)
        self._signer = signer
        self._net = Requester(
            web_base=self.web_base,
            proxy=proxy,
            cookies=cookies,
            timeout=timeout,
            user_agent=user_agent,
            impersonate=impersonate,
            transport=transport,
            trace=trace,
            stream_policy=stream_policy,
            allow_private_proxy=allow_private_proxy,
        )

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
        """Close this client's connections (a shared signer is closed by its owner)."""
        await self._net.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        """The underlying client (same proxy, no cookies), for streaming the FLV itself; its
        requests marked ``guards.STREAM_REQUEST`` go only where ``stream_policy`` allows."""
        return self._net.http

    # --- resolving targets ---------------------------------------------------------------

    async def resolve(self, target: str) -> RoomRef:
        """A room reference for a room id, ``@user``/``user`` or TikTok URL (ValueError for
        anything else). A room id is returned as is, without a request: a country-blocked
        www must not stop a room id target (webcast keeps working).

        The room id may be stale or None: ``confirm_live`` says whether it is live.
        """
        parsed = parse_target(target)
        if parsed.kind == "short_link":
            parsed = await self._follow_short_link(parsed.value)
        if parsed.kind == "room_id":
            return RoomRef(room_id=parsed.value, unique_id=None)
        return (await self._resolve_user(parsed.value)).ref

    async def profile_page(self, unique_id: str) -> PageState:
        """The profile page ``/@user`` (yt-dlp's first step)."""
        unique_id = unique_id_of(unique_id)
        reply = await self._net.page("profile_page", f"{self.web_base}/@{unique_id}")
        return parse_profile_page(reply.text(), unique_id)

    async def live_page(self, unique_id: str) -> PageState:
        """The ``/@user/live`` page: CountryBlocked on a redirect to /login, WafBlocked on an
        unsolved challenge, UserNotFound without LiveRoom."""
        unique_id = unique_id_of(unique_id)
        reply = await self._net.page("live_page", f"{self.web_base}/@{unique_id}/live")
        return parse_live_page(reply.text(), unique_id)

    async def user_room(self, unique_id: str) -> PageState:
        """api-live ``user/room``, signed when a signer is configured (unsigned, TikTok
        answers an empty body: WafBlocked). UserNotFound on 19881007."""
        unique_id = unique_id_of(unique_id)
        params = {"aid": WEB_AID, "sourceType": "54", "uniqueId": unique_id}
        url = f"{self.web_base}/api-live/user/room/?{urlencode(params)}"
        agent = None
        if self._signer is not None:
            with self._net.observe("signer", url):
                signed = await self._signer.sign(url)
            url, agent = signed.url, signed.user_agent
        referer = f"{self.web_base}/@{unique_id}/live"
        reply = await self._net.api("user_room", url, referer=referer, user_agent=agent)
        return parse_user_room(reply.body, unique_id)

    async def _resolve_user(self, unique_id: str) -> PageState:
        steps: list[Callable[[str], Awaitable[PageState]]] = [self.profile_page, self.live_page]
        if self._signer is not None:
            steps.append(self.user_room)
        not_found: list[UserNotFound] = []
        blocked: CountryBlocked | None = None
        failure: TikTokError | None = None
        for step in steps:
            try:
                return await step(unique_id)
            except UserNotFound as exc:
                not_found.append(exc)
                if len(not_found) >= NOT_FOUND_SOURCES:
                    detail = "; ".join(str(e) for e in not_found)
                    raise UserNotFound(target=f"@{unique_id}", detail=detail) from None
            except CountryBlocked as exc:
                blocked = exc
            except TikTokError as exc:
                if not exc.retryable:
                    raise
                failure = exc
            log.info("tiktok.resolve_next", unique_id=unique_id, step=step.__name__)
        if failure is not None:
            raise failure
        if blocked is not None:
            raise blocked
        # One "not found" alone is not believed: TikTok says it of live users at times.
        detail = f"only one source says @{unique_id} does not exist; not confirmed"
        raise UnexpectedResponse(endpoint="resolve", detail=detail)

    async def _follow_short_link(self, url: str) -> Target:
        """Follow vm/vt.tiktok.com redirects by hand, one TikTok host at a time, until a
        location names a user or room; never fetch the final www page itself."""
        for _ in range(MAX_SHORT_LINK_HOPS):
            with self._net.observe("short_link", url) as step:
                reply = await self._net.raw(step, url)
                if reply.status in REDIRECTS:
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
                expect_ok(reply, "short_link")
                # Some short links answer 200 with the canonical URL in the page.
                match = _PAGE_USER_RE.search(reply.text())
                if match is None:
                    raise UnexpectedResponse(endpoint="short_link", detail="page names no user")
                return Target("user", match.group(1))
        detail = f"more than {MAX_SHORT_LINK_HOPS} redirects"
        raise UnexpectedResponse(endpoint="short_link", detail=detail)

    # --- rooms ---------------------------------------------------------------------------

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
        reply = await self._net.api("check_alive", url, params)
        return parse_check_alive(reply.body, ids)

    async def room_info(self, room_id: str) -> RoomInfo:
        """``webcast/room/info`` for one room, whatever its status (2 live, 3 paused, 4 ended).

        4003110 is AgeRestricted (private if the body says to follow the creator); an empty
        or HTML body WafBlocked. 10011 ("Request params error") is UserNotFound only once
        ``check_alive`` does not know the room either: TikTok answers 10011 for some 18+
        rooms (TikTokLive #228), which then count as AgeRestricted.
        """
        _check_room_id(room_id)
        params = {"aid": WEB_AID, "room_id": room_id}
        url = f"{self.webcast_base}/webcast/room/info/"
        try:
            reply = await self._net.api("room_info", url, params)
            return parse_room_info(reply.body, room_id, logged_in=self._logged_in)
        except UserNotFound as exc:
            try:
                alive = await self.check_alive([room_id])
            except WafBlocked as unknown:
                if "no asked room id" not in str(unknown):
                    raise
                raise exc from None  # check_alive does not know it either: confirmed
            if alive.get(room_id):
                raise AgeRestricted(room_id=room_id, logged_in=self._logged_in) from None
            raise LiveOffline(target=f"room {room_id}") from None

    async def live_info(self, room_id: str, unique_id: str | None = None) -> RoomInfo:
        """``room_info``; when it answers 4003110 and the user is known, the same room as the
        live page (or signed api-live) shows it, stream URLs included (upstream 7.7).

        The 4003110 stands when no page shows this room with streams: an 18+ LIVE without a
        logged-in cookie is withheld there too.
        """
        try:
            return await self.room_info(room_id)
        except AgeRestricted as restricted:
            if unique_id is None or restricted.private:
                raise
            live = await self._page_live(unique_id, room_id)
            if live is None:
                raise
            log.info("tiktok.room_info_fallback", room_id=room_id, source=live.source)
            return live

    async def _page_live(self, unique_id: str, room_id: str) -> RoomInfo | None:
        pages: list[Callable[[str], Awaitable[PageState]]] = [self.live_page]
        if self._signer is not None:
            pages.append(self.user_room)
        for page in pages:
            try:
                live = (await page(unique_id)).live
            except TikTokError as exc:
                log.info("tiktok.fallback_failed", step=page.__name__, error_code=exc.code)
                continue
            if live is not None and live.room_id == room_id and (live.streams or live.has_ended):
                return live
        return None

    async def confirm_live(self, room_id: str, unique_id: str | None = None) -> RoomInfo:
        """``live_info``, raising LiveOffline unless the room is live (2) or paused (3).

        This is the confirmation every positive ``check_alive`` needs before recording.
        A paused room is returned: it is not over, and the caller decides whether to wait.
        """
        info = await self.live_info(room_id, unique_id)
        if info.is_live or info.is_paused:
            return info
        raise LiveOffline(target=f"room {room_id}", status=info.status)


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
