"""The client's verdicts on HTTP statuses and transport errors, its input checks, error codes."""

from __future__ import annotations

import httpx
import pytest

from shared.errors import ErrorCode
from shared.tiktok import (
    AgeRestricted,
    CountryBlocked,
    LiveOffline,
    NetworkTimeout,
    TikTokClient,
    TikTokError,
    UnexpectedResponse,
    UserNotFound,
    WafBlocked,
)
from tests.unit.tiktok_parsing.helpers import ROOM, mock_client, no_network


@pytest.mark.parametrize(
    ("status", "error"), [(403, WafBlocked), (429, WafBlocked), (500, UnexpectedResponse)]
)
async def test_http_status_verdicts(status: int, error: type[TikTokError]) -> None:
    def handler(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers={"Retry-After": "30"}, content=b"")

    async with mock_client(handler) as client:
        with pytest.raises(error) as caught:
            await client.room_info(ROOM)
    assert caught.value.retryable
    if isinstance(caught.value, WafBlocked):
        assert caught.value.retry_after == 30.0


async def test_live_page_redirect_is_a_country_block_and_transport_errors_are_wrapped() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/live"):
            return httpx.Response(302, headers={"Location": "/login?redirect_url=x"})
        msg = "timed out"
        raise httpx.ReadTimeout(msg, request=request)

    async with mock_client(handler) as client:
        with pytest.raises(CountryBlocked):
            await client.live_page("alice")
        with pytest.raises(NetworkTimeout) as caught:
            await client.check_alive([ROOM])
    assert (caught.value.code, caught.value.retryable) == (ErrorCode.NETWORK_TIMEOUT, True)


async def test_invalid_inputs_are_value_errors() -> None:
    async with mock_client(no_network) as client:
        with pytest.raises(ValueError, match="room id"):
            await client.room_info("123")
        with pytest.raises(ValueError, match="room id"):
            await client.check_alive([ROOM, "x"])
        assert await client.check_alive([]) == {}
        with pytest.raises(ValueError, match="username"):
            await client.user_room("../../admin")
        with pytest.raises(ValueError, match="username"):
            await client.live_page("a/b")


def test_bad_proxy_url_message_hides_the_password() -> None:
    with pytest.raises(ValueError, match="proxy") as caught:
        TikTokClient(
            web_base="https://www.tiktok.com",
            webcast_base="https://webcast.tiktok.com",
            proxy="gopher://user:hunter2@proxy.example:1080",
        )
    assert "hunter2" not in str(caught.value)


def test_error_codes_and_retryability() -> None:
    cases: list[tuple[TikTokError, ErrorCode, bool]] = [
        (LiveOffline(target="room 1", status=4), ErrorCode.LIVE_OFFLINE, False),
        (UserNotFound(target="@x"), ErrorCode.USER_NOT_FOUND, False),
        (AgeRestricted(room_id="1"), ErrorCode.AGE_RESTRICTED, False),
        (CountryBlocked(target="@x"), ErrorCode.COUNTRY_BLOCKED, False),
        (WafBlocked(endpoint="room_info", reason="empty body"), ErrorCode.WAF_BLOCKED, True),
        (NetworkTimeout(endpoint="room_info", reason="x"), ErrorCode.NETWORK_TIMEOUT, True),
        (UnexpectedResponse(endpoint="x", detail="y"), ErrorCode.SERVICE_UNAVAILABLE, True),
    ]
    for error, code, retryable in cases:
        assert (error.code, error.retryable) == (code, retryable)
        assert error.outcome == code.value.lower()
        assert str(error)
