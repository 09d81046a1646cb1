"""POST/GET/DELETE /subscriptions: a gateway and the real notifier on a real nats-server, a
real HTTP receiver on loopback."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from services.notifier.service import NotifierService
from services.notifier.settings import NotifierSettings
from shared.bus import Bus
from shared.events import RoomLive
from shared.jobs import JobRequest
from shared.secrets import new_key
from shared.subjects import SUBSCRIPTIONS_BUCKET
from tests.helpers import job_store
from tests.webhook_receiver import WebhookReceiver
from tlr.nats_server import NatsServer

ALICE, BOB, ADMIN = ({"X-API-Key": f"key-{n}-0123456789"} for n in ("alice", "bob", "admin"))
SECRET_KEY = new_key()

Gateway = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-keys"
    path.write_text(
        f"alice {ALICE['X-API-Key']}\nbob {BOB['X-API-Key']}\n"
        f"admin {ADMIN['X-API-Key']} role=admin\n"
    )
    return path


@pytest.fixture
def gateway(nats_server: NatsServer, keys_file: Path) -> Gateway:
    @asynccontextmanager
    async def start(**extra: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = GatewaySettings(
            api_keys_file=keys_file,
            nats_url=nats_server.client_url,
            rate_limit_per_min=1000,
            **{"secret_key": SECRET_KEY, "allow_private_webhooks": True, **extra},
        )
        async with NatsLink(settings) as link:
            await link.wait_connected()
            transport = httpx.ASGITransport(app=create_app(settings, link=link))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                yield client

    return start


@pytest.fixture
async def notifier(bus: Bus, nats_server: NatsServer) -> AsyncIterator[NotifierService]:
    settings = NotifierSettings(
        nats_url=nats_server.client_url,
        instance_id="notifier-1",
        secret_key=SECRET_KEY,
        allow_private_webhooks=True,
    )
    async with NotifierService(bus, settings) as service:
        yield service


def webhook(url: str, **extra: Any) -> dict[str, Any]:
    return {"events": ["room.live"], "target": {"type": "webhook", "url": url}, **extra}


@pytest.mark.usefixtures("notifier")
async def test_a_webhook_subscription_signs_what_it_sends_with_the_secret_shown_once(
    gateway: Gateway, bus: Bus, uid: str
) -> None:
    async with WebhookReceiver() as receiver, gateway() as gw:
        url = f"http://user:pw@127.0.0.1:{receiver.port}/hooks/t0ken?sig=abc"
        created = await gw.post("/subscriptions", json=webhook(url), headers=ALICE)
        assert created.status_code == 201, created.text
        body = created.json()
        secret = body["secret"]
        assert len(secret) >= 32
        assert body["target"] == {"type": "webhook", "url": f"http://127.0.0.1:{receiver.port}/…"}

        got = await gw.get(f"/subscriptions/{body['id']}", headers=ALICE)
        listed = await gw.get("/subscriptions", headers=ALICE)
        jobs = await job_store(bus)
        await jobs.submit(JobRequest(job_id=uid, owner="alice", watcher_key="@alice"))
        await bus.publish(RoomLive(job_id=uid, room_id="7001", watcher_key="@alice"))
        await receiver.wait_for(1)
        stored = (await (await bus.kv(SUBSCRIPTIONS_BUCKET)).get(f"sub.{body['id']}")).value

    assert got.status_code == 200
    assert "secret" not in got.json()
    assert got.json()["target"] == body["target"]
    assert [s["id"] for s in listed.json()["items"]] == [body["id"]]
    for text in (got.text, listed.text, (stored or b"").decode()):
        assert "t0ken" not in text
        assert "pw@" not in text
        assert secret not in text
    (request,) = receiver.requests
    timestamp = request.headers["x-tlr-timestamp"]
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256)
    assert request.headers["x-tlr-signature"] == f"sha256={mac.hexdigest()}"
    assert request.path == "/hooks/t0ken?sig=abc"
    assert request.json()["job_id"] == uid


@pytest.mark.usefixtures("notifier")
async def test_a_private_webhook_is_refused_unless_the_operator_allows_it(
    gateway: Gateway,
) -> None:
    async with gateway(allow_private_webhooks=False) as gw:
        for url in ("http://127.0.0.1:9/x", "http://10.0.0.7/x", "http://[::1]/x"):
            answer = await gw.post("/subscriptions", json=webhook(url), headers=ALICE)
            assert answer.status_code == 422, url
            assert answer.json()["error_code"] == "VALIDATION_ERROR"
            assert "ALLOW_PRIVATE_WEBHOOKS" in answer.json()["error_message"]
        listed = await gw.get("/subscriptions", headers=ALICE)
    assert listed.json()["items"] == []


@pytest.mark.usefixtures("notifier")
@pytest.mark.parametrize(
    "body",
    [
        webhook("ftp://example.com/x"),
        webhook("file:///etc/passwd"),
        webhook("https://example.com/a b"),
        {"events": ["room.live"], "target": {"type": "apprise", "url": "bogus://x"}},
        {"events": ["watch.requested"], "target": {"type": "webhook", "url": "https://e.com"}},
        {"events": [], "target": {"type": "webhook", "url": "https://example.com"}},
        webhook("https://example.com", watchers=["not a user!"]),
        {"events": ["room.live"], "target": {"type": "sms", "url": "https://example.com"}},
    ],
)
async def test_a_bad_subscription_is_a_422_and_nothing_is_stored(
    gateway: Gateway, body: dict[str, Any]
) -> None:
    async with gateway() as gw:
        answer = await gw.post("/subscriptions", json=body, headers=ALICE)
        listed = await gw.get("/subscriptions", headers=ALICE)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error_code"] == "VALIDATION_ERROR"
    assert listed.json()["items"] == []


@pytest.mark.usefixtures("notifier")
async def test_a_key_sees_and_deletes_only_its_own_subscriptions(gateway: Gateway) -> None:
    async with gateway() as gw:
        apprise = {"events": ["room.live"], "target": {"type": "apprise", "url": "tgram://1:A/2"}}
        alice = (await gw.post("/subscriptions", json=apprise, headers=ALICE)).json()
        bob = await gw.post("/subscriptions", json=webhook("http://127.0.0.1/b"), headers=BOB)
        bob_id = bob.json()["id"]
        assert alice["secret"] is None
        assert alice["target"] == {"type": "apprise", "url": "tgram://…"}

        assert (await gw.get(f"/subscriptions/{bob_id}", headers=ALICE)).status_code == 404
        assert (await gw.delete(f"/subscriptions/{bob_id}", headers=ALICE)).status_code == 404
        mine = (await gw.get("/subscriptions", headers=ALICE)).json()["items"]
        everyone = (await gw.get("/subscriptions", headers=ADMIN)).json()["items"]

        deleted = await gw.delete(f"/subscriptions/{alice['id']}", headers=ALICE)
        again = await gw.get(f"/subscriptions/{alice['id']}", headers=ALICE)
        malformed = await gw.get("/subscriptions/..%2F..%2Fetc", headers=ALICE)

    assert [s["id"] for s in mine] == [alice["id"]]
    assert {s["id"] for s in everyone} == {alice["id"], bob_id}
    assert deleted.status_code == 200
    assert again.status_code == 404
    assert again.json()["error_code"] == "NOT_FOUND"
    assert malformed.status_code in (404, 422)


async def test_without_a_notifier_the_routes_answer_503(gateway: Gateway) -> None:
    async with gateway() as gw:
        created = await gw.post("/subscriptions", json=webhook("http://1.2.3.4/x"), headers=ALICE)
        listed = await gw.get("/subscriptions", headers=ALICE)
    for answer in (created, listed):
        assert answer.status_code == 503
        assert answer.json()["error_code"] == "SERVICE_UNAVAILABLE"
