"""TikTok-shaped HTML pages: live page (SIGI), profile page, WAF, challenge and Access Denied."""

from __future__ import annotations

import base64
import secrets
from html import escape
from typing import Any

from tlr.fake_tiktok.payloads import dumps

SIGI_SCRIPT_ID = "SIGI_STATE"


def to_script_json(obj: object) -> str:
    """JSON safe to embed in a <script> element."""
    return dumps(obj).replace("</", "<\\/")


def _page(title: str, body: str, head: str = "") -> str:
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title>{head}</head><body>{body}</body></html>"
    )


def live_page(
    unique_id: str,
    sigi: dict[str, Any],
    *,
    script_id: str = SIGI_SCRIPT_ID,
    app_room_id: str | None = None,
) -> str:
    """/@user/live. `app_room_id`: the live room's id for the app deep link in the head, which
    TikTok keeps even when SIGI's roomIds are empty (streamlink #6380)."""
    script = f'<script id="{script_id}" type="application/json">{to_script_json(sigi)}</script>'
    head = ""
    if app_room_id is not None:
        head = f'<meta property="al:android:url" content="snssdk1233://live?room_id={app_room_id}">'
    title = f"@{escape(unique_id)} LIVE | TikTok"
    return _page(title, f'<div id="app"></div>{script}', head)


def profile_page(unique_id: str, universal: dict[str, Any]) -> str:
    script = (
        '<script id="__UNIVERSAL_DATA_FOR_REHYDRATION__" type="application/json">'
        f"{to_script_json(universal)}</script>"
    )
    return _page(f"@{escape(unique_id)} | TikTok", f'<div id="app"></div>{script}')


def simple_page(title: str) -> str:
    return _page(title, '<div id="app"></div>')


def waf_page() -> str:
    """The unsolvable WAF page of `waf` / rate limits: a challenge with an empty config."""
    config = base64.b64encode(b'{"v":{}}').decode().rstrip("=")
    body = (
        "<div>Please wait...</div>"
        '<p id="wci" class="_wafchallengeid"></p>'
        f'<p id="cs" class="{config}"></p>'
    )
    return _page("Please wait...", body)


def challenge_page(paragraphs: str) -> str:
    """SlardarWAF proof-of-work page around `make_challenge`'s paragraphs (`waf_challenge`)."""
    return _page("Please wait...", f"<div>Please wait...</div>{paragraphs}")


def access_denied_page() -> str:
    """The edge's refusal of a client that does not look like a browser (upstream #206)."""
    reference = f"18.{secrets.token_hex(4)}.{secrets.token_hex(6)}"
    body = (
        "<h1>Access Denied</h1>"
        "<p>You don't have permission to access this page on this server.</p>"
        f"<p>Reference #{reference}</p>"
    )
    return _page("Access Denied", body)
