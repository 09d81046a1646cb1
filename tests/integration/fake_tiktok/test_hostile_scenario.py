"""Hostile flags default to harsh and show in stats; all of them at once still let a client in."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
import pytest

from tests.integration.fake_tiktok.correct_client import (
    _APP_ROOM_RE,
    _UNIVERSAL_RE,
    BROWSER,
    FAST_WAF,
    api_live_url,
    browse,
    first_bytes,
    is_challenge,
    sign,
    state_of,
)
from tests.integration.fake_tiktok.helpers import live_user, room_info, stream_data_of, walk_tags
from tlr.fake_tiktok import HARSH, KIND, FakeTikTok
from tlr.fake_tiktok.state import Scenario

FAKE_TIKTOK_OPTIONS = {"speed": 20.0}


# --- scenario and stats --------------------------------------------------------------------


async def test_new_flags_default_to_harsh_and_kind_differs(client: httpx.AsyncClient) -> None:
    shown = (await client.get("/__fake/scenario")).json()
    defaults = {f.name: f.default for f in dataclasses.fields(Scenario)}
    assert HARSH
    assert set(KIND) == set(HARSH)
    for flag, harsh in HARSH.items():
        assert shown[flag] == defaults[flag] == harsh, flag
        assert KIND[flag] != harsh, flag
    assert shown["waf_difficulty"] == 1_000_000
    assert shown["dead_rung_mode"] == "404"
    fault_modes = (
        "signer_down",
        "room_info_restricted",
        "live_page_soft_block",
        "api_live_user_not_found",
        "room_info_10011_for_age_gated",
    )
    assert {flag: shown[flag] for flag in fault_modes} == dict.fromkeys(fault_modes, False)

    put = await client.put("/__fake/scenario", json=KIND)
    assert put.status_code == 200
    assert {flag: put.json()[flag] for flag in KIND} == KIND
    assert (await client.post("/__fake/reset")).status_code == 200
    after_reset = (await client.get("/__fake/scenario")).json()
    assert {flag: after_reset[flag] for flag in HARSH} == HARSH


@pytest.mark.parametrize(
    "bad",
    [
        {"waf_difficulty": 0},
        {"waf_difficulty": 1_000_001},
        {"waf_difficulty": True},
        {"dead_rung_mode": "gone"},
        {"sigi_script_id": "NEXT_DATA"},
        {"room_info_restricted": "yes"},
    ],
)
async def test_bad_flags_change_nothing(client: httpx.AsyncClient, bad: dict[str, Any]) -> None:
    before = (await client.get("/__fake/scenario")).json()
    change = {"waf_challenge": not before["waf_challenge"]}  # valid, and not the current value
    response = await client.put("/__fake/scenario", json={**change, **bad})
    assert response.status_code == 400
    assert "error" in response.json()
    assert (await client.get("/__fake/scenario")).json() == before


async def test_stats_endpoint_and_reset(fake: FakeTikTok, client: httpx.AsyncClient) -> None:
    await fake.set_scenario(**KIND)
    await fake.set_scenario(waf_challenge=True, waf_difficulty=FAST_WAF)
    assert is_challenge(await client.get("/live", headers=BROWSER))
    assert (await sign(client, api_live_url(fake, "alice"))).status_code == 200
    stats = (await client.get("/__fake/stats")).json()
    assert stats == await fake.stats()
    assert stats == {
        "waf_challenges_issued": 1,
        "waf_solutions_accepted": 0,
        "waf_solutions_rejected": 0,
        "access_denied": 0,
        "sign_calls": 1,
        "signatures_issued": 1,
    }
    await client.post("/__fake/reset")
    assert set((await fake.stats()).values()) == {0}


# --- all of it at once ---------------------------------------------------------------------


async def test_harsh_tiktok_still_resolves_for_a_correct_client(
    fake: FakeTikTok, client: httpx.AsyncClient
) -> None:
    handle = await live_user(fake)
    flags = await fake.set_scenario(**HARSH, waf_difficulty=FAST_WAF)
    assert {flag: flags[flag] for flag in HARSH} == HARSH

    # A naive client gets nothing from www and an empty api-live.
    assert (await client.get("/@alice/live")).status_code == 403
    assert is_challenge(await client.get("/@alice/live", headers=BROWSER))
    assert (await client.get(api_live_url(fake, "alice"))).content == b""

    profile = await browse(client, "/@Alice/")
    universal = _UNIVERSAL_RE.search(profile.text)
    assert universal is not None
    detail = json.loads(universal["json"])["__DEFAULT_SCOPE__"]["webapp.user-detail"]
    assert detail["userInfo"]["user"]["roomId"] == handle.room_id

    live = await browse(client, "/@alice/live")
    assert state_of(live.text)["CurrentRoom"]["roomId"] == ""
    app_room = _APP_ROOM_RE.search(live.text)
    assert app_room is not None
    assert app_room["id"] == handle.room_id

    signed_url = (await sign(client, api_live_url(fake, "alice"))).json()["signed_url"]
    api = (await client.get(signed_url)).json()
    assert api["data"]["user"]["roomId"] == handle.room_id

    qualities = stream_data_of(await room_info(client, handle.room_id))["data"]
    assert (await client.get(qualities["origin"]["main"]["flv"])).status_code == 404
    assert walk_tags(await first_bytes(client, qualities["origin"]["backup"]["flv"], 4096))
    stats = await fake.stats()
    assert stats["waf_solutions_accepted"] == 2
    assert stats["access_denied"] == 1
