"""GET /watchers pages the scheduler's watchers; GET /watchers/{key} finds one by any name."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from shared import events as ev
from tests.integration.gateway_watchers.helpers import ROOM, SHORT, FakeScheduler, H, path

# --- read -------------------------------------------------------------------------------------


async def test_list_pages(client: httpx.AsyncClient, scheduler: FakeScheduler) -> None:
    t0 = ev.utc_now()
    keys = [f"@user{i}" for i in range(5)]
    for i, key in enumerate(keys):
        scheduler.add(
            key, created_at=t0 + timedelta(seconds=i), options=ev.RecordingOptions(proxy="sealed-x")
        )
    r = await client.get("/watchers", params={"page": 2, "page_size": 2}, headers=H)
    assert r.status_code == 200
    body = r.json()
    assert (body["page"], body["page_size"], body["total"]) == (2, 2, 5)
    assert [w["key"] for w in body["items"]] == keys[2:4]
    assert "sealed-x" not in r.text
    assert body["items"][0]["options"]["proxy"] is True

    body = (await client.get("/watchers", headers=H)).json()
    assert (body["page"], body["page_size"], body["total"]) == (1, 50, 5)
    assert [w["key"] for w in body["items"]] == keys
    body = (await client.get("/watchers?page=4&page_size=2", headers=H)).json()
    assert (body["items"], body["total"]) == ([], 5)


@pytest.mark.parametrize(
    "query", ["page=0", "page=-1", "page_size=0", "page_size=501", "page=x", "page_size=1.5"]
)
@pytest.mark.usefixtures("scheduler")
async def test_list_refuses_bad_paging(client: httpx.AsyncClient, query: str) -> None:
    r = await client.get(f"/watchers?{query}", headers=H)
    assert r.status_code == 422
    assert r.json()["error_code"] == "VALIDATION_ERROR"


async def test_get_one_by_room_id_user_or_url(
    client: httpx.AsyncClient, scheduler: FakeScheduler
) -> None:
    scheduler.add(ROOM, room_id=ROOM)
    scheduler.add("@alice", unique_id="alice", url="@alice", status="paused")
    scheduler.add(SHORT, url=SHORT, poll_interval=15)
    cases = {
        f"/watchers/{ROOM}": ROOM,
        "/watchers/@alice": "@alice",
        path("@alice"): "@alice",
        path("https://www.tiktok.com/@alice/live"): "@alice",  # the registered URL
        path(SHORT): SHORT,
    }
    for url, key in cases.items():
        r = await client.get(url, headers=H)
        assert r.status_code == 200, url
        assert r.json()["key"] == key
    got = (await client.get(path(SHORT), headers=H)).json()
    assert (got["poll_interval"], got["status"], got["options"]["proxy"]) == (15, "active", False)


@pytest.mark.parametrize(
    "key",
    [
        "@nobody",
        "7503448765740976999",
        "https://www.tiktok.com/@nobody/live",
        "$(id)",
        "; rm -rf /",
        "`id`",
        "../../etc/passwd",
        "file:///etc/passwd",
        "@alice\n",
        "@" + "a" * 400,
    ],
)
async def test_unknown_or_malformed_key_is_404_with_error_body(
    client: httpx.AsyncClient, scheduler: FakeScheduler, key: str
) -> None:
    scheduler.add("@alice")
    for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/pause"), ("POST", "/resume")):
        r = await client.request(
            method, path(key) + suffix, headers={**H, "X-Correlation-ID": "corr-404"}
        )
        assert r.status_code == 404, (method, suffix)
        body = r.json()
        assert set(body) == {"error_code", "error_message", "correlation_id"}
        assert (body["error_code"], body["correlation_id"]) == ("NOT_FOUND", "corr-404")
