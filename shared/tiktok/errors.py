"""Every TikTok failure as one exception type carrying its ErrorCode and whether to retry.

    TikTokError             code: ErrorCode, retryable: bool
    ├── LiveOffline         LIVE_OFFLINE         room ended (status 4) or user never live
    ├── UserNotFound        USER_NOT_FOUND       unknown user (19881007) or room id (10011)
    ├── AgeRestricted       AGE_RESTRICTED       4003110: 18+ without login, or private LIVE
    ├── CountryBlocked      COUNTRY_BLOCKED      www LIVE pages answer 302 to /login
    ├── WafBlocked          WAF_BLOCKED          retryable: empty body, "Please wait...", 403/429
    ├── NetworkTimeout      NETWORK_TIMEOUT      retryable: timeout, refused/reset connection
    ├── UnexpectedResponse  SERVICE_UNAVAILABLE  retryable: an answer we cannot make sense of
    ├── ProxyNotAllowed     VALIDATION_ERROR     the proxy is on a private address (egress)
    └── StreamHostNotAllowed STREAM_HOST_NOT_ALLOWED  no stream URL passes the egress policy

Subclasses take keyword-only fields and build their message in ``__init__``, so a message
never carries cookies or proxy credentials and every raise site reads the same way. Messages
reach API answers (``error_message``): nothing in them comes from a transport error's text.
"""

from __future__ import annotations

from shared.errors import ErrorCode


class TikTokError(Exception):
    """Base class: ``code`` goes into API errors and ``recording.finished``; ``retryable`` steers
    whether the caller backs off and tries again or gives up on this attempt."""

    def __init__(self, message: str, *, code: ErrorCode, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable

    @property
    def outcome(self) -> str:
        """The metric/log label of this failure, e.g. ``waf_blocked``."""
        return self.code.value.lower()


class LiveOffline(TikTokError):
    """The room exists but is not broadcasting (ended, or the user has no room at all)."""

    def __init__(self, *, target: str, status: int | None = None) -> None:
        detail = f" (room status {status})" if status is not None else ""
        msg = f"{target} is not live{detail}"
        super().__init__(msg, code=ErrorCode.LIVE_OFFLINE, retryable=False)
        self.target = target
        self.status = status


class UserNotFound(TikTokError):
    """TikTok does not know this user or room id."""

    def __init__(self, *, target: str, detail: str = "") -> None:
        msg = f"TikTok does not know {target}" + (f": {detail}" if detail else "")
        super().__init__(msg, code=ErrorCode.USER_NOT_FOUND, retryable=False)
        self.target = target


class AgeRestricted(TikTokError):
    """4003110: the LIVE needs a logged-in session (18+) or following the creator (private).

    Not retryable by default: without new cookies the answer will not change. TikTok also sends
    4003110 to rate-limited IPs, which the message says so an operator is not misled.
    """

    def __init__(self, *, room_id: str, private: bool = False, logged_in: bool = False) -> None:
        if private:
            msg = (
                f"room {room_id} is a private LIVE: follow the creator with the account whose "
                "cookies are configured"
            )
        elif logged_in:
            msg = (
                f"room {room_id} is restricted even with the configured cookies: they may be "
                "expired or for another data centre (tt-target-idc), or the IP is rate limited"
            )
        else:
            msg = (
                f"room {room_id} is age-restricted: configure the cookies of a logged-in account "
                "(sessionid or sessionid_ss); TikTok also answers this to rate-limited IPs"
            )
        super().__init__(msg, code=ErrorCode.AGE_RESTRICTED, retryable=False)
        self.room_id = room_id
        self.private = private


class CountryBlocked(TikTokError):
    """www.tiktok.com redirects LIVE pages to /login from this country (webcast still works)."""

    def __init__(self, *, target: str) -> None:
        msg = (
            f"TikTok LIVE pages are blocked from this country ({target}): "
            "use a room id, cookies of a logged-in account, or a proxy elsewhere"
        )
        super().__init__(msg, code=ErrorCode.COUNTRY_BLOCKED, retryable=False)
        self.target = target


class WafBlocked(TikTokError):
    """TikTok's WAF refused us: empty API body, a "Please wait..." page, 403 or 429."""

    def __init__(self, *, endpoint: str, reason: str, retry_after: float | None = None) -> None:
        msg = f"TikTok WAF blocked {endpoint} ({reason}); back off or change IP"
        super().__init__(msg, code=ErrorCode.WAF_BLOCKED, retryable=True)
        self.endpoint = endpoint
        self.retry_after = retry_after


class NetworkTimeout(TikTokError):
    """No usable answer at the transport level: timeout, refused or reset connection, proxy
    failure. One code for all of them because the caller's reaction is the same: retry later."""

    def __init__(self, *, endpoint: str, reason: str) -> None:
        # ``reason`` is a fixed phrase (shared.tiktok.guards.transport_reason), never the
        # exception's text: a proxy or a service behind it could have put a banner there.
        msg = f"network error calling TikTok {endpoint}: {reason}"
        super().__init__(msg, code=ErrorCode.NETWORK_TIMEOUT, retryable=True)
        self.endpoint = endpoint


class UnexpectedResponse(TikTokError):
    """A well-delivered answer we cannot interpret (new status code, changed shape, 5xx).

    Retryable because TikTok changes these endpoints often and errors are often transient;
    SERVICE_UNAVAILABLE because it is the upstream, not us, that is not serving.
    """

    def __init__(self, *, endpoint: str, detail: str) -> None:
        msg = f"unexpected answer from TikTok {endpoint}: {detail}"
        super().__init__(msg, code=ErrorCode.SERVICE_UNAVAILABLE, retryable=True)
        self.endpoint = endpoint


class ProxyNotAllowed(TikTokError):
    """The job's or watcher's proxy is on a private, loopback or link-local address (or its
    name resolves to one) and ALLOW_PRIVATE_PROXIES is off: nothing is sent through it."""

    def __init__(self) -> None:
        msg = (
            "options.proxy is on a private, loopback or link-local address, "
            "which this deployment does not allow"
        )
        super().__init__(msg, code=ErrorCode.VALIDATION_ERROR, retryable=False)


class StreamHostNotAllowed(TikTokError):
    """Every stream URL TikTok gave is off STREAM_HOST_SUFFIXES or points (or redirects) at a
    private address: none is fetched. The hosts are in the recorder's log, not here."""

    def __init__(self) -> None:
        msg = (
            "no stream URL is on a host this deployment fetches from "
            "(STREAM_HOST_SUFFIXES; no private addresses)"
        )
        super().__init__(msg, code=ErrorCode.STREAM_HOST_NOT_ALLOWED, retryable=False)
