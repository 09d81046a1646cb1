"""Pure parsers from TikTok response bodies (TIKTOK.md §2) to models or TikTokErrors."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shared.tiktok.errors import (
    AgeRestricted,
    UnexpectedResponse,
    UserNotFound,
    WafBlocked,
)
from shared.tiktok.models import RoomInfo, RoomRef, StreamVariant
from shared.tiktok.quality import LEGACY_RUNGS

# webcast envelope status codes (HTTP is 200 for all of them).
STATUS_OK = 0
STATUS_RESTRICTED = 4003110
STATUS_PARAMS_ERROR = 10011
# www api-live envelope.
STATUS_USER_NOT_FOUND = 19881007

PRIVATE_PROMPT = "Follow the creator"
_WAF_MARKERS = ("Please wait", "_wafchallengeid", "SlardarWAF")
# The live page's state script has been ``SIGI_STATE`` and ``sigi-persisted-data``.
_SIGI_RE = re.compile(
    r"<script[^>]*\bid=\"(?:SIGI_STATE|sigi-persisted-data)\"[^>]*>(.*?)</script>", re.S
)
_META_RE = re.compile(r"<meta\b[^>]*>", re.I)
_ROOM_PARAM_RE = re.compile(r"[?&](?:amp;)?room_id=(\d{15,20})")
_UNIVERSAL_RE = re.compile(
    r"<script[^>]*\bid=\"__UNIVERSAL_DATA_FOR_REHYDRATION__\"[^>]*>(.*?)</script>", re.S
)


# --- small typed accessors for untyped JSON -----------------------------------------------


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    """A non-empty string form of an id or name; None for missing, empty, or non-scalar."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str):
        return str(value) or None
    return None


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return default


def looks_like_waf(body: str) -> bool:
    return any(marker in body for marker in _WAF_MARKERS)


def decode_json(body: bytes, endpoint: str) -> dict[str, Any]:
    """The JSON object in ``body``. Empty or non-JSON (HTML) bodies are what TikTok's WAF gives
    API clients, so they raise WafBlocked; JSON that is not an object is UnexpectedResponse."""
    if not body.strip():
        raise WafBlocked(endpoint=endpoint, reason="empty body")
    try:
        doc = json.loads(body)
    except ValueError:
        text = body[:4096].decode("utf-8", "replace")
        reason = "challenge page" if looks_like_waf(text) else "non-JSON body"
        raise WafBlocked(endpoint=endpoint, reason=reason) from None
    if not isinstance(doc, dict):
        raise UnexpectedResponse(endpoint=endpoint, detail="JSON body is not an object")
    return doc


# --- webcast/room/check_alive -------------------------------------------------------------


def parse_check_alive(body: bytes, room_ids: Sequence[str]) -> dict[str, bool]:
    """``{room_id: alive}`` for the asked ids TikTok answered about, matched by
    ``room_id_str`` (never by position). Ids TikTok omits are absent from the result.

    TikTok answers an empty ``data`` list both for nonexistent ids and for clients it has
    flagged. The ids we ask about came from TikTok itself, so a non-empty request where every
    id is missing is treated as a WAF block (retryable), never as "all offline"; a partial
    answer is returned as is.
    """
    doc = decode_json(body, "check_alive")
    status = _int(doc.get("status_code"), -1)
    if status != STATUS_OK:
        raise UnexpectedResponse(endpoint="check_alive", detail=f"status_code {status}")
    data = doc.get("data")
    if not isinstance(data, list):
        raise UnexpectedResponse(endpoint="check_alive", detail="data is not a list")
    wanted = set(room_ids)
    result: dict[str, bool] = {}
    for entry in data:
        item = _obj(entry)
        room_id = _text(item.get("room_id_str")) or _text(item.get("room_id"))
        alive = item.get("alive")
        if room_id in wanted and isinstance(alive, bool):
            result[room_id] = alive
    if wanted and not result:
        raise WafBlocked(endpoint="check_alive", reason="no asked room id in the answer")
    return result


# --- webcast/room/info --------------------------------------------------------------------


def parse_room_info(body: bytes, room_id: str, *, logged_in: bool = False) -> RoomInfo:
    """A RoomInfo from a room/info body.

    4003110 is AgeRestricted (private when the body mentions following the creator); 10011
    ("Request params error", answered for unknown room ids) is UserNotFound; other non-zero
    codes are UnexpectedResponse. A broken ``stream_data`` string is skipped, not fatal: the
    legacy ``flv_pull_url`` map is the fallback.
    """
    doc = decode_json(body, "room_info")
    status = _int(doc.get("status_code"), -1)
    if status == STATUS_RESTRICTED:
        # Placement of the private prompt is unverified, so look anywhere in the body.
        private = PRIVATE_PROMPT in body.decode("utf-8", "replace")
        raise AgeRestricted(room_id=room_id, private=private, logged_in=logged_in)
    if status == STATUS_PARAMS_ERROR:
        raise UserNotFound(target=f"room {room_id}", detail="Request params error (10011)")
    if status != STATUS_OK:
        raise UnexpectedResponse(endpoint="room_info", detail=f"status_code {status}")
    data = doc.get("data")
    if not isinstance(data, dict) or "status" not in data:
        raise UnexpectedResponse(endpoint="room_info", detail="no room status in data")
    owner = _obj(data.get("owner"))
    stream_url = _obj(data.get("stream_url"))
    return RoomInfo(
        room_id=_text(data.get("id_str")) or room_id,
        status=_int(data.get("status")),
        title=_text(data.get("title")) or "",
        start_time=_int(data.get("start_time")) or None,
        unique_id=_text(owner.get("display_id")),
        nickname=_text(owner.get("nickname")),
        streams=parse_stream_data(stream_url),
        legacy_flv=parse_legacy_flv(stream_url),
        age_restricted=_obj(data.get("age_restricted")).get("restricted") is True,
    )


def _json_string(value: Any) -> dict[str, Any]:
    """A JSON object carried as a string inside JSON (stream_data, sdk_params); {} if broken."""
    if not isinstance(value, str) or not value:
        return {}
    try:
        return _obj(json.loads(value))
    except ValueError:
        return {}


def _http_url(url: Any) -> str | None:
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


def _variant(quality: str, url: Any, params: Any, backup: Any = None) -> StreamVariant | None:
    main = _http_url(url)
    if main is None:
        return None
    sdk = _json_string(params)
    return StreamVariant(
        quality=quality,
        flv_url=main,
        resolution=_text(sdk.get("resolution")),
        vcodec=_text(sdk.get("VCodec")),
        backup_url=_http_url(backup),
    )


def parse_stream_data(stream_url: dict[str, Any]) -> dict[str, StreamVariant]:
    """The FLV variants of room/info's ``stream_url.live_core_sdk_data.pull_data``."""
    return parse_pull_data(_obj(_obj(stream_url.get("live_core_sdk_data")).get("pull_data")))


def parse_pull_data(pull: dict[str, Any]) -> dict[str, StreamVariant]:
    """The FLV variants of a ``pull_data`` object, keyed by sdk_key: its ``stream_data`` is a
    JSON string (URLs with ``\\u0026`` for '&', which json.loads turns back) whose entries
    have a ``main`` rendition and sometimes a ``backup`` on another CDN."""
    data = _obj(_json_string(pull.get("stream_data")).get("data"))
    streams: dict[str, StreamVariant] = {}
    for key, entry in data.items():
        main = _obj(_obj(entry).get("main"))
        backup = _obj(_obj(entry).get("backup"))
        variant = _variant(key, main.get("flv"), main.get("sdk_params"), backup.get("flv"))
        if variant is None and backup:  # the main URL missing, the backup listed
            variant = _variant(key, backup.get("flv"), backup.get("sdk_params"))
        if variant is not None:
            streams[key] = variant
    return streams


def parse_legacy_flv(stream_url: dict[str, Any]) -> dict[str, StreamVariant]:
    """The legacy ``flv_pull_url`` map (FULL_HD1, HD1, SD2, SD1), each named after its rung."""
    urls = _obj(stream_url.get("flv_pull_url"))
    params = _obj(stream_url.get("flv_pull_url_params"))
    legacy: dict[str, StreamVariant] = {}
    for key, url in urls.items():
        variant = _variant(LEGACY_RUNGS.get(key, key.lower()), url, params.get(key))
        if variant is not None:
            legacy[key] = variant
    return legacy


# --- www: api-live/user/room, live page, profile page -------------------------------------


@dataclass(frozen=True, slots=True)
class PageState:
    """What a www answer says about a user: the room reference, and the live room itself
    (status, title, streams) when the answer carries it: the fallback for a room/info that
    answers 4003110 to a flagged IP (upstream 7.7)."""

    ref: RoomRef
    live: RoomInfo | None = None


def _page_room(
    unique_id: str, room_id: str | None, live_room: dict[str, Any], source: str, **extra: Any
) -> RoomInfo | None:
    """The RoomInfo a page's ``liveRoom`` object describes, if it names a room and a status."""
    status = _int(live_room.get("status")) or _int(extra.pop("status", 0))
    if room_id is None or status == 0:
        return None
    streams = parse_pull_data(_obj(_obj(live_room.get("streamData")).get("pull_data")))
    return RoomInfo(
        room_id=room_id,
        status=status,
        title=_text(live_room.get("title")) or "",
        start_time=_int(live_room.get("startTime")) or None,
        unique_id=unique_id,
        nickname=extra.get("nickname"),
        streams=streams,
        source=source,
    )


def parse_user_room(body: bytes, unique_id: str) -> PageState:
    """``data.user.roomId`` of api-live/user/room (a stale id is kept; "" becomes None), and
    ``data.liveRoom`` with its ``streamData``.

    19881007 is UserNotFound (TikTok has sent it for live users too: confirm it elsewhere).
    Empty or HTML bodies raise WafBlocked; other codes or shapes raise UnexpectedResponse.
    """
    doc = decode_json(body, "user_room")
    status = _int(doc.get("statusCode"), -1)
    if status == STATUS_USER_NOT_FOUND:
        raise UserNotFound(target=f"@{unique_id}", detail="user_not_found")
    if status != STATUS_OK:
        raise UnexpectedResponse(endpoint="user_room", detail=f"statusCode {status}")
    data = _obj(doc.get("data"))
    user = data.get("user")
    if not isinstance(user, dict):
        raise UnexpectedResponse(endpoint="user_room", detail="no data.user")
    live_room = _obj(data.get("liveRoom"))
    room_id = _text(user.get("roomId")) or _text(live_room.get("roomId"))
    name = _text(user.get("uniqueId")) or unique_id
    live = _page_room(
        name,
        room_id,
        live_room,
        "user_room",
        status=user.get("status"),
        nickname=_text(user.get("nickname")),
    )
    return PageState(RoomRef(room_id=room_id, unique_id=name), live)


def _script_json(page: str, pattern: re.Pattern[str], endpoint: str) -> dict[str, Any] | None:
    match = pattern.search(page)
    if match is None:
        return None
    try:
        return _obj(json.loads(match.group(1)))
    except ValueError:
        raise UnexpectedResponse(endpoint=endpoint, detail="embedded state is not JSON") from None


def android_room_id(page: str) -> str | None:
    """The room id of ``<meta property="al:android:url" content="...live?room_id=N">``: where
    a live page keeps it when its state says roomId "" (streamlink #6380)."""
    for match in _META_RE.finditer(page):
        tag = match.group(0)
        if "al:android:url" not in tag:
            continue
        found = _ROOM_PARAM_RE.search(tag)
        if found is not None:
            return found.group(1)
    return None


def parse_live_page(page: str, unique_id: str) -> PageState:
    """The room of ``/@user/live`` from its state script (``SIGI_STATE``, or
    ``sigi-persisted-data``), else the ``al:android:url`` meta tag.

    No state at all means a WAF or captcha page (WafBlocked). No ``LiveRoom`` means the user
    does not exist or never streamed, or a soft block: UserNotFound unless ``UserModule``
    lists the user, which gives a RoomRef without room.
    """
    state = _script_json(page, _SIGI_RE, "live_page")
    if state is None:
        reason = "challenge page" if looks_like_waf(page) else "page without SIGI_STATE"
        raise WafBlocked(endpoint="live_page", reason=reason)
    live_room = state.get("LiveRoom")
    if not isinstance(live_room, dict):
        users = _obj(_obj(state.get("UserModule")).get("users"))
        known = {name.lower() for name in users}
        if unique_id.lower() in known:
            return PageState(RoomRef(room_id=None, unique_id=unique_id))
        raise UserNotFound(target=f"@{unique_id}", detail="no LiveRoom on the live page")
    user_info = _obj(live_room.get("liveRoomUserInfo"))
    user = _obj(user_info.get("user"))
    room = _obj(user_info.get("liveRoom"))
    room_id = (
        _text(user.get("roomId"))
        or _text(room.get("roomId"))
        or _text(_obj(state.get("CurrentRoom")).get("roomId"))
        or android_room_id(page)
    )
    name = _text(user.get("uniqueId")) or unique_id
    live = _page_room(
        name,
        room_id,
        room,
        "live_page",
        status=live_room.get("liveRoomStatus"),
        nickname=_text(user.get("nickname")),
    )
    return PageState(RoomRef(room_id=room_id, unique_id=name), live)


def parse_profile_page(page: str, unique_id: str) -> PageState:
    """The room id of ``/@user`` from ``__UNIVERSAL_DATA_FOR_REHYDRATION__``
    (``__DEFAULT_SCOPE__["webapp.user-detail"].userInfo.user.roomId``): yt-dlp's first step."""
    state = _script_json(page, _UNIVERSAL_RE, "profile_page")
    if state is None:
        reason = "challenge page" if looks_like_waf(page) else "page without user data"
        raise WafBlocked(endpoint="profile_page", reason=reason)
    detail = _obj(_obj(state.get("__DEFAULT_SCOPE__")).get("webapp.user-detail"))
    user = _obj(_obj(detail.get("userInfo")).get("user"))
    if not user:
        code = _int(detail.get("statusCode"), -1)
        raise UserNotFound(target=f"@{unique_id}", detail=f"profile statusCode {code}")
    name = _text(user.get("uniqueId")) or unique_id
    return PageState(RoomRef(room_id=_text(user.get("roomId")), unique_id=name))
