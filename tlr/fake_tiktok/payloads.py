"""TikTok-shaped JSON bodies (§2 and §5.4 of TIKTOK.md), built from the fake state."""

from __future__ import annotations

import json
import time
from typing import Any

from tlr.fake_tiktok.cdn import (
    LEGACY_KEYS,
    QUALITIES,
    Quality,
    UrlMaker,
    listed_qualities,
    top_quality,
)
from tlr.fake_tiktok.media import Profile
from tlr.fake_tiktok.state import Room, RoomStatus, User

PRIVATE_PROMPT = "Follow the creator to watch their LIVE"


def now_ms() -> int:
    return int(time.time() * 1000)


def dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


# --- envelopes and errors ------------------------------------------------------------------


def webcast(data: object, status_code: int = 0) -> dict[str, Any]:
    return {"data": data, "extra": {"now": now_ms()}, "status_code": status_code}


def params_error() -> dict[str, Any]:
    """10011: bad or unknown room id, or a missing aid."""
    msg = "Request params error"
    return webcast({"message": msg, "prompts": msg}, 10011)


def restricted(prompts: str = "") -> dict[str, Any]:
    """4003110: age-gated without login, followers-only, or WAF-flagged."""
    return webcast({"prompts": prompts}, 4003110)


def user_not_found() -> dict[str, Any]:
    return {"statusCode": 19881007, "message": "user_not_found"}


# --- stream_url ----------------------------------------------------------------------------


def _sdk_params(quality: Quality, profile: Profile) -> str:
    if quality.sdk_key == "origin":
        resolution, vbitrate = profile.resolution, profile.video_kbps * 1000
    else:
        resolution, vbitrate = quality.resolution, quality.vbitrate
    return dumps(
        {"VCodec": profile.codec, "vbitrate": vbitrate, "resolution": resolution, "gop": 2}
    )


def quality_options(cap_720: bool) -> dict[str, Any]:
    return {
        "default_quality": {"sdk_key": "sd", "name": "540p", "level": 0},
        "qualities": [
            {"sdk_key": q.sdk_key, "name": q.name, "level": q.level}
            for q in listed_qualities(cap_720)
        ],
        "show_quality_button": True,
    }


def stream_data_string(urls: UrlMaker, room: Room, profile: Profile, cap_720: bool) -> str:
    """The `stream_data` JSON *string*, with '&' escaped as \\u0026 like TikTok does."""
    sid = room.stream_id
    sources = (False, True) if urls.with_backup else (False,)
    data: dict[str, Any] = {}
    for q in listed_qualities(cap_720):
        data[q.sdk_key] = {
            "backup" if backup else "main": {
                "flv": urls.flv(sid, q.suffix, backup=backup),
                "hls": urls.hls(sid, q.suffix, backup=backup),
                "cmaf": "",
                "dash": "",
                "lls": "",
                "tsl": "",
                "tile": "",
                "rtc": "",
                "sdk_params": _sdk_params(q, profile),
            }
            for backup in sources
        }
    audio_params = dumps({"VCodec": profile.codec, "vbitrate": 0, "resolution": ""})
    data["ao"] = {
        "backup" if backup else "main": {
            "flv": urls.flv(sid, backup=backup) + "&only_audio=1",
            "hls": "",
            "sdk_params": audio_params,
        }
        for backup in sources
    }
    common = {
        "session_id": _session_id(room),
        "user_count": room.user_count,
        "peer_anchor_level": 1,
    }
    # '&' only occurs inside URL strings, where \u0026 is a valid JSON escape for it.
    return dumps({"common": common, "data": data}).replace("&", "\\u0026")


def _session_id(room: Room) -> str:
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(room.create_time))
    return f"178-{stamp}{room.stream_id[-12:]}"


def live_stream_url(urls: UrlMaker, room: Room, profile: Profile, cap_720: bool) -> dict[str, Any]:
    """`data.stream_url` of a live room/info answer."""
    sid = room.stream_id
    legacy = {q.legacy_key: q for q in QUALITIES if q.legacy_key in LEGACY_KEYS}
    top = top_quality(cap_720)  # rtmp/hls carry the best allowed rendition
    return {
        "candidate_resolution": ["SD1", "SD2", "HD1"],
        "default_resolution": "SD2",
        "flv_pull_url": {key: urls.flv(sid, q.suffix) for key, q in legacy.items()},
        "flv_pull_url_params": {key: _sdk_params(q, profile) for key, q in legacy.items()},
        "hls_pull_url": urls.hls(sid, top.suffix),
        "hls_pull_url_map": {},
        "hls_pull_url_params": _sdk_params(top, profile),
        "rtmp_pull_url": urls.flv(sid, top.suffix),
        "id": int(sid),
        "id_str": sid,
        "resolution_name": {
            "AUTO": "AUTO",
            "FULL_HD1": "1080p",
            "HD1": "720p",
            "ORIGION": "Original",
            "SD1": "360p",
            "SD2": "540p",
        },
        "live_core_sdk_data": {
            "pull_data": {
                "options": quality_options(cap_720),
                "stream_data": stream_data_string(urls, room, profile, cap_720),
            }
        },
    }


def stale_stream_url(urls: UrlMaker, room: Room) -> dict[str, Any]:
    """What an ended room still advertises: dead URLs (they 404) and empty stream_data."""
    return {
        "flv_pull_url": {"HD1": urls.flv(room.stream_id, "_hd5")},
        "live_core_sdk_data": {"pull_data": {"stream_data": dumps({"data": {}})}},
    }


# --- webcast room/info and check_alive ----------------------------------------------------


def _owner(user: User) -> dict[str, Any]:
    return {
        "id": int(user.user_id),
        "id_str": user.user_id,
        "display_id": user.unique_id,
        "nickname": user.nickname,
        "sec_uid": user.sec_uid,
        "status": 1,
    }


def room_info(
    urls: UrlMaker, room: Room, user: User, profile: Profile, *, cap_720: bool
) -> dict[str, Any]:
    """room/info body: full for live (2) and paused (3) rooms, the stale shape once ended."""
    if room.status == RoomStatus.ENDED:
        return webcast(
            {
                "id": int(room.room_id),
                "id_str": room.room_id,
                "status": int(room.status),
                "title": room.title,
                "finish_time": room.finish_time,
                "owner": _owner(user),
                "stream_url": stale_stream_url(urls, room),
            }
        )
    return webcast(
        {
            "id": int(room.room_id),
            "id_str": room.room_id,
            "status": int(room.status),
            "title": room.title,
            "create_time": room.create_time,
            "start_time": room.create_time,
            "finish_time": 0,
            "user_count": room.user_count,
            "age_restricted": {"AgeInterval": 0, "restricted": user.age_restricted, "source": 0},
            "owner": _owner(user),
            "stats": {"total_user": room.user_count * 3, "like_count": 0},
            "stream_url": live_stream_url(urls, room, profile, cap_720),
        }
    )


def check_alive(entries: list[tuple[str, bool]]) -> dict[str, Any]:
    """check_alive body from (room id, alive) pairs, in request order."""
    return webcast(
        [{"alive": alive, "room_id": int(rid), "room_id_str": rid} for rid, alive in entries]
    )


# --- www: api-live, SIGI live page, profile page, live detail -----------------------------


def _api_user(user: User, room: Room | None) -> dict[str, Any]:
    return {
        "id": user.user_id,
        "uniqueId": user.unique_id,
        "nickname": user.nickname,
        "secUid": user.sec_uid,
        "secret": user.private,
        "roomId": room.room_id if room else "",
        "status": int(room.status) if room else int(RoomStatus.ENDED),
    }


def _empty_stream_data() -> dict[str, Any]:
    return {"pull_data": {"options": {"qualities": []}, "stream_data": dumps({"data": {}})}}


def _api_live_room(
    urls: UrlMaker, room: Room | None, profile: Profile | None, *, with_streams: bool, cap_720: bool
) -> dict[str, Any]:
    if room is None:
        return {"roomId": "", "status": int(RoomStatus.ENDED), "title": "", "startTime": 0}
    body: dict[str, Any] = {
        "roomId": room.room_id,
        "status": int(room.status),
        "title": room.title,
        "startTime": room.create_time,
        "liveRoomStats": {"userCount": room.user_count if room.status != RoomStatus.ENDED else 0},
    }
    if with_streams and profile is not None and room.status != RoomStatus.ENDED:
        pull = {
            "pull_data": {
                "options": quality_options(cap_720),
                "stream_data": stream_data_string(urls, room, profile, cap_720),
            }
        }
        body["streamData"] = pull
        # Our renditions are H.264 unless the profile says HEVC; mirror that in hevcStreamData.
        body["hevcStreamData"] = pull if profile.codec == "hevc" else _empty_stream_data()
    return body


def api_live_user_room(
    urls: UrlMaker,
    user: User,
    room: Room | None,
    profile: Profile | None,
    *,
    with_streams: bool,
    cap_720: bool,
) -> dict[str, Any]:
    live_room = _api_live_room(urls, room, profile, with_streams=with_streams, cap_720=cap_720)
    return {
        "statusCode": 0,
        "message": "",
        "data": {"user": _api_user(user, room), "liveRoom": live_room},
    }


def sigi_state(
    urls: UrlMaker,
    user: User | None,
    room: Room | None,
    profile: Profile | None,
    *,
    with_streams: bool,
    cap_720: bool,
    room_id_empty: bool = False,
) -> dict[str, Any]:
    """SIGI_STATE of /@user/live. Unknown or never-live users have no LiveRoom key.

    `room_id_empty`: a live room's roomIds are "" (streamlink #6380); the page's
    al:android:url meta still names the room.
    """
    if user is None:
        return {"UserModule": {}}
    if room is None:
        return {"UserModule": {"users": {user.unique_id: _api_user(user, None)}}}
    live = room.status in (RoomStatus.LIVE, RoomStatus.PAUSED)
    live_user = _api_user(user, room)
    live_room = _api_live_room(urls, room, profile, with_streams=with_streams, cap_720=cap_720)
    current_id = room.room_id if live else ""
    if live and room_id_empty:
        live_user["roomId"] = live_room["roomId"] = current_id = ""
    return {
        "LiveRoom": {
            "isAgeGateRoom": user.age_restricted,
            "liveRoomStatus": int(room.status) if live else 0,
            "liveRoomUserInfo": {"user": live_user, "liveRoom": live_room},
        },
        "CurrentRoom": {
            "roomInfo": {},
            "anchorId": user.user_id,
            "roomId": current_id,
            "liveType": "video_live",
        },
    }


def user_detail(user: User | None, room: Room | None) -> dict[str, Any]:
    """__UNIVERSAL_DATA_FOR_REHYDRATION__ of /@user (10221 unknown, 10222 private: unverified)."""
    if user is None:
        detail: dict[str, Any] = {"statusCode": 10221, "statusMsg": "", "userInfo": {}}
    else:
        detail = {
            "statusCode": 10222 if user.private else 0,
            "statusMsg": "",
            "userInfo": {
                "user": {
                    "id": user.user_id,
                    "uniqueId": user.unique_id,
                    "nickname": user.nickname,
                    "secUid": user.sec_uid,
                    "privateAccount": user.private,
                    "roomId": room.room_id if room else "",
                },
                "stats": {"followerCount": 1000, "followingCount": 10, "videoCount": 0},
            },
        }
    return {"__DEFAULT_SCOPE__": {"webapp.user-detail": detail}}


def live_detail(urls: UrlMaker, room: Room, user: User, *, cap_720: bool) -> dict[str, Any]:
    """www /api/live/detail/ body (yt-dlp's HLS fallback)."""
    top = top_quality(cap_720)
    live = room.status != RoomStatus.ENDED
    return {
        "statusCode": 0,
        "LiveRoomInfo": {
            "status": int(room.status),
            "title": room.title,
            "liveUrl": urls.hls(room.stream_id, top.suffix) if live else "",
            "ownerInfo": {
                "uniqueId": user.unique_id,
                "id": user.user_id,
                "nickname": user.nickname,
            },
            "liveRoomStats": {"userCount": room.user_count if live else 0},
        },
    }
