"""CORS: only CORS_ORIGINS get CORS headers; preflights; error answers readable by those origins."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings

KEY = "k-cors"
ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.com"
PREFLIGHT = {
    "Origin": ALLOWED,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "X-API-Key, Content-Type, X-Correlation-ID",
}


def make_app(origins: list[str]) -> FastAPI:
    settings = GatewaySettings(
        api_keys=[KEY], nats_url="nats://127.0.0.1:1", cors_origins=origins, max_body_bytes=1024
    )
    return create_app(settings, link=NatsLink(settings))


@pytest.fixture
def app() -> FastAPI:
    # A trailing slash, as an operator might write it, still matches the browser's Origin.
    return make_app([ALLOWED + "/", "https://other-app.example.com"])


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        yield c


def cors_headers(r: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in r.headers.items() if k.startswith("access-control-")}


async def test_allowed_origin_gets_the_headers(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"Origin": ALLOWED})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ALLOWED
    exposed = {h.strip() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"X-Correlation-ID", "Retry-After", "X-RateLimit-Remaining"} <= exposed
    assert "access-control-allow-credentials" not in r.headers
    assert "Origin" in r.headers["vary"]


async def test_another_origin_gets_no_cors_header(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"Origin": OTHER})
    assert r.status_code == 200  # CORS is not access control: the browser hides the answer
    assert cors_headers(r) == {}
    assert "Origin" in r.headers["vary"]


async def test_preflight_of_an_allowed_origin(client: httpx.AsyncClient) -> None:
    r = await client.options("/recordings", headers=PREFLIGHT)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == ALLOWED
    methods = {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
    assert methods == {"GET", "POST", "PATCH", "DELETE"}
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"x-api-key", "content-type", "x-correlation-id"} <= allowed
    assert int(r.headers["access-control-max-age"]) > 0
    assert r.headers["x-correlation-id"]


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({"Origin": OTHER}, "origin"),
        ({"Access-Control-Request-Method": "PUT"}, "method"),
        ({"Access-Control-Request-Headers": "X-API-Key, Authorization"}, "headers"),
    ],
)
async def test_refused_preflight_has_the_error_body_and_no_cors_header(
    client: httpx.AsyncClient, headers: dict[str, str], refused: str
) -> None:
    r = await client.options("/recordings", headers={**PREFLIGHT, **headers})
    assert r.status_code == 400
    body = r.json()
    assert body["error_code"] == "VALIDATION_ERROR"
    assert refused in body["error_message"]
    assert body["correlation_id"] == r.headers["x-correlation-id"]
    assert cors_headers(r) == {}


@pytest.mark.parametrize(
    ("method", "path", "headers", "content", "status"),
    [
        ("GET", "/services", {}, None, 401),
        ("GET", "/nope", {}, None, 404),
        ("POST", "/recordings", {}, b"x" * 2048, 413),
        ("POST", "/recordings", {"X-API-Key": KEY}, b"{}", 415),
    ],
)
async def test_error_answers_are_readable_by_an_allowed_origin(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    headers: dict[str, str],
    content: bytes | None,
    status: int,
) -> None:
    r = await client.request(method, path, headers={"Origin": ALLOWED, **headers}, content=content)
    assert r.status_code == status
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert r.json()["correlation_id"] == r.headers["x-correlation-id"]


async def test_an_unhandled_error_is_readable_by_an_allowed_origin(app: FastAPI) -> None:
    async def boom() -> None:
        msg = "internals"
        raise RuntimeError(msg)

    app.add_api_route("/boom", boom, methods=["GET"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        r = await c.get("/boom", headers={"Origin": ALLOWED})
    assert r.status_code == 500
    assert r.json()["error_code"] == "INTERNAL"
    assert r.headers["access-control-allow-origin"] == ALLOWED


async def test_without_cors_origins_there_is_no_cors() -> None:
    transport = httpx.ASGITransport(app=make_app([]))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        r = await c.get("/healthz", headers={"Origin": ALLOWED})
        assert r.status_code == 200
        assert cors_headers(r) == {}
        r = await c.options("/recordings", headers=PREFLIGHT)
    # No CORS layer: the router answers OPTIONS like any method it does not serve.
    assert r.status_code == 405
    assert r.json()["error_code"] == "METHOD_NOT_ALLOWED"
    assert cors_headers(r) == {}
