"""State transitions behind /__fake/* (§5.3), shared by the control routes and the Python API."""

from __future__ import annotations

import re
import time
from typing import Any

from tlr.fake_tiktok.media import DEFAULT_PROFILE, MediaLibrary
from tlr.fake_tiktok.state import (
    DropSpec,
    FakeState,
    FaultMode,
    Room,
    RoomStatus,
    User,
)

_UNIQUE_ID_RE = re.compile(r"^[A-Za-z0-9_.]{1,24}$")


class ControlError(Exception):
    """A control call that cannot be applied; `status` is the HTTP status the route answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def user_view(state: FakeState, user: User) -> dict[str, Any]:
    room = state.current_room(user)
    return {
        "unique_id": user.unique_id,
        "nickname": user.nickname,
        "user_id": user.user_id,
        "sec_uid": user.sec_uid,
        "age_restricted": user.age_restricted,
        "private": user.private,
        "status": None if room is None else int(room.status),
        "room": None if room is None else room_view(room),
    }


def room_view(room: Room) -> dict[str, Any]:
    return {
        "room_id": room.room_id,
        "stream_id": room.stream_id,
        "owner": room.owner,
        "title": room.title,
        "profile": room.profile,
        "status": int(room.status),
        "create_time": room.create_time,
        "finish_time": room.finish_time,
        "open_connections": len(room.conns),
        "bytes_sent": sum(conn.bytes_sent for conn in room.conns),
    }


def get_user(state: FakeState, unique_id: str) -> User:
    user = state.find_user(unique_id)
    if user is None:
        raise ControlError(404, f"no such user: {unique_id}")
    return user


def get_stream(state: FakeState, stream_id: str) -> Room:
    room = state.streams.get(stream_id)
    if room is None:
        raise ControlError(404, f"no such stream: {stream_id}")
    return room


def create_user(
    state: FakeState,
    unique_id: str,
    nickname: str | None = None,
    *,
    age_restricted: bool = False,
    private: bool = False,
) -> User:
    """Create an offline user who has never been live (stored lower-case: TikTok's canonical
    form, since usernames are case-insensitive there)."""
    unique_id = unique_id.removeprefix("@")
    if not _UNIQUE_ID_RE.match(unique_id):
        raise ControlError(400, f"invalid unique_id: {unique_id!r}")
    unique_id = unique_id.lower()
    if unique_id in state.users:
        raise ControlError(409, f"user already exists: {unique_id}")
    user = User(
        unique_id=unique_id,
        nickname=nickname if nickname is not None else unique_id.capitalize(),
        user_id=state.new_user_id(),
        sec_uid=state.new_sec_uid(),
        age_restricted=age_restricted,
        private=private,
    )
    state.users[unique_id] = user
    return user


async def create_users_bulk(
    state: FakeState,
    media: MediaLibrary,
    unique_ids: list[str],
    *,
    rooms: str = "none",
    profile: str = DEFAULT_PROFILE,
) -> dict[str, str | None]:
    """Create many users in one call (benchmarks): all or nothing, checked before any change.

    ``rooms``: "none" (never live), "ended" (one past live: a stale room id, status 4) or
    "live". Returns each user's room id (None for "none").
    """
    if rooms not in ("none", "ended", "live"):
        raise ControlError(400, "rooms must be one of none, ended, live")
    names = [u.removeprefix("@").lower() for u in unique_ids]
    bad = [n for n in names if not _UNIQUE_ID_RE.match(n)]
    if bad:
        raise ControlError(400, f"invalid unique_id: {bad[0]!r}")
    if len(set(names)) != len(names):
        raise ControlError(400, "unique_ids must not repeat")
    taken = [n for n in names if n in state.users]
    if taken:
        raise ControlError(409, f"user already exists: {taken[0]}")
    if rooms != "none":
        try:
            await media.load(profile)
        except ValueError as exc:
            raise ControlError(400, str(exc)) from exc
    created: dict[str, str | None] = {}
    for name in names:
        create_user(state, name)
        room_id = None
        if rooms != "none":
            room_id = (await go_live(state, media, name, profile=profile)).room_id
            if rooms == "ended":
                end(state, name)
        created[name] = room_id
    return created


def update_user(
    state: FakeState,
    unique_id: str,
    *,
    nickname: str | None = None,
    age_restricted: bool | None = None,
    private: bool | None = None,
) -> User:
    user = get_user(state, unique_id)
    if nickname is not None:
        user.nickname = nickname
    if age_restricted is not None:
        user.age_restricted = age_restricted
    if private is not None:
        user.private = private
    return user


async def go_live(
    state: FakeState,
    media: MediaLibrary,
    unique_id: str,
    *,
    title: str | None = None,
    profile: str = DEFAULT_PROFILE,
) -> Room:
    """Start a broadcast: new room_id and stream_id, status 2. The profile is rendered first."""
    user = get_user(state, unique_id)
    current = state.current_room(user)
    if current is not None and current.status != RoomStatus.ENDED:
        raise ControlError(409, f"{user.unique_id} is already live in room {current.room_id}")
    try:
        await media.load(profile)
    except ValueError as exc:
        raise ControlError(400, str(exc)) from exc
    room = Room(
        room_id=state.new_room_id(),
        stream_id=state.new_stream_id(),
        owner=user.unique_id,
        title=title if title is not None else f"{user.nickname} is LIVE",
        profile=profile,
        status=RoomStatus.LIVE,
        create_time=int(time.time()),
        started_mono=time.monotonic(),
        user_count=state.rng.randint(50, 5000),
    )
    state.rooms[room.room_id] = room
    state.streams[room.stream_id] = room
    user.room_id = room.room_id
    return room


def _active_room(state: FakeState, unique_id: str) -> Room:
    user = get_user(state, unique_id)
    room = state.current_room(user)
    if room is None or room.status == RoomStatus.ENDED:
        raise ControlError(409, f"{user.unique_id} is not live")
    return room


def pause(state: FakeState, unique_id: str) -> Room:
    """Status 3: open FLV responses stall, new FLV GETs get 404."""
    room = _active_room(state, unique_id)
    room.status = RoomStatus.PAUSED
    room.notify()
    return room


def resume(state: FakeState, unique_id: str) -> Room:
    """Back to status 2: stalled responses continue and new FLV GETs work again."""
    room = _active_room(state, unique_id)
    room.status = RoomStatus.LIVE
    room.notify()
    return room


def end(state: FakeState, unique_id: str, mode: FaultMode = "eof") -> Room:
    """Status 4; open responses finish cleanly (eof), are reset (reset) or hang (stall)."""
    room = _active_room(state, unique_id)
    room.status = RoomStatus.ENDED
    room.finish_time = int(time.time())
    room.end_mode = mode
    room.notify()
    return room


def drop(state: FakeState, stream_id: str, after_bytes: int, mode: FaultMode) -> Room:
    """One-shot fault on the open responses of a stream (or the next one if none is open)."""
    if after_bytes < 0:
        raise ControlError(400, "after_bytes must be >= 0")
    room = get_stream(state, stream_id)
    if room.conns:
        for conn in room.conns:
            conn.drop = DropSpec(after_bytes, mode)
    else:
        room.pending_drop = DropSpec(after_bytes, mode)
    room.notify()
    return room


async def switch(state: FakeState, media: MediaLibrary, stream_id: str, profile: str) -> Room:
    """Change the rendition mid-stream (guest join): open responses get new headers."""
    room = get_stream(state, stream_id)
    try:
        await media.load(profile)
    except ValueError as exc:
        raise ControlError(400, str(exc)) from exc
    room.profile = profile
    room.profile_gen += 1
    room.notify()
    return room


def set_scenario(state: FakeState, flags: dict[str, Any]) -> dict[str, Any]:
    try:
        state.scenario.update(flags)
    except ValueError as exc:
        raise ControlError(400, str(exc)) from exc
    return state.scenario.to_json()


def stats(state: FakeState) -> dict[str, Any]:
    """Defence counters (GET /__fake/stats): WAF challenges, solutions, denials, sign calls."""
    return state.stats.to_json()


def reset(state: FakeState) -> None:
    """Forget all users, rooms, flags and logs; open FLV responses are reset."""
    for conn in state.all_conns():
        conn.abort()
    state.clear()
