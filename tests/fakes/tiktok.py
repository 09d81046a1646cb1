"""A scriptable TikTok pool and client: rooms live or ended, targets resolved, errors raised."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from shared.events import RecordingOptions
from shared.secrets import SecretError
from shared.tiktok import LiveOffline, RoomInfo, RoomRef, StreamVariant, TikTokError, UserNotFound
from shared.tiktok.models import STATUS_ENDED, STATUS_LIVE, STATUS_PAUSED


@dataclass
class _Failure:
    error: TikTokError
    times: int | None  # None: every call


class FakeTikTokClient:
    """What the recorder calls on a ``TikTokClient``, answered from ``rooms`` and ``targets``.

    ``calls`` lists every call as (method, argument), so a test can say none was made.
    """

    def __init__(self) -> None:
        self.rooms: dict[str, RoomInfo] = {}
        self.targets: dict[str, RoomRef] = {}
        self.calls: list[tuple[str, str]] = []
        # The @name passed with each room lookup (the live page fallback needs it).
        self.users: list[str | None] = []
        # The client's own HTTP client (a stand-in: the fake media never streams with it).
        self.http = object()
        self._failures: dict[str, list[_Failure]] = {}

    # --- scripting -------------------------------------------------------------------------

    def live(self, room_id: str, *, unique_id: str = "kim", title: str = "hello") -> RoomInfo:
        """The room is live, with one origin stream."""
        url = f"https://pull-flv-l1-va01.tiktokcdn.com/game/stream-{room_id}.flv"
        info = RoomInfo(
            room_id=room_id,
            status=STATUS_LIVE,
            title=title,
            unique_id=unique_id,
            streams={"origin": StreamVariant("origin", url)},
        )
        self.rooms[room_id] = info
        return info

    def pause(self, room_id: str) -> None:
        self._status(room_id, STATUS_PAUSED)

    def end(self, room_id: str) -> None:
        """The live ended (status 4): ``confirm_live`` raises LiveOffline."""
        self._status(room_id, STATUS_ENDED)

    def target(self, url: str, room_id: str | None, unique_id: str | None = "kim") -> None:
        """``resolve(url)`` answers this room (None: the user was never live)."""
        self.targets[url] = RoomRef(room_id=room_id, unique_id=unique_id)

    def fail(self, method: str, error: TikTokError, *, times: int | None = None) -> None:
        """``method`` (resolve, confirm_live, live_info) raises ``error``: ``times`` times,
        or on every call when None."""
        self._failures.setdefault(method, []).append(_Failure(error, times))

    def called(self, method: str) -> list[str]:
        return [arg for name, arg in self.calls if name == method]

    # --- the client ------------------------------------------------------------------------

    async def resolve(self, target: str) -> RoomRef:
        self._call("resolve", target)
        if target not in self.targets:
            raise UserNotFound(target=target)
        return self.targets[target]

    async def live_info(self, room_id: str, unique_id: str | None = None) -> RoomInfo:
        self.users.append(unique_id)
        self._call("live_info", room_id)
        return self._room(room_id)

    async def confirm_live(self, room_id: str, unique_id: str | None = None) -> RoomInfo:
        self.users.append(unique_id)
        self._call("confirm_live", room_id)
        info = self._room(room_id)
        if info.is_live or info.is_paused:
            return info
        raise LiveOffline(target=f"room {room_id}", status=info.status)

    def _call(self, method: str, arg: str) -> None:
        self.calls.append((method, arg))
        for failure in self._failures.get(method, []):
            if failure.times is None:
                raise failure.error
            if failure.times > 0:
                failure.times -= 1
                raise failure.error

    def _room(self, room_id: str) -> RoomInfo:
        if room_id not in self.rooms:
            raise UserNotFound(target=f"room {room_id}")
        return self.rooms[room_id]

    def _status(self, room_id: str, status: int) -> None:
        info = self.rooms[room_id]
        self.rooms[room_id] = RoomInfo(
            room_id=info.room_id,
            status=status,
            title=info.title,
            unique_id=info.unique_id,
            streams=info.streams,
        )


class FakeTikTokPool:
    """``TikTokPool``: one fake client for every option, except a proxy told to be refused,
    which raises SecretError as ``ClientPool`` does for a proxy it cannot unseal."""

    def __init__(self, client: FakeTikTokClient | None = None) -> None:
        self.fake = client or FakeTikTokClient()
        self.asked: list[RecordingOptions] = []
        self._refused: dict[str, str] = {}

    def refuse_proxy(self, sealed: str, reason: str = "sealed with another key") -> None:
        self._refused[sealed] = reason

    @contextlib.contextmanager
    def holding(self, options: RecordingOptions) -> Iterator[FakeTikTokClient]:
        yield self.client(options)

    def client(self, options: RecordingOptions) -> FakeTikTokClient:
        self.asked.append(options)
        if options.proxy is not None and options.proxy in self._refused:
            msg = f"options.proxy cannot be used: {self._refused[options.proxy]}"
            raise SecretError(msg)
        return self.fake
