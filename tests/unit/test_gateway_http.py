"""The HTTP edge without NATS: auth, body limits, the error body on every error, correlation ids."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import structlog
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from structlog.testing import capture_logs

from services.gateway import middleware
from services.gateway.app import create_app
from services.gateway.errors import ApiError
from services.gateway.nats_link import NatsLink
from services.gateway.settings import GatewaySettings
from shared.errors import ErrorCode

KEY = "test-key-1"
ERROR_FIELDS = {"error_code", "error_message", "correlation_id"}


@pytest.fixture
def app() -> FastAPI:
    # A link that is never entered: NATS is "not connected" for the whole test.
    settings = GatewaySettings(api_keys=[KEY, "other-key"], nats_url="nats://127.0.0.1:1")
    return create_app(settings, link=NatsLink(settings))


@pytest.fixture
def fresh_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """A middleware logger structlog has not cached: capture_logs then sees its events even
    after another test configured logging with caching on (test_secret_leaks does)."""
    monkeypatch.setattr(middleware, "log", structlog.get_logger(middleware.__name__))


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
    r = await client.get("/watchers", headers={"X-API-Key": "other-key"})
    assert r.status_code == 503


async def test_fleet_wide_routes_are_403_for_a_key_without_role_admin(
    client: httpx.AsyncClient,
) -> None:
    # Reads: a write meets the rate limiter's 503 first while NATS is down (POST /files/rebuild
    # is checked against a real nats-server in tests/integration/test_gateway_files.py).
    for path in ("/services", "/diagnostics/tiktok?target=@alice"):
        r = await client.get(path, headers={"X-API-Key": KEY})
        assert r.status_code == 403, path
        assert r.json()["error_code"] == "FORBIDDEN"
        assert "role=admin" in r.json()["error_message"]


async def test_failed_authentications_from_one_address_get_429_before_the_key_is_read(
    app: FastAPI,
) -> None:
    def from_address(host: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(host, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://gw")

    async with from_address("198.51.100.7") as guesser, from_address("203.0.113.9") as other:
        for i in range(20):  # AUTH_FAILURES_PER_MIN: 401s and 403s count alike
            r = await guesser.get("/watchers", headers={"X-API-Key": f"guess-{i}"} if i else {})
            assert r.status_code == (403 if i else 401)
        r = await guesser.get("/watchers", headers={"X-API-Key": "guess-21"})
        assert r.status_code == 429
        assert r.json()["error_code"] == "RATE_LIMITED"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        # Refused before the key is looked at: a good key from there waits too.
        assert (await guesser.get("/watchers", headers={"X-API-Key": KEY})).status_code == 429
        # Another address is not affected.
        assert (await other.get("/watchers", headers={"X-API-Key": "nope"})).status_code == 403
        assert (await other.get("/watchers", headers={"X-API-Key": KEY})).status_code == 503


@pytest.mark.usefixtures("fresh_log")
async def test_key_is_never_logged(client: httpx.AsyncClient) -> None:
    with capture_logs() as logs:
        await client.get("/watchers", headers={"X-API-Key": KEY})
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


@pytest.mark.usefixtures("fresh_log")
async def test_unhandled_error_is_500_without_trace_but_logged_with_id(app: FastAPI) -> None:
    async def boom() -> None:
        msg = "secret internals"
        raise RuntimeError(msg)

    app.add_api_route("/boom", boom, methods=["GET"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            r = await client.get("/boom", headers={"X-Correlation-ID": "trace-me-1"})
    assert r.status_code == 500
    assert r.json() == {
        "error_code": "INTERNAL",
        "error_message": "internal error",
        "correlation_id": "trace-me-1",
    }
    assert "secret internals" not in r.text
    (logged,) = [e for e in logs if e["event"] == "http.unhandled_error"]
    assert logged["exc_info"] is True  # the full traceback, in the log only
    assert logged["correlation_id"] == "trace-me-1"


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


# --- request bodies: 413 and 415 before any route runs -------------------------------------

LIMIT = 2048


@pytest.fixture
def small_app() -> FastAPI:
    settings = GatewaySettings(api_keys=[KEY], nats_url="nats://127.0.0.1:1", max_body_bytes=LIMIT)
    return create_app(settings, link=NatsLink(settings))


@pytest.fixture
async def small(small_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=small_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        yield c


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert r.status_code == status, r.text
    body: dict[str, str] = r.json()
    assert set(body) == ERROR_FIELDS
    assert body["error_code"] == code
    assert body["correlation_id"] == r.headers["x-correlation-id"]
    return body


@pytest.mark.parametrize(("method", "path"), [("POST", "/recordings"), ("GET", "/healthz")])
async def test_body_over_the_limit_by_content_length_is_413(
    small: httpx.AsyncClient, method: str, path: str
) -> None:
    r = await small.request(
        method,
        path,
        content=b"{" + b" " * LIMIT + b"}",
        headers={"X-API-Key": KEY, "Content-Type": "application/json", "X-Correlation-ID": "c-413"},
    )
    body = assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert body["correlation_id"] == "c-413"
    assert str(LIMIT) in body["error_message"]


async def test_chunked_body_is_counted_and_refused_past_the_limit(
    small: httpx.AsyncClient,
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(100):
            sent += 1
            yield b"x" * 512

    r = await small.post(
        "/recordings",
        content=chunks(),
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
    )
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    # Refused as soon as the count passed the limit, not after reading everything.
    assert sent <= LIMIT // 512 + 2


async def test_body_at_the_limit_passes(small: httpx.AsyncClient) -> None:
    body = b'{"room_id": "7503448765740976902"' + b" " * (LIMIT - 34) + b"}"
    assert len(body) == LIMIT
    r = await small.post(
        "/recordings", content=body, headers={"X-API-Key": KEY, "Content-Type": "application/json"}
    )
    assert r.status_code not in (413, 415)


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"]
)
@pytest.mark.parametrize("path", ["/recordings", "/watchers", "/files/rebuild"])
async def test_body_that_is_not_json_is_415(
    small: httpx.AsyncClient, path: str, content_type: str | None
) -> None:
    headers = {"X-API-Key": KEY}
    if content_type is not None:
        headers["Content-Type"] = content_type
    r = await small.post(path, content=b'{"room_id": "7503448765740976902"}', headers=headers)
    body = assert_error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "Content-Type" in body["error_message"]


async def test_json_with_parameters_and_empty_bodies_are_not_415(
    small: httpx.AsyncClient,
) -> None:
    r = await small.post(
        "/recordings",
        content=b"{}",
        headers={"X-API-Key": KEY, "Content-Type": "Application/JSON; charset=utf-8"},
    )
    assert r.status_code != 415
    # Nothing to read, nothing to type: a body-less POST needs no Content-Type.
    r = await small.post("/files/rebuild", headers={"X-API-Key": KEY})
    assert r.status_code != 415


@pytest.mark.parametrize("length", ["abc", "-1", "1e3", " 5"])
async def test_malformed_content_length_is_400(small_app: FastAPI, length: str) -> None:
    status, headers, body = await call_asgi(
        small_app, "POST", "/recordings", [(b"content-length", length.encode())], b"{}"
    )
    assert status == 400
    assert body["error_code"] == "VALIDATION_ERROR"
    assert body["correlation_id"] == headers["x-correlation-id"]


async def test_two_different_content_lengths_are_400(small_app: FastAPI) -> None:
    status, _, body = await call_asgi(
        small_app,
        "POST",
        "/recordings",
        [(b"content-length", b"2"), (b"content-length", b"3")],
        b"{}",
    )
    assert (status, body["error_code"]) == (400, "VALIDATION_ERROR")


async def call_asgi(
    app: FastAPI, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, dict[str, str], dict[str, str]]:
    """One request straight through the ASGI interface, for headers httpx would fix up."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"gw"), (b"x-api-key", KEY.encode()), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("gw", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, *chunks = sent
    raw_headers = start["headers"]
    assert isinstance(raw_headers, list)
    response_headers = {k.decode(): v.decode() for k, v in raw_headers}
    content = b"".join(bytes(c["body"]) for c in chunks)  # type: ignore[arg-type]
    status = start["status"]
    assert isinstance(status, int)
    return status, response_headers, json.loads(content)


# --- every error has the standard body ----------------------------------------------------


async def test_429_has_the_error_body_and_retry_after(app: FastAPI) -> None:
    async def limited() -> None:
        raise ApiError(429, ErrorCode.RATE_LIMITED, "slow down", headers={"Retry-After": "7"})

    app.add_api_route("/limited", limited, methods=["GET"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        r = await client.get("/limited")
    assert_error(r, 429, "RATE_LIMITED")
    assert r.headers["retry-after"] == "7"


async def test_starlette_http_errors_map_to_codes(app: FastAPI) -> None:
    async def teapot(status: int) -> None:
        raise StarletteHTTPException(status)

    app.add_api_route("/status/{status}", teapot, methods=["GET"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        for status, code in ((413, "PAYLOAD_TOO_LARGE"), (429, "RATE_LIMITED"), (502, "INTERNAL")):
            assert_error(await client.get(f"/status/{status}"), status, code)


async def test_404_and_405_have_the_error_body_and_the_id(client: httpx.AsyncClient) -> None:
    r = await client.get("/nope", headers={"X-Correlation-ID": "c-404"})
    assert assert_error(r, 404, "NOT_FOUND")["correlation_id"] == "c-404"
    r = await client.put("/recordings", json={}, headers={"X-API-Key": KEY})
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in r.headers["allow"]


async def test_validation_messages_name_the_field_not_the_value(client: httpx.AsyncClient) -> None:
    r = await client.get(
        "/files", params={"page": "$(id)", "from": "0", "room_id": "12"}, headers={"X-API-Key": KEY}
    )
    body = assert_error(r, 422, "VALIDATION_ERROR")
    for field in ("query.page", "query.from", "query.room_id"):
        assert field in body["error_message"]
    assert "$(id)" not in body["error_message"]
    assert "Value error" not in body["error_message"]


@pytest.mark.parametrize(
    "value",
    ["0", "1700000000", "yesterday", "2026-13-01T00:00:00Z", "0001-01-01T00:00:00+14:00"],
)
async def test_files_times_are_iso_8601_in_range(client: httpx.AsyncClient, value: str) -> None:
    r = await client.get("/files", params={"from": value}, headers={"X-API-Key": KEY})
    assert "query.from" in assert_error(r, 422, "VALIDATION_ERROR")["error_message"]


async def test_a_correlation_id_with_a_newline_is_replaced(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"X-Correlation-ID": "abc\n"})
    assert r.headers["x-correlation-id"] != "abc\n"
    assert "\n" not in r.headers["x-correlation-id"]


async def test_openapi_documents_every_error_status(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    ops = doc["paths"]
    for path, methods in ops.items():
        for method, op in methods.items():
            codes = set(op["responses"])
            assert {"400", "413", "500"} <= codes, (method, path)
            if path not in ("/healthz", "/ready"):
                assert {"401", "403", "422", "429", "503"} <= codes, (method, path)
            if method == "post":
                assert "415" in codes, (method, path)
    assert "404" in ops["/jobs/{task_id}"]["get"]["responses"]
    assert "409" in ops["/watchers"]["post"]["responses"]
