"""In-memory world of the fake TikTok: users, rooms (status machine), scenario, request log."""

from __future__ import annotations

import asyncio
import random
import string
import time
from collections import deque
from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any, Literal
from urllib.parse import urlsplit

from shared.tiktok.waf import MAX_ANSWER
from tlr.fake_tiktok.defences import ApiSigner, DefenceStats, WafChallenges

FaultMode = Literal["eof", "reset", "stall"]
FAULT_MODES: tuple[FaultMode, ...] = ("eof", "reset", "stall")
DeadRungMode = Literal["404", "empty"]
DEAD_RUNG_MODES: tuple[DeadRungMode, ...] = ("404", "empty")
SigiScriptId = Literal["SIGI_STATE", "sigi-persisted-data"]
SIGI_SCRIPT_IDS: tuple[SigiScriptId, ...] = ("SIGI_STATE", "sigi-persisted-data")

URL_TTL_DEFAULT_S = 14 * 24 * 3600  # TikTok signs CDN URLs for about two weeks
REQUEST_LOG_LIMIT = 20_000  # bounded so long benchmarks do not grow memory without limit


class RoomStatus(IntEnum):
    """TikTok room status codes; a user who never went live has no room at all ("none")."""

    LIVE = 2
    PAUSED = 3
    ENDED = 4


def parse_fault_mode(value: object) -> FaultMode:
    if value not in FAULT_MODES:
        msg = f"mode must be one of {', '.join(FAULT_MODES)}"
        raise ValueError(msg)
    return value  # narrowed to FaultMode by the membership test


@dataclass
class RateLimit:
    """Sliding-window budget of TikTok-route requests per client IP."""

    max_req: int
    window_s: float


@dataclass
class Scenario:
    """Global behaviour switches (§5.3, §6), toggled with PUT /__fake/scenario.

    The defaults are TikTok as it is in late 2026 (`HARSH`, TIKTOK.md §6): the whole suite runs
    against it. `KIND` turns those defences off, for a test about something else that talks
    to the fake with a plain HTTP client. `waf` is an unsolvable block; `waf_challenge` a
    solvable proof of work.
    """

    blocked_country: bool = False
    waf: bool = False
    rate_limit: RateLimit | None = None
    fake_alive: bool = False
    empty_api_body: bool = False
    quality_cap_720: bool = False
    http_429: bool = False
    """When rate limited, answer 429 + Retry-After instead of the WAF behaviour."""
    url_ttl_s: int = URL_TTL_DEFAULT_S
    """Lifetime of newly issued stream URLs; set it low to test 403-on-expiry handling."""
    ts_offset_ms: int = 0
    """Added to every FLV timestamp; set near 2**24 to exercise the extended-timestamp byte."""
    waf_challenge: bool = True
    """www HTML routes answer a SlardarWAF proof of work until a fresh solution is presented."""
    waf_difficulty: int = MAX_ANSWER
    """Challenge answers are below this; tests lower it so solving takes milliseconds."""
    api_live_requires_signature: bool = True
    """api-live answers an empty body unless `X-Bogus` is what POST /__fake/sign issued."""
    signer_down: bool = False
    """The fake signing service answers 503 (tikrec.com outages, upstream #469)."""
    dead_top_rung: bool = True
    """The main URL of the best listed quality does not play (how: `dead_rung_mode`)."""
    dead_rung_mode: DeadRungMode = "404"
    backup_urls: bool = True
    """Every stream_data quality gets a working `backup` beside `main`."""
    sigi_room_id_empty: bool = True
    """The live page's SIGI roomIds are "" for live rooms; only the al:android:url meta has it."""
    sigi_script_id: SigiScriptId = "sigi-persisted-data"
    canonical_redirects: bool = True
    """Mixed-case or trailing-slash www paths answer 301 to the canonical lower-case path."""
    room_info_restricted: bool = False
    """Every room/info answers 4003110, as to a rate-limited or flagged IP (fault mode)."""
    live_page_soft_block: bool = False
    """The live page has no LiveRoom even for live users: a false "not found" (fault mode)."""
    api_live_user_not_found: bool = False
    """api-live answers 19881007 for every user, live ones too (fault mode)."""
    room_info_10011_for_age_gated: bool = False
    """Age-gated rooms without a session answer 10011 instead of 4003110 (fault mode)."""
    require_browser_headers: bool = True
    """www HTML routes answer 403 "Access Denied" to requests that are no browser navigation."""
    cdn_base_url: str | None = None
    """Stream URLs handed out point at this ``http(s)://host[:port]`` instead of this server
    (egress tests: a stream URL aimed at another service, or at a host name of the test's)."""
    cdn_redirect: str | None = None
    """Every CDN GET (a valid, signed one) answers 302 to this absolute URL (egress tests: a
    CDN redirecting to a loopback service or to 169.254.169.254)."""
    blocked_egresses: list[str] = field(default_factory=list)
    """Requests that came through a proxy tagging them (EGRESS_HEADER) with one of these are
    treated as from a blocked IP: WAF pages on www, empty bodies from the APIs (egress pool
    tests: one proxy of several blocked, the others working)."""

    def to_json(self) -> dict[str, Any]:
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        body["blocked_egresses"] = list(self.blocked_egresses)
        rate = self.rate_limit
        body["rate_limit"] = (
            None if rate is None else {"max_req": rate.max_req, "window_s": rate.window_s}
        )
        return body

    def update(self, flags: dict[str, Any]) -> None:
        """Apply a partial update; raise ValueError (before changing anything) on bad input."""
        known = set(self.to_json())
        unknown = sorted(set(flags) - known)
        if unknown:
            msg = f"unknown scenario flags: {', '.join(unknown)}"
            raise ValueError(msg)
        staged = {key: _parse_flag(key, value) for key, value in flags.items()}
        for key, value in staged.items():
            setattr(self, key, value)


# TikTok as it is in late 2026 (TIKTOK.md §6): the defaults. Fault modes (room_info_restricted,
# the false not-founds, signer_down) are not part of it: they are incidents, not the steady
# state, and each test turns on the one it is about.
HARSH: dict[str, Any] = {
    "waf_challenge": True,
    "api_live_requires_signature": True,
    "dead_top_rung": True,
    "backup_urls": True,
    "sigi_room_id_empty": True,
    "sigi_script_id": "sigi-persisted-data",
    "canonical_redirects": True,
    "require_browser_headers": True,
}

# The defences off: for tests of the fake's shapes with a plain client, and for comparison.
KIND: dict[str, Any] = {
    "waf_challenge": False,
    "api_live_requires_signature": False,
    "dead_top_rung": False,
    "backup_urls": False,
    "sigi_room_id_empty": False,
    "sigi_script_id": "SIGI_STATE",
    "canonical_redirects": False,
    "require_browser_headers": False,
}

_CHOICES: dict[str, tuple[str, ...]] = {
    "dead_rung_mode": DEAD_RUNG_MODES,
    "sigi_script_id": SIGI_SCRIPT_IDS,
}
_INT_RANGES: dict[str, tuple[int | None, int | None]] = {
    "url_ttl_s": (None, None),
    "ts_offset_ms": (None, None),
    "waf_difficulty": (1, MAX_ANSWER),
}


def _parse_flag(key: str, value: object) -> Any:
    if key == "rate_limit":
        return _parse_rate_limit(value)
    if key == "blocked_egresses":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            msg = f"{key} must be a list of strings"
            raise ValueError(msg)
        return list(value)
    if key in _URLS:
        return _parse_url(key, value)
    if key in _CHOICES:
        if not isinstance(value, str) or value not in _CHOICES[key]:
            msg = f"{key} must be one of {', '.join(_CHOICES[key])}"
            raise ValueError(msg)
        return value
    if key in _INT_RANGES:
        low, high = _INT_RANGES[key]
        if isinstance(value, bool) or not isinstance(value, int):
            msg = f"{key} must be an integer"
            raise ValueError(msg)
        if (low is not None and value < low) or (high is not None and value > high):
            msg = f"{key} must be in {low}..{high}"
            raise ValueError(msg)
        return value
    if not isinstance(value, bool):
        msg = f"{key} must be a boolean"
        raise ValueError(msg)
    return value


_URLS = ("cdn_base_url", "cdn_redirect")


def _parse_url(key: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        parts = urlsplit(value)
        if parts.scheme in ("http", "https") and parts.netloc:
            if key == "cdn_base_url":
                if parts.path.strip("/") or parts.query or parts.fragment:
                    msg = f"{key} must be scheme://host[:port] only"
                    raise ValueError(msg)
                return value.rstrip("/")
            return value
    msg = f"{key} must be null or an absolute http(s) URL"
    raise ValueError(msg)


def _parse_rate_limit(value: object) -> RateLimit | None:
    if value is None or value is False:
        return None
    if isinstance(value, dict):
        max_req, window_s = value.get("max_req"), value.get("window_s")
        if isinstance(max_req, int) and isinstance(window_s, int | float) and window_s > 0:
            return RateLimit(max_req=max_req, window_s=float(window_s))
    msg = "rate_limit must be null or {max_req: int, window_s: number > 0}"
    raise ValueError(msg)


@dataclass
class DropSpec:
    """A one-shot network fault: after `after_bytes` body bytes, stop as `mode` says."""

    after_bytes: int
    mode: FaultMode


@dataclass(eq=False)
class StreamConn:
    """One open FLV response; control actions wake it so it reacts without waiting for a tick."""

    sid: str
    suffix: str
    audio_only: bool
    transport: asyncio.Transport | None
    bytes_sent: int = 0
    drop: DropSpec | None = None
    _waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def sleep(self, delay: float | None) -> None:
        """Sleep `delay` seconds (None = until woken), returning early on `wake()`."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        # A plain future + call_later is much cheaper per tick than wait_for on an Event, which
        # matters with hundreds of concurrent streams.
        handle = None if delay is None else loop.call_later(delay, _resolve, waiter)
        try:
            await waiter
        finally:
            if handle is not None:
                handle.cancel()
            self._waiter = None

    def abort(self) -> None:
        """Close the socket at once (no FIN handshake wait); used by reset and server shutdown."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


@dataclass(eq=False)
class Room:
    """One broadcast. A new Room (new room_id and stream_id) is created on every go-live."""

    room_id: str
    stream_id: str
    owner: str
    title: str
    profile: str
    status: RoomStatus
    create_time: int
    started_mono: float
    user_count: int
    finish_time: int = 0
    end_mode: FaultMode | None = None
    profile_gen: int = 0
    """Bumped by `switch`; open connections compare it to know when to inject new headers."""
    pending_drop: DropSpec | None = None
    """A drop requested while no connection was open applies to the next one."""
    conns: set[StreamConn] = field(default_factory=set)

    def notify(self) -> None:
        for conn in list(self.conns):
            conn.wake()


@dataclass
class User:
    unique_id: str
    nickname: str
    user_id: str
    sec_uid: str
    age_restricted: bool = False
    private: bool = False
    room_id: str | None = None
    """The latest room; kept after the live ends, like TikTok's stale roomId."""


@dataclass
class RequestRecord:
    """One request to a TikTok-shaped route, as returned by GET /__fake/requests."""

    method: str
    path: str
    query: dict[str, str]
    query_string: str
    headers: dict[str, str]
    cookies: dict[str, str]
    remote: str | None
    time: float
    status: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "query_string": self.query_string,
            "headers": self.headers,
            "cookies": self.cookies,
            "remote": self.remote,
            "time": self.time,
            "status": self.status,
        }


class FakeState:
    """Everything the fake server knows; touched only from the event loop thread."""

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.users: dict[str, User] = {}
        self.rooms: dict[str, Room] = {}
        self.streams: dict[str, Room] = {}
        self.scenario = Scenario()
        self.requests: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_LIMIT)
        self._hits: dict[str, deque[float]] = {}
        self._issued: set[str] = set()
        self.waf_challenges = WafChallenges()
        self.signer = ApiSigner()  # kept across reset: one secret per server, like one signer
        self.stats = DefenceStats()

    def clear(self) -> None:
        """Forget everything; open streams are aborted by the caller (it owns the transports)."""
        self.users.clear()
        self.rooms.clear()
        self.streams.clear()
        self.scenario = Scenario()
        self.requests.clear()
        self._hits.clear()
        self._issued.clear()
        self.waf_challenges.clear()
        self.stats = DefenceStats()

    def find_user(self, unique_id: str) -> User | None:
        """Usernames are case-insensitive on TikTok: users are stored under the lower-case form."""
        return self.users.get(unique_id.removeprefix("@").lower())

    def current_room(self, user: User) -> Room | None:
        return None if user.room_id is None else self.rooms.get(user.room_id)

    def all_conns(self) -> list[StreamConn]:
        return [conn for room in self.rooms.values() for conn in room.conns]

    # --- identifiers -------------------------------------------------------------------------

    def _unique(self, make: str) -> str:
        while True:
            value = make + "".join(self.rng.choices(string.digits, k=19 - len(make)))
            if value not in self._issued:
                self._issued.add(value)
                return value

    def new_room_id(self) -> str:
        """19 digits, `75…` like real 2025-26 room ids."""
        return self._unique("75")

    def new_stream_id(self) -> str:
        return self._unique(self.rng.choice("12"))

    def new_user_id(self) -> str:
        return self._unique(self.rng.choice("67"))

    def new_sec_uid(self) -> str:
        alphabet = string.ascii_letters + string.digits + "-_"
        return "MS4wLjABAAAA" + "".join(self.rng.choices(alphabet, k=64))

    # --- rate limiting -----------------------------------------------------------------------

    def over_rate_limit(self, remote: str | None, now: float | None = None) -> bool:
        """Count this request for `remote`; True if its window now holds more than max_req.

        Blocked requests count too, so a client that keeps hammering stays blocked until it
        backs off for a whole window, roughly like TikTok's WAF.
        """
        limit = self.scenario.rate_limit
        if limit is None:
            return False
        now = time.monotonic() if now is None else now
        hits = self._hits.setdefault(remote or "?", deque())
        hits.append(now)
        while hits and hits[0] <= now - limit.window_s:
            hits.popleft()
        return len(hits) > limit.max_req
