"""aiohttp app: every TikTok host's routes on one port (§5.2); control routes live apart."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from tlr.fake_tiktok import hostile, pages, payloads
from tlr.fake_tiktok.cdn import BACKUP_CDN_PREFIX, CDN_PREFIX, UrlMaker, stream_sign, top_quality
from tlr.fake_tiktok.context import CTX, FakeContext, get_ctx
from tlr.fake_tiktok.control_routes import add_control_routes
from tlr.fake_tiktok.media import Profile
from tlr.fake_tiktok.state import (
    RequestRecord,
    Room,
    RoomStatus,
    StreamConn,
    User,
)
from tlr.fake_tiktok.streamer import FlvStreamer

WEB_AID = "1988"
_STREAM_NAME_RE = re.compile(r"^stream-(?P<sid>\d+)(?P<sfx>_uhd5|_hd5|_sd5|_ld5)?\.flv$")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_RECORD = web.RequestKey("fake_tiktok_record", RequestRecord)
_BLOCKED = web.RequestKey("fake_tiktok_blocked", bool)
_EMPTY = web.RequestKey("fake_tiktok_empty", bool)  # blocked: the APIs answer empty bodies
# The header a test proxy (tests/http_proxy.py) tags the requests it forwards with.
EGRESS_HEADER = "X-Fake-Egress"


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(
        text=payloads.dumps(body), status=status, content_type="application/json", charset="utf-8"
    )


_html = hostile.html_response


def _empty_api_body() -> web.Response:
    # What TikTok's WAF gives API clients: 200 with nothing in it ("Expecting value ...").
    return web.Response(body=b"", content_type="application/json", charset="utf-8")


def _url_maker(request: web.Request) -> UrlMaker:
    ctx = get_ctx(request)
    scenario = ctx.state.scenario
    # Default to the address the client used, so URLs work through Docker port mappings too.
    base = scenario.cdn_base_url or ctx.public_base_url or f"{request.scheme}://{request.host}"
    expire = int(time.time()) + scenario.url_ttl_s
    return UrlMaker(base, expire, with_backup=scenario.backup_urls)


def _has_session_cookie(request: web.Request) -> bool:
    return bool(request.cookies.get("sessionid") or request.cookies.get("sessionid_ss"))


def _aid_ok(request: web.Request) -> bool:
    return request.query.get("aid") == WEB_AID


def _blocked(request: web.Request) -> bool:
    return bool(request.get(_BLOCKED, False))


def _profile_of(ctx: FakeContext, room: Room | None) -> Profile | None:
    return None if room is None else ctx.media.get(room.profile).profile


# --- middleware ----------------------------------------------------------------------------


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log TikTok-route requests and apply the WAF / rate-limit verdict, like TikTok's edge."""
    if request.path.startswith("/__fake/"):
        return await handler(request)
    ctx = get_ctx(request)
    state = ctx.state
    record = RequestRecord(
        method=request.method,
        path=request.path,
        query=dict(request.query),
        query_string=request.query_string,
        # Lower-case names (as HTTP/2 would) so assertions need not guess the client's casing.
        headers={k.lower(): ", ".join(request.headers.getall(k)) for k in request.headers},
        cookies=dict(request.cookies),
        remote=request.remote,
        time=time.time(),
    )
    state.requests.append(record)
    request[_RECORD] = record
    if not request.path.startswith((CDN_PREFIX, BACKUP_CDN_PREFIX)):  # no WAF on the CDN
        over_limit = state.over_rate_limit(request.remote)
        if over_limit and state.scenario.http_429:
            window = state.scenario.rate_limit.window_s if state.scenario.rate_limit else 1.0
            record.status = 429
            return web.Response(
                status=429, text="Too Many Requests", headers={"Retry-After": str(int(window) or 1)}
            )
        tag = request.headers.get(EGRESS_HEADER)
        by_egress = tag is not None and tag in state.scenario.blocked_egresses
        request[_BLOCKED] = over_limit or state.scenario.waf or by_egress
        request[_EMPTY] = by_egress
    response = await handler(request)
    record.status = response.status
    return response


# --- webcast.tiktok.com --------------------------------------------------------------------


async def check_alive(request: web.Request) -> web.Response:
    ctx = get_ctx(request)
    if request.get(_EMPTY, False):
        return _empty_api_body()
    if _blocked(request):
        return _json(payloads.webcast([]))  # detected clients get an empty data list
    raw_ids = request.query.get("room_ids", "")
    if not _aid_ok(request) or not raw_ids.strip():
        return _json(payloads.params_error())
    fake_alive = ctx.state.scenario.fake_alive
    entries: list[tuple[str, bool]] = []
    for rid in (part.strip() for part in raw_ids.split(",")):
        room = ctx.state.rooms.get(rid)
        if fake_alive and rid.isdigit():
            entries.append((rid, True))  # #454: every id, even nonexistent ones, "alive"
        elif room is not None:  # unknown ids are simply omitted
            entries.append((rid, room.status in (RoomStatus.LIVE, RoomStatus.PAUSED)))
    return _json(payloads.check_alive(entries))


async def room_info(request: web.Request) -> web.Response:
    ctx = get_ctx(request)
    if request.get(_EMPTY, False):
        return _empty_api_body()
    if _blocked(request) or ctx.state.scenario.room_info_restricted:
        return _json(payloads.restricted())
    if not _aid_ok(request):
        return _json(payloads.params_error())
    room = ctx.state.rooms.get(request.query.get("room_id", "").strip())
    user = None if room is None else ctx.state.users.get(room.owner)
    if room is None or user is None:
        return _json(payloads.params_error())
    if user.private:
        return _json(payloads.restricted(payloads.PRIVATE_PROMPT))
    if user.age_restricted and not _has_session_cookie(request):
        # TikTokLive #228: some age-gated rooms say "params error" rather than "restricted".
        gated_10011 = ctx.state.scenario.room_info_10011_for_age_gated
        return _json(payloads.params_error() if gated_10011 else payloads.restricted())
    profile = ctx.media.get(room.profile).profile
    cap = ctx.state.scenario.quality_cap_720
    return _json(payloads.room_info(_url_maker(request), room, user, profile, cap_720=cap))


# --- www.tiktok.com ------------------------------------------------------------------------


def _streams_visible(request: web.Request, user: User) -> bool:
    """Stream URLs are withheld from private rooms and from age-gated ones without login."""
    return not user.private and (not user.age_restricted or _has_session_cookie(request))


async def api_live_user_room(request: web.Request) -> web.Response:
    ctx = get_ctx(request)
    scenario = ctx.state.scenario
    if _blocked(request) or scenario.empty_api_body:
        return _empty_api_body()
    if scenario.api_live_requires_signature and not hostile.api_live_signed(request, ctx.state):
        return _empty_api_body()  # upstream #330/#332: unsigned calls get nothing
    if not _aid_ok(request):
        return _json(payloads.params_error())
    user = ctx.state.find_user(request.query.get("uniqueId", ""))
    if user is None or scenario.api_live_user_not_found:
        return _json(payloads.user_not_found())
    room = ctx.state.current_room(user)
    body = payloads.api_live_user_room(
        _url_maker(request),
        user,
        room,
        _profile_of(ctx, room),
        with_streams=_streams_visible(request, user),
        cap_720=ctx.state.scenario.quality_cap_720,
    )
    return _json(body)


def _login_redirect(request: web.Request) -> web.Response:
    location = "/login?redirect_url=" + quote(str(request.url), safe="")
    return web.Response(status=302, headers={"Location": location})


async def live_page(request: web.Request) -> web.Response:
    ctx = get_ctx(request)
    scenario = ctx.state.scenario
    unique_id = request.match_info["user"]
    canonical = f"/@{unique_id.lower()}/live"
    gate = hostile.www_gate(request, ctx.state, canonical, blocked=_blocked(request))
    if gate is not None:
        return gate
    if scenario.blocked_country:
        return _login_redirect(request)
    user = ctx.state.find_user(unique_id)
    room = None if user is None else ctx.state.current_room(user)
    if scenario.live_page_soft_block:
        # A false "not found": the page of a soft-blocked client carries no live data at all.
        blank = pages.live_page(unique_id, {"UserModule": {}}, script_id=scenario.sigi_script_id)
        return _html(blank)
    sigi = payloads.sigi_state(
        _url_maker(request),
        user,
        room,
        _profile_of(ctx, room),
        with_streams=user is not None and _streams_visible(request, user),
        cap_720=scenario.quality_cap_720,
        room_id_empty=scenario.sigi_room_id_empty,
    )
    live = room is not None and room.status in (RoomStatus.LIVE, RoomStatus.PAUSED)
    app_room_id = room.room_id if room is not None and live else None
    script_id = scenario.sigi_script_id
    return _html(pages.live_page(unique_id, sigi, script_id=script_id, app_room_id=app_room_id))


async def profile_page(request: web.Request) -> web.Response:
    ctx = get_ctx(request)
    unique_id = request.match_info["user"]
    canonical = f"/@{unique_id.lower()}"
    gate = hostile.www_gate(request, ctx.state, canonical, blocked=_blocked(request))
    if gate is not None:
        return gate
    user = ctx.state.find_user(unique_id)
    room = None if user is None else ctx.state.current_room(user)
    return _html(pages.profile_page(unique_id, payloads.user_detail(user, room)))


async def live_landing(request: web.Request) -> web.Response:
    """GET /live: the CLI's country probe (302 means blocked)."""
    ctx = get_ctx(request)
    gate = hostile.www_gate(request, ctx.state, "/live", blocked=_blocked(request))
    if gate is not None:
        return gate
    if ctx.state.scenario.blocked_country:
        return _login_redirect(request)
    return _html(pages.simple_page("TikTok LIVE"))


async def login_page(_request: web.Request) -> web.Response:
    return _html(pages.simple_page("Log in | TikTok"))


async def live_detail(request: web.Request) -> web.Response:
    ctx = get_ctx(request)
    if _blocked(request):
        return _empty_api_body()
    room = ctx.state.rooms.get(request.query.get("roomID", "").strip())
    user = None if room is None else ctx.state.users.get(room.owner)
    if room is None or user is None:
        return _json({"statusCode": 10011, "message": "Request params error"})
    cap = ctx.state.scenario.quality_cap_720
    return _json(payloads.live_detail(_url_maker(request), room, user, cap_720=cap))


# --- CDN -----------------------------------------------------------------------------------


def _sign_valid(request: web.Request, sid: str, suffix: str) -> bool:
    expire_raw = request.query.get("expire", "")
    if not expire_raw.isdigit() or int(expire_raw) < time.time():
        return False
    return request.query.get("sign") == stream_sign(sid, suffix, int(expire_raw))


def _dead_rung(request: web.Request, ctx: FakeContext, suffix: str, *, audio_only: bool) -> bool:
    """`dead_top_rung`: the best quality's main URL is dead; its backup and `ao` still play."""
    scenario = ctx.state.scenario
    return (
        scenario.dead_top_rung
        and request.path.startswith(CDN_PREFIX)
        and not audio_only
        and suffix == top_quality(scenario.quality_cap_720).suffix
    )


async def flv_stream(request: web.Request) -> web.StreamResponse:
    ctx = get_ctx(request)
    match = _STREAM_NAME_RE.match(request.match_info["name"])
    if match is None:
        return web.Response(status=404, text="Not Found")
    sid, suffix = match["sid"], match["sfx"] or ""
    if not _sign_valid(request, sid, suffix):
        return web.Response(status=403, text="Forbidden")
    room = ctx.state.streams.get(sid)
    if room is None or room.status != RoomStatus.LIVE:
        return web.Response(status=404, text="Not Found")
    redirect = ctx.state.scenario.cdn_redirect
    if redirect is not None:
        return web.Response(status=302, headers={"Location": redirect})
    audio_only = request.query.get("only_audio") == "1"
    if _dead_rung(request, ctx, suffix, audio_only=audio_only):
        return hostile.dead_rung(ctx.state.scenario.dead_rung_mode)
    conn = StreamConn(
        sid=sid,
        suffix=suffix,
        audio_only=audio_only,
        transport=request.transport,
        drop=room.pending_drop,
    )
    room.pending_drop = None
    response = web.StreamResponse(
        status=200, headers={"Content-Type": "video/x-flv", "Connection": "keep-alive"}
    )
    response.enable_chunked_encoding()
    streamer = FlvStreamer(
        request,
        response,
        room,
        conn,
        ctx.media,
        speed=ctx.speed,
        tick_s=ctx.tick_s,
        ts_offset_ms=ctx.state.scenario.ts_offset_ms,
    )
    room.conns.add(conn)
    try:
        await response.prepare(request)
        request[_RECORD].status = 200  # the handler only returns when the stream ends
        streamer.outlet = ctx.wire.outlet(request)
        await streamer.run()
    except ConnectionError:
        pass  # the client went away; nothing left to tell it
    finally:
        room.conns.discard(conn)
    return response


def make_app(ctx: FakeContext) -> web.Application:
    app = web.Application(middlewares=[edge_middleware])
    app[CTX] = ctx
    r = app.router
    # webcast.tiktok.com
    r.add_get("/webcast/room/check_alive/", check_alive)
    r.add_get("/webcast/room/info/", room_info)
    # www.tiktok.com
    r.add_get("/api-live/user/room/", api_live_user_room)
    r.add_get("/api/live/detail/", live_detail)
    r.add_get("/live", live_landing)
    r.add_get("/live/", live_landing)
    r.add_get("/login", login_page)
    # Trailing-slash forms are routed so `canonical_redirects` can answer them with a 301.
    r.add_get("/@{user}/live", live_page)
    r.add_get("/@{user}/live/", live_page)
    r.add_get("/@{user}", profile_page)
    r.add_get("/@{user}/", profile_page)
    # CDN, main and backup
    r.add_get(CDN_PREFIX + "{name}", flv_stream)
    r.add_get(BACKUP_CDN_PREFIX + "{name}", flv_stream)
    # the external signing service (not TikTok)
    r.add_post("/__fake/sign", hostile.sign_service)
    add_control_routes(r)
    return app
