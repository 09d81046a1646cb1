"""Late-2026 TikTok's hostility per request (§6): browser screening, the WAF proof of work,
canonical redirects, the X-Bogus check, dead top rungs, and the fake signing service."""

from __future__ import annotations

import json
import secrets
from urllib.parse import quote

from aiohttp import web

from tlr.fake_tiktok import pages
from tlr.fake_tiktok.context import get_ctx
from tlr.fake_tiktok.defences import WAF_COOKIE
from tlr.fake_tiktok.flv import flv_header
from tlr.fake_tiktok.state import FakeState

BROWSER_UA_MARK = "Mozilla/5.0"


def html_response(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def looks_like_navigation(request: web.Request) -> bool:
    """A browser's top-level GET: a Mozilla UA, Sec-Fetch-Mode: navigate, and no Origin
    (browsers send Origin on CORS and POST requests, never on a navigation)."""
    headers = request.headers
    return (
        BROWSER_UA_MARK in headers.get("User-Agent", "")
        and headers.get("Sec-Fetch-Mode", "").strip().lower() == "navigate"
        and "Origin" not in headers
    )


def _cookie_values(request: web.Request, name: str) -> list[str]:
    # Every value, not just the last: a client's jar may still hold the Max-Age=1 cookie of the
    # challenge page next to the solution, and browsers would have replaced it.
    values = []
    for header in request.headers.getall("Cookie", []):
        for part in header.split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                values.append(value.strip().strip('"'))
    return values


def _canonical_redirect(request: web.Request, canonical_path: str) -> web.Response:
    location = quote(canonical_path, safe="/@")
    if request.rel_url.raw_query_string:
        location += "?" + request.rel_url.raw_query_string
    return web.Response(status=301, headers={"Location": location})


def _waf_challenge(request: web.Request, state: FakeState) -> web.Response | None:
    """None if the request presents a fresh solution (it is spent); else a new challenge."""
    verdict = state.waf_challenges.check(_cookie_values(request, WAF_COOKIE))
    if verdict == "accepted":
        state.stats.waf_solutions_accepted += 1
        return None
    if verdict == "spent":
        state.stats.waf_solutions_rejected += 1
    paragraphs = state.waf_challenges.issue(state.scenario.waf_difficulty)
    state.stats.waf_challenges_issued += 1
    response = html_response(pages.challenge_page(paragraphs))
    response.set_cookie(WAF_COOKIE, secrets.token_hex(16), max_age=1, path="/")
    return response


def www_gate(
    request: web.Request, state: FakeState, canonical_path: str, *, blocked: bool
) -> web.Response | None:
    """The verdict on a www HTML request before the page itself, or None to serve it.

    Order: browser screening (403), the unsolvable `waf`/rate-limit page, the canonical
    redirect (301), then the proof of work; the country block comes after, in the handler.
    """
    scenario = state.scenario
    if scenario.require_browser_headers and not looks_like_navigation(request):
        state.stats.access_denied += 1
        return html_response(pages.access_denied_page(), status=403)
    if blocked:
        return html_response(pages.waf_page())
    if scenario.canonical_redirects and request.path != canonical_path:
        return _canonical_redirect(request, canonical_path)
    if scenario.waf_challenge:
        return _waf_challenge(request, state)
    return None


def api_live_signed(request: web.Request, state: FakeState) -> bool:
    """Whether the api-live request carries the X-Bogus the signing service issued for it."""
    url = request.rel_url
    return state.signer.verify(url.raw_path, url.raw_query_string)


def dead_rung(mode: str) -> web.Response:
    """A dead CDN URL: 404, or ("empty") 200 with a bare FLV header and then the close."""
    if mode == "404":
        return web.Response(status=404, text="Not Found")
    response = web.Response(body=flv_header(audio=True, video=True), content_type="video/x-flv")
    response.force_close()
    return response


def _sign_error(message: str, status: int = 400) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def sign_service(request: web.Request) -> web.Response:
    """POST /__fake/sign {"url": "<unsigned api-live URL>"} -> {"signed_url": ...}.

    Stands in for the external signer operators configure (tikrec.com, Euler); not TikTok.
    """
    state = get_ctx(request).state
    state.stats.sign_calls += 1
    if state.scenario.signer_down:
        return _sign_error("signer unavailable", status=503)
    try:
        body = json.loads(await request.text())
    except ValueError:
        body = None
    url = body.get("url") if isinstance(body, dict) else None
    if not isinstance(url, str) or not url:
        return _sign_error('body must be {"url": "<unsigned api-live URL>"}')
    try:
        signed = state.signer.sign_url(url)
    except ValueError as exc:
        return _sign_error(str(exc))
    state.stats.signatures_issued += 1
    return web.json_response({"signed_url": signed})
