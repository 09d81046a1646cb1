"""The /__fake/* control routes (§5.3): JSON in and out, thin wrappers over `control`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tlr.fake_tiktok import control
from tlr.fake_tiktok.context import FakeContext, get_ctx
from tlr.fake_tiktok.media import DEFAULT_PROFILE
from tlr.fake_tiktok.state import parse_fault_mode

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Endpoint = Callable[[web.Request, FakeContext], Awaitable[object]]


def _json(body: object, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    text = await request.text()
    if not text.strip():
        return {}
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise control.ControlError(400, f"invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise control.ControlError(400, "body must be a JSON object")
    return body


def _field(body: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    value = body.get(key, default)
    if value is not None and (
        not isinstance(value, kind) or (kind is int and isinstance(value, bool))
    ):
        raise control.ControlError(400, f"{key} must be of type {kind.__name__}")
    return value


def _control(fn: Endpoint, status: int = 200) -> Handler:
    """Wrap a control endpoint: JSON in, JSON out, ControlError -> {"error": ...}."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return _json(await fn(request, get_ctx(request)), status)
        except control.ControlError as exc:
            return _json({"error": exc.message}, exc.status)

    return handler


async def _create_user(request: web.Request, ctx: FakeContext) -> object:
    body = await _body(request)
    user = control.create_user(
        ctx.state,
        _field(body, "unique_id", str, ""),
        _field(body, "nickname", str),
        age_restricted=_field(body, "age_restricted", bool, False),
        private=_field(body, "private", bool, False),
    )
    return control.user_view(ctx.state, user)


async def _bulk_users(request: web.Request, ctx: FakeContext) -> object:
    body = await _body(request)
    unique_ids = _field(body, "unique_ids", list, [])
    if not all(isinstance(u, str) for u in unique_ids):
        raise control.ControlError(400, "unique_ids must be a list of strings")
    rooms = await control.create_users_bulk(
        ctx.state,
        ctx.media,
        unique_ids,
        rooms=_field(body, "rooms", str, "none"),
        profile=_field(body, "profile", str, DEFAULT_PROFILE),
    )
    return {"created": len(rooms), "rooms": rooms}


async def _list_users(_request: web.Request, ctx: FakeContext) -> object:
    return [control.user_view(ctx.state, u) for u in ctx.state.users.values()]


async def _get_user(request: web.Request, ctx: FakeContext) -> object:
    return control.user_view(ctx.state, control.get_user(ctx.state, request.match_info["user"]))


async def _patch_user(request: web.Request, ctx: FakeContext) -> object:
    body = await _body(request)
    user = control.update_user(
        ctx.state,
        request.match_info["user"],
        nickname=_field(body, "nickname", str),
        age_restricted=_field(body, "age_restricted", bool),
        private=_field(body, "private", bool),
    )
    return control.user_view(ctx.state, user)


async def _go_live(request: web.Request, ctx: FakeContext) -> object:
    body = await _body(request)
    room = await control.go_live(
        ctx.state,
        ctx.media,
        request.match_info["user"],
        title=_field(body, "title", str),
        profile=_field(body, "profile", str, DEFAULT_PROFILE),
    )
    return control.room_view(room)


async def _pause(request: web.Request, ctx: FakeContext) -> object:
    return control.room_view(control.pause(ctx.state, request.match_info["user"]))


async def _resume(request: web.Request, ctx: FakeContext) -> object:
    return control.room_view(control.resume(ctx.state, request.match_info["user"]))


def _mode(body: dict[str, Any], default: str) -> Any:
    try:
        return parse_fault_mode(body.get("mode", default))
    except ValueError as exc:
        raise control.ControlError(400, str(exc)) from exc


async def _end(request: web.Request, ctx: FakeContext) -> object:
    body = await _body(request)
    room = control.end(ctx.state, request.match_info["user"], _mode(body, "eof"))
    return control.room_view(room)


async def _get_stream(request: web.Request, ctx: FakeContext) -> object:
    return control.room_view(control.get_stream(ctx.state, request.match_info["sid"]))


async def _drop(request: web.Request, ctx: FakeContext) -> object:
    body = await _body(request)
    after = _field(body, "after_bytes", int, 0)
    room = control.drop(ctx.state, request.match_info["sid"], after, _mode(body, "reset"))
    return control.room_view(room)


async def _switch(request: web.Request, ctx: FakeContext) -> object:
    body = await _body(request)
    profile = _field(body, "profile", str)
    if not profile:
        raise control.ControlError(400, "profile is required")
    room = await control.switch(ctx.state, ctx.media, request.match_info["sid"], profile)
    return control.room_view(room)


async def _get_scenario(_request: web.Request, ctx: FakeContext) -> object:
    return ctx.state.scenario.to_json()


async def _put_scenario(request: web.Request, ctx: FakeContext) -> object:
    return control.set_scenario(ctx.state, await _body(request))


async def _get_stats(_request: web.Request, ctx: FakeContext) -> object:
    return control.stats(ctx.state)


async def _get_requests(request: web.Request, ctx: FakeContext) -> object:
    prefix = request.query.get("path_prefix", "")
    try:
        since = float(request.query.get("since", "0"))
    except ValueError as exc:
        raise control.ControlError(400, "since must be a number (epoch seconds)") from exc
    return [r.to_json() for r in ctx.state.requests if r.time > since and r.path.startswith(prefix)]


async def _clear_requests(_request: web.Request, ctx: FakeContext) -> object:
    ctx.state.requests.clear()
    return {"ok": True}


async def _reset(_request: web.Request, ctx: FakeContext) -> object:
    control.reset(ctx.state)
    return {"ok": True}


async def _health(_request: web.Request, ctx: FakeContext) -> object:
    return {"ok": True, "speed": ctx.speed}


def add_control_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/__fake/health", _control(_health))
    r.add_post("/__fake/users", _control(_create_user, 201))
    r.add_post("/__fake/bulk/users", _control(_bulk_users, 201))
    r.add_get("/__fake/users", _control(_list_users))
    r.add_get("/__fake/users/{user}", _control(_get_user))
    r.add_patch("/__fake/users/{user}", _control(_patch_user))
    r.add_post("/__fake/users/{user}/live", _control(_go_live))
    r.add_post("/__fake/users/{user}/pause", _control(_pause))
    r.add_post("/__fake/users/{user}/resume", _control(_resume))
    r.add_post("/__fake/users/{user}/end", _control(_end))
    r.add_get("/__fake/streams/{sid}", _control(_get_stream))
    r.add_post("/__fake/streams/{sid}/drop", _control(_drop))
    r.add_post("/__fake/streams/{sid}/switch", _control(_switch))
    r.add_get("/__fake/scenario", _control(_get_scenario))
    r.add_put("/__fake/scenario", _control(_put_scenario))
    r.add_get("/__fake/stats", _control(_get_stats))
    r.add_get("/__fake/requests", _control(_get_requests))
    r.add_delete("/__fake/requests", _control(_clear_requests))
    r.add_post("/__fake/reset", _control(_reset))
