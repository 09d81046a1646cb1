"""api-live answers only X-Bogus-signed requests; the fake's signing service refuses or fails."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.fake_tiktok.correct_client import api_live_url, sign
from tests.integration.fake_tiktok.helpers import live_user
from tlr.fake_tiktok import KIND, FakeTikTok

FAKE_TIKTOK_OPTIONS = {"speed": 20.0}


# --- 3, 4: signed api-live and the signing service ----------------------------------------


async def test_api_live_needs_the_signers_x_bogus(
    fake: FakeTikTok, client: httpx.AsyncClient
) -> None:
    handle = await live_user(fake)
    await fake.create_user("bob")
    unsigned = api_live_url(fake, "alice")
    await fake.set_scenario(**KIND)
    assert (await client.get(unsigned)).json()["data"]["user"]["roomId"] == handle.room_id

    await fake.set_scenario(api_live_requires_signature=True)
    for url in (unsigned, unsigned + "&X-Bogus=DFSzswVOe2tANxBbtPqXv3NjD6y6"):
        response = await client.get(url)
        assert (response.status_code, response.content) == (200, b"")

    signed = await sign(client, unsigned)
    assert signed.status_code == 200
    signed_url = signed.json()["signed_url"]
    prefix, _, signature = signed_url.partition("&X-Bogus=")
    assert prefix == unsigned
    assert len(signature) == 28
    body = (await client.get(signed_url)).json()
    assert body["statusCode"] == 0
    assert body["data"]["user"]["roomId"] == handle.room_id
    assert isinstance(body["data"]["liveRoom"]["streamData"]["pull_data"]["stream_data"], str)

    # The signature covers the query: it does not carry over to another user.
    other = (await client.get(signed_url.replace("uniqueId=alice", "uniqueId=bob"))).content
    assert other == b""


@pytest.mark.parametrize(
    "body",
    [
        {"url": "http://127.0.0.1/webcast/room/info/?aid=1988&room_id=1"},
        {"url": ""},
        {"unique_id": "alice"},
        ["http://127.0.0.1/api-live/user/room/?uniqueId=alice"],
    ],
)
async def test_signer_refuses_bad_requests(client: httpx.AsyncClient, body: object) -> None:
    response = await client.post("/__fake/sign", json=body)
    assert response.status_code == 400
    assert response.json()["error"]


async def test_signer_down(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    await fake.set_scenario(signer_down=True)
    response = await sign(client, api_live_url(fake, "alice"))
    assert response.status_code == 503
    assert response.json()["error"]
    await fake.set_scenario(signer_down=False)
    assert (await sign(client, api_live_url(fake, "alice"))).status_code == 200
    stats = await fake.stats()
    assert (stats["sign_calls"], stats["signatures_issued"]) == (2, 1)
