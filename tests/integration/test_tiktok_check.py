"""`tlr check` and `GET /diagnostics/tiktok` against the fake TikTok as TikTok is today:
every step shown (WAF solved, room id, room/info, the dead rung, the backup that plays)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import httpx

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from tlr.fake_tiktok import FakeTikTok
from tlr.nats_server import NatsServer

FAKE_TIKTOK_OPTIONS = {"speed": 10.0}
KEY = "k-check"  # an admin's: API_KEYS_FILE role=admin
USER_KEY = "k-check-user"  # an API_KEYS key: no admin
ROOT = Path(__file__).resolve().parents[2]


async def tlr_check(fake: FakeTikTok, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "TIKTOK_WEB_BASE": fake.base_url,
        "TIKTOK_WEBCAST_BASE": fake.base_url,
        **fake.egress_env,  # its probes fetch the fake's streams, on 127.0.0.1
        "LOG_LEVEL": "WARNING",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tlr.cli",
        "check",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_tlr_check_shows_each_step_of_a_live_user(fake_tiktok: FakeTikTok) -> None:
    await fake_tiktok.create_user("alice")
    live = await fake_tiktok.go_live("alice", title="hello")
    code, out, err = await tlr_check(fake_tiktok, "https://www.tiktok.com/@Alice/live")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("tlr check https://www.tiktok.com/@Alice/live (direct")
    assert any("profile_page" in line and "WAF challenge solved" in line for line in lines)
    assert any("profile_page" in line and "WAF challenge passed" in line for line in lines)
    assert f"  room id: {live.room_id} (@alice)" in lines
    assert any(line.startswith("  room status: 2 (live) from room_info") for line in lines)
    assert any("stream origin (main): HTTP 404" in line for line in lines)
    assert any("stream origin (backup): media" in line for line in lines)
    assert lines[-1] == "OK: records origin from the backup URL"
    assert "sign=" not in out  # stream signatures stay private


async def test_tlr_check_json_and_failures(fake_tiktok: FakeTikTok) -> None:
    await fake_tiktok.create_user("bob")
    code, out, _ = await tlr_check(fake_tiktok, "@bob", "--json")
    assert code == 0  # never live: resolved, nothing to play
    report = json.loads(out)
    assert (report["ok"], report["room_id"], report["unique_id"]) == (True, None, "bob")
    assert report["steps"]
    code, out, _ = await tlr_check(fake_tiktok, "@nobody")
    assert code == 1
    assert "failed: USER_NOT_FOUND" in out
    code, _, err = await tlr_check(fake_tiktok, "https://evil.example/@x")
    assert code == 2
    assert "not a TikTok URL" in err


async def test_diagnostics_route(
    nats_server: NatsServer, fake_tiktok: FakeTikTok, tmp_path: Path
) -> None:
    await fake_tiktok.create_user("carol")
    live = await fake_tiktok.go_live("carol")
    await fake_tiktok.set_scenario(room_info_restricted=True)  # a flagged IP
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"ops {KEY} role=admin\n")
    settings = GatewaySettings(
        api_keys=[USER_KEY],
        api_keys_file=keys_file,
        nats_url=nats_server.client_url,
        tiktok_web_base=fake_tiktok.base_url,
        tiktok_webcast_base=fake_tiktok.base_url,
        **fake_tiktok.egress_settings,
    )
    async with NatsLink(settings) as link:
        app = create_app(settings, link=link)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", headers={"X-API-Key": KEY}, timeout=60
        ) as client:
            answer = await client.get("/diagnostics/tiktok", params={"target": "@carol"})
            assert answer.status_code == 200, answer.text
            report = answer.json()
            assert report["ok"] is True
            assert (report["room_id"], report["status"]) == (live.room_id, 2)
            # room/info said 4003110; the live page carried the streams
            assert report["info_source"] == "live_page"
            assert report["stream"]["source"] == "backup"
            endpoints = [s["endpoint"] for s in report["steps"]]
            assert endpoints[:2] == ["profile_page", "profile_page"]
            assert "room_info" in endpoints
            assert "live_page" in endpoints
            bad = await client.get("/diagnostics/tiktok", params={"target": "http://10.0.0.1/"})
            assert bad.status_code == 422
            assert bad.json()["error_code"] == "VALIDATION_ERROR"
            anonymous = await client.get(
                "/diagnostics/tiktok", params={"target": "@carol"}, headers={"X-API-Key": ""}
            )
            assert anonymous.status_code == 401
            # It spends the host's standing with TikTok: admins only.
            user = await client.get(
                "/diagnostics/tiktok", params={"target": "@carol"}, headers={"X-API-Key": USER_KEY}
            )
            assert user.status_code == 403
            assert user.json()["error_code"] == "FORBIDDEN"
