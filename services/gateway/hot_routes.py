"""GET /jobs/{task_id}, the API's busiest call, answered without FastAPI's routing and solving."""

from __future__ import annotations

import re

from fastapi.routing import APIRoute
from pydantic import TypeAdapter
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from services.gateway.deps import api_keys, check_api_key, job_store, rate_limiter
from services.gateway.errors import response_for
from services.gateway.ratelimit import enforce
from services.gateway.routes import jobs
from services.gateway.schemas import JobStatus

_JOBS = "/jobs/"
_TASK_ID = re.compile(jobs.TASK_ID_PATTERN)
# What FastAPI serialises the route's return value with: the same bytes.
_JOB_STATUS = TypeAdapter(JobStatus)


def _route(endpoint: object) -> APIRoute:
    return next(r for r in jobs.router.routes if isinstance(r, APIRoute) and r.endpoint is endpoint)


class HotRoutes:
    """Pure ASGI middleware, innermost: answers GET /jobs/{task_id} itself, with the calls the
    FastAPI route makes through its dependencies, in their order (failed-auth limiter, key,
    rate limit, job store, ownership), and the same answers, errors and headers.

    FastAPI's routing (each included router matched, then matched again to be entered), its
    dependency solving and its response validation were ~40 % of such a request's CPU
    (docs/benchmarks.md, gateway). The route stays in the app: /openapi.json documents it,
    and it answers what this leaves to it: a task id that is not one (FastAPI's 422, which it
    gives after the key check and the rate limit, as before).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.job_route = _route(jobs.get_job)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path: str = scope["path"]
            if path.startswith(_JOBS) and _TASK_ID.fullmatch(task_id := path[len(_JOBS) :]):
                await self._job(scope, task_id, receive, send)
                return
        await self.app(scope, receive, send)

    async def _job(self, scope: Scope, task_id: str, receive: Receive, send: Send) -> None:
        scope["route"] = self.job_route  # metrics and the access log label it as FastAPI would
        state = scope["app"].state
        try:
            key = check_api_key(
                api_keys(state, state.settings),
                state.auth_failures,
                _client_address(scope),
                _header(scope, b"x-api-key"),
            )
            headers = await enforce(rate_limiter(state), key, "GET")
            scope.setdefault("state", {})["rate_limit_headers"] = headers  # as request.state
            store = await job_store(state.link)
            status = await jobs.job_status(state.link, store, task_id, key)
        except Exception as exc:
            refused = response_for(exc)
            if refused is None:
                raise  # the standard 500, from ErrorMiddleware
            response: Response = refused
        else:
            response = Response(_JOB_STATUS.dump_json(status), media_type="application/json")
            response.headers.update(headers)  # after content-length and -type, as FastAPI
        await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), as Starlette's ``headers.get`` reads
    it; None when absent or empty (FastAPI's APIKeyHeader then gives None too)."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1") or None
    return None


def _client_address(scope: Scope) -> str:
    """As ``deps.client_address``: uvicorn already put X-Forwarded-For's address in the scope
    when the peer is a proxy in FORWARDED_ALLOW_IPS."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
