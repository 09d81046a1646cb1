"""The HTTP edge without NATS: auth, the error body on every error, correlation ids, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from structlog.testing import capture_logs

from services.gateway.app import create_app
from services.gateway.nats_link import NatsLink
from shared.config import GatewaySettings

KEY = "test-key-1"
ERROR_FIELDS = {"error_code", "error_message", "correlation_id"}


@pytest.fixture
def app() -> FastAPI:
    # A link that is never entered: NATS is "not connected" for the whole test.
    settings = GatewaySettings(api_keys=[KEY, "other-key"], nats_url="nats://127.0.0.1:1")
    return create_app(settings, link=NatsLink(settings))


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        yield c


async def test_healthz_needs_no_key(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_ready_is_503_with_error_body_without_nats(client: httpx.AsyncClient) -> None:
    r = await client.get("/ready")
    assert r.status_code == 503
    assert r.json()["error_code"] == "SERVICE_UNAVAILABLE"
    assert set(r.json()) == ERROR_FIELDS


async def test_missing_key_is_401(client: httpx.AsyncClient) -> None:
    r = await client.get("/services")
    assert r.status_code == 401
    body = r.json()
    assert set(body) == ERROR_FIELDS
    assert body["error_code"] == "UNAUTHORIZED"
    assert body["correlation_id"] == r.headers["x-correlation-id"]


async def test_unknown_key_is_403(client: httpx.AsyncClient) -> None:
    r = await client.get("/services", headers={"X-API-Key": "nope"})
    assert r.status_code == 403
    assert r.json()["error_code"] == "FORBIDDEN"


async def test_known_key_passes_auth(client: httpx.AsyncClient) -> None:
    # Past auth, the route itself says NATS is down.
    r = await client.get("/services", headers={"X-API-Key": "other-key"})
    assert r.status_code == 503


async def test_key_is_never_logged(client: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        await client.get("/services", headers={"X-API-Key": KEY})
    assert KEY not in repr(logs)


async def test_unknown_route_is_404_with_error_body(client: httpx.AsyncClient) -> None:
    r = await client.get("/no/such/thing", headers={"X-API-Key": KEY})
    assert r.status_code == 404
    assert r.json()["error_code"] == "NOT_FOUND"


async def test_wrong_method_is_405_with_error_body(client: httpx.AsyncClient) -> None:
    r = await client.delete("/healthz")
    assert r.status_code == 405
    assert r.json()["error_code"] == "METHOD_NOT_ALLOWED"


async def test_validation_error_is_422_with_field_named(app: FastAPI) -> None:
    async def needs_int(count: int) -> dict[str, int]:
        return {"count": count}

    app.add_api_route("/probe", needs_int, methods=["GET"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        r = await client.get("/probe", params={"count": "many"})
    assert r.status_code == 422
    assert r.json()["error_code"] == "VALIDATION_ERROR"
    assert "count" in r.json()["error_message"]


async def test_unhandled_error_is_500_without_trace_but_logged_with_id(app: FastAPI) -> None:
    async def boom() -> None:
        msg = "secret internals"
        raise RuntimeError(msg)

    app.add_api_route("/boom", boom, methods=["GET"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        with capture_logs() as logs:
            r = await client.get("/boom", headers={"X-Correlation-ID": "trace-me-1"})
    assert r.status_code == 500
    assert r.json() == {
        "error_code": "INTERNAL",
        "error_message": "internal error",
        "correlation_id": "trace-me-1",
    }
    assert "secret internals" not in r.text
    (logged,) = [e for e in logs if e["event"] == "http.unhandled_error"]
    assert logged["exc_info"] is True


async def test_correlation_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"X-Correlation-ID": "abc-123"})
    assert r.headers["x-correlation-id"] == "abc-123"
    made = (await client.get("/healthz")).headers["x-correlation-id"]
    assert len(made) == 36
    # An id that could inject into logs or headers is replaced, not echoed.
    r = await client.get("/healthz", headers={"X-Correlation-ID": "a b<script>"})
    assert r.headers["x-correlation-id"] != "a b<script>"


async def test_openapi_documents_auth_and_error_body(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    assert "APIKeyHeader" in doc["components"]["securitySchemes"]
    services = doc["paths"]["/services"]["get"]
    assert services["security"] == [{"APIKeyHeader": []}]
    assert services["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorBody"
    )
    assert "security" not in doc["paths"]["/healthz"]["get"]
    assert (await client.get("/docs")).status_code == 200


async def test_metrics_are_exposed_without_key(client: httpx.AsyncClient) -> None:
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert "tlr_nats_connected" in r.text


async def test_every_operation_but_health_requires_the_key(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    public = {"/healthz", "/ready"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path in public:
                continue
            assert op.get("security") == [{"APIKeyHeader": []}], f"{method} {path}"
