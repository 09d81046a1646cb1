"""One handler answers a refused command and a NATS outage, wherever a route lets it out."""

from __future__ import annotations

import httpx
import nats.errors
import nats.js.errors
import pytest
from fastapi import FastAPI

from services.gateway.app import create_app
from services.gateway.commands import Conflict, Invalid, NotFound
from services.gateway.micro_client import ServiceUnavailable
from services.gateway.nats_link import NatsLink, NotConnected
from services.gateway.settings import GatewaySettings

CASES = [
    (nats.errors.TimeoutError(), 503, "SERVICE_UNAVAILABLE", "NATS is not reachable"),
    (nats.errors.NoRespondersError(), 503, "SERVICE_UNAVAILABLE", "NATS is not reachable"),
    (nats.js.errors.ServiceUnavailableError(), 503, "SERVICE_UNAVAILABLE", "NATS is not reachable"),
    (NotConnected("x"), 503, "SERVICE_UNAVAILABLE", "NATS is not connected"),
    (
        ServiceUnavailable("scheduler", "error 500: exploded"),
        503,
        "SERVICE_UNAVAILABLE",
        "the scheduler is not reachable",
    ),
    (NotFound("no such job"), 404, "NOT_FOUND", "no such job"),
    (Conflict("job already SUCCESS"), 409, "CONFLICT", "job already SUCCESS"),
    (Invalid("options.cookies: missing"), 422, "VALIDATION_ERROR", "options.cookies: missing"),
]


@pytest.fixture
def app() -> FastAPI:
    settings = GatewaySettings(api_keys=["k"], nats_url="nats://127.0.0.1:1")
    return create_app(settings, link=NatsLink(settings))


@pytest.mark.parametrize(("error", "status", "code", "message"), CASES)
async def test_each_error_has_its_answer(
    app: FastAPI, error: Exception, status: int, code: str, message: str
) -> None:
    async def fails() -> None:
        raise error

    app.add_api_route("/fails", fails, methods=["GET"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        r = await client.get("/fails", headers={"X-Correlation-ID": "cid-1"})
    assert r.status_code == status
    assert r.json() == {"error_code": code, "error_message": message, "correlation_id": "cid-1"}
