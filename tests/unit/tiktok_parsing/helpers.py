"""TikTok bodies shaped like the TIKTOK.md §2 captures, and a TikTokClient on a MockTransport."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from shared.tiktok import TikTokClient

ROOM = "7503448765740976902"
OTHER_ROOM = "7503448765740976903"
CDN = "https://pull-flv-l1-va01.tiktokcdn.com/game/stream-2999545150721753184"


def body(doc: object) -> bytes:
    return json.dumps(doc).encode()


# --- bodies shaped like the §2.3 captures ---------------------------------------------------


def _sdk(codec: str, bitrate: int, resolution: str) -> str:
    return json.dumps({"VCodec": codec, "vbitrate": bitrate, "resolution": resolution})


def stream_data_string() -> str:
    """The decoded §2.3 stream_data, re-encoded as TikTok does: a string with \\u0026."""
    keys = {
        "origin": ("", "1920x1080", 7_600_000),
        "uhd_60": ("_uhd560", "1920x1080", 4_000_000),
        "hd_60": ("_hd560", "1280x720", 2_600_000),
        "hd": ("_hd5", "1280x720", 1_600_000),
        "sd": ("_sd5", "960x540", 1_000_000),
        "ld": ("_ld5", "640x360", 600_000),
    }
    data: dict[str, Any] = {
        key: {
            "main": {
                "flv": f"{CDN}{sfx}.flv?expire=1748243747&sign=290a{key}",
                "hls": f"{CDN}{sfx}/playlist.m3u8?expire=1748243747&sign=2c02",
                "cmaf": "",
                "sdk_params": _sdk("h265", rate, res),
            }
        }
        for key, (sfx, res, rate) in keys.items()
    }
    data["ao"] = {
        "main": {
            "flv": f"{CDN}.flv?expire=1748243747&sign=290a&only_audio=1",
            "hls": "",
            "sdk_params": _sdk("h264", 0, ""),
        }
    }
    common = {"session_id": "178-2025051207154689B62CE39CB18B4E79B9", "user_count": 561}
    return json.dumps({"common": common, "data": data}).replace("&", "\\u0026")


def live_body(status: int = 2) -> dict[str, Any]:
    return {
        "data": {
            "id_str": ROOM,
            "status": status,
            "title": "Ow Zeny Only",
            "create_time": 1747032842,
            "age_restricted": {"AgeInterval": 0, "restricted": False, "source": 0},
            "owner": {
                "id_str": "6888971869959046145",
                "display_id": "qlaiqlai22",
                "nickname": "Qlai",
            },
            "stream_url": {
                "candidate_resolution": ["SD1", "SD2", "HD1"],
                "flv_pull_url": {
                    "HD1": f"{CDN}_hd5.flv?expire=1748243747&sign=be08",
                    "SD2": f"{CDN}_sd5.flv?expire=1748243747&sign=ff8a",
                    "SD1": f"{CDN}_ld5.flv?expire=1748243747&sign=784f",
                },
                "flv_pull_url_params": {"HD1": _sdk("h265", 1_600_000, "1280x720")},
                "live_core_sdk_data": {
                    "pull_data": {
                        "options": {"qualities": [{"sdk_key": "origin", "level": 10}]},
                        "stream_data": stream_data_string(),
                    }
                },
            },
        },
        "extra": {"now": 1747034147157},
        "status_code": 0,
    }


OFFLINE_BODY = {
    "data": {
        "id_str": ROOM,
        "status": 4,
        "finish_time": 1784118433,
        "owner": {"display_id": "alice"},
        "stream_url": {
            "flv_pull_url": {"HD1": "https://pull-flv.tiktokcdn.com/stale.flv"},
            "live_core_sdk_data": {"pull_data": {"stream_data": '{"data":{}}'}},
        },
    },
    "extra": {"now": 1784118500000},
    "status_code": 0,
}
RESTRICTED_BODY = {"data": {"prompts": ""}, "extra": {"now": 1692122709147}, "status_code": 4003110}
PRIVATE_BODY = {
    "data": {"prompts": "Follow the creator to watch their LIVE"},
    "extra": {"now": 1692122709147},
    "status_code": 4003110,
}
PARAMS_ERROR_BODY = {
    "data": {"message": "Request params error", "prompts": "Request params error"},
    "extra": {"now": 1717778102160},
    "status_code": 10011,
}
WAF_PAGE = (
    "<html><body><div>Please wait...</div>"
    '<p id="wci" class="_wafchallengeid"></p><p id="cs" class="eyJ2Ijp7fX0"></p></body></html>'
)


def page(script_id: str, state: object) -> str:
    return f'<html><script id="{script_id}" type="application/json">{json.dumps(state)}</script>'


def profile_html(room_id: str, name: str = "alice") -> str:
    detail = {"statusCode": 0, "userInfo": {"user": {"uniqueId": name, "roomId": room_id}}}
    state = {"__DEFAULT_SCOPE__": {"webapp.user-detail": detail}}
    return page("__UNIVERSAL_DATA_FOR_REHYDRATION__", state)


def no_network(request: httpx.Request) -> httpx.Response:
    pytest.fail(f"unexpected request to {request.url}")


def mock_client(handler: Any) -> TikTokClient:
    return TikTokClient(
        web_base="http://web.test",
        webcast_base="http://webcast.test",
        transport=httpx.MockTransport(handler),
    )
