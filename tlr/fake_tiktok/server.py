"""FakeTikTok: runs the fake server in the current event loop and offers a Python control API."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from aiohttp import web

from tlr.fake_tiktok import control
from tlr.fake_tiktok.app import make_app
from tlr.fake_tiktok.cdn import UrlMaker
from tlr.fake_tiktok.context import FakeContext
from tlr.fake_tiktok.delivery import Delivery, Wire, parse_delivery
from tlr.fake_tiktok.media import DEFAULT_PROFILE, MediaLibrary
from tlr.fake_tiktok.state import FakeState, FaultMode, Room, User

DEFAULT_TICK_S = 0.04


class LiveHandle(NamedTuple):
    """What go_live returns: the new room id and CDN stream id (both 19-digit strings)."""

    room_id: str
    stream_id: str


class FakeTikTok:
    """A fake TikTok (web, webcast and CDN) on one local port.

    The async methods mirror the /__fake control API; they act on the state directly, with the
    same semantics and errors (`control.ControlError`) as the HTTP routes.
    """

    def __init__(
        self,
        *,
        media_dir: Path | None = None,
        speed: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        tick_s: float = DEFAULT_TICK_S,
        seed: int | None = None,
        public_base_url: str | None = None,
        delivery: Delivery = "chunks",
    ) -> None:
        if speed <= 0 or tick_s <= 0:
            msg = "speed and tick_s must be > 0"
            raise ValueError(msg)
        self.wire = Wire(parse_delivery(delivery), seed)
        self.state = FakeState(seed)
        self.media = MediaLibrary(media_dir)
        self.host = host
        self._requested_port = port
        self._ctx = FakeContext(
            state=self.state,
            media=self.media,
            speed=speed,
            tick_s=tick_s,
            wire=self.wire,
            public_base_url=public_base_url,
        )
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            msg = "already started"
            raise RuntimeError(msg)
        runner = web.AppRunner(
            make_app(self._ctx),
            # Cancel a stream handler as soon as its client disconnects (frees stalled ones).
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=1.0,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port)
            await site.start()
            self._port = int(runner.addresses[0][1])
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        # Stalled streams would otherwise hold shutdown for the whole grace period.
        self.wire.close()
        for conn in self.state.all_conns():
            conn.abort()
        await runner.cleanup()

    async def __aenter__(self) -> FakeTikTok:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- addresses -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            msg = "server not started"
            raise RuntimeError(msg)
        return self._port

    @property
    def base_url(self) -> str:
        """http://<host>:<port>; use it for both TIKTOK_WEB_BASE and TIKTOK_WEBCAST_BASE."""
        return self._ctx.public_base_url or f"http://{self.host}:{self.port}"

    @property
    def egress_settings(self) -> dict[str, Any]:
        """What a service needs to fetch streams from this fake (keyword arguments of its
        settings): the fake's host on STREAM_HOST_SUFFIXES and, since it listens on a
        loopback address, ALLOW_PRIVATE_STREAM_HOSTS."""
        host = urlsplit(self.base_url).hostname or self.host
        return {"stream_host_suffixes": (host,), "allow_private_stream_hosts": True}

    @property
    def egress_env(self) -> dict[str, str]:
        """:attr:`egress_settings` as environment variables, for services run as processes."""
        host = urlsplit(self.base_url).hostname or self.host
        return {"STREAM_HOST_SUFFIXES": host, "ALLOW_PRIVATE_STREAM_HOSTS": "true"}

    @property
    def signer_url(self) -> str:
        """The fake signing service (POST {"url": ...}); what TIKTOK_SIGNER_URL points at."""
        return f"{self.base_url}/__fake/sign"

    @property
    def speed(self) -> float:
        return self._ctx.speed

    @speed.setter
    def speed(self, value: float) -> None:
        """Change the pacing factor; applies to FLV connections opened afterwards."""
        if value <= 0:
            msg = "speed must be > 0"
            raise ValueError(msg)
        self._ctx.speed = value

    def flv_url(
        self,
        stream_id: str,
        suffix: str = "",
        *,
        only_audio: bool = False,
        ttl_s: int | None = None,
        backup: bool = False,
    ) -> str:
        """A correctly signed CDN URL, as room/info hands out (ttl_s < 0 gives an expired one;
        ``backup`` the second CDN's). With ``dead_top_rung`` on (the default) the main URL
        of the top rung (suffix "") answers 404 and its backup plays."""
        ttl = self.state.scenario.url_ttl_s if ttl_s is None else ttl_s
        maker = UrlMaker(self.base_url, int(time.time()) + ttl)
        url = maker.flv(stream_id, suffix, backup=backup)
        return url + "&only_audio=1" if only_audio else url

    # --- inspection ----------------------------------------------------------------------

    def user(self, unique_id: str) -> User:
        return control.get_user(self.state, unique_id)

    def room(self, room_id: str) -> Room:
        room = self.state.rooms.get(room_id)
        if room is None:
            raise control.ControlError(404, f"no such room: {room_id}")
        return room

    def stream(self, stream_id: str) -> Room:
        return control.get_stream(self.state, stream_id)

    # --- control (mirrors /__fake/*) ------------------------------------------------------

    async def prepare(self, *profiles: str) -> None:
        """Render and load profiles ahead of time (go_live and switch do it lazily)."""
        for name in profiles:
            await self.media.load(name)

    async def create_user(
        self,
        unique_id: str,
        nickname: str | None = None,
        *,
        age_restricted: bool = False,
        private: bool = False,
    ) -> dict[str, Any]:
        user = control.create_user(
            self.state, unique_id, nickname, age_restricted=age_restricted, private=private
        )
        return control.user_view(self.state, user)

    async def update_user(
        self,
        unique_id: str,
        *,
        nickname: str | None = None,
        age_restricted: bool | None = None,
        private: bool | None = None,
    ) -> dict[str, Any]:
        user = control.update_user(
            self.state,
            unique_id,
            nickname=nickname,
            age_restricted=age_restricted,
            private=private,
        )
        return control.user_view(self.state, user)

    async def go_live(
        self, unique_id: str, title: str | None = None, profile: str = DEFAULT_PROFILE
    ) -> LiveHandle:
        room = await control.go_live(
            self.state, self.media, unique_id, title=title, profile=profile
        )
        return LiveHandle(room.room_id, room.stream_id)

    async def pause(self, unique_id: str) -> None:
        control.pause(self.state, unique_id)

    async def resume(self, unique_id: str) -> None:
        control.resume(self.state, unique_id)

    async def end(self, unique_id: str, mode: FaultMode = "eof") -> None:
        control.end(self.state, unique_id, mode)

    async def drop(self, stream_id: str, after_bytes: int = 0, mode: FaultMode = "reset") -> None:
        control.drop(self.state, stream_id, after_bytes, mode)

    async def switch(self, stream_id: str, profile: str) -> None:
        await control.switch(self.state, self.media, stream_id, profile)

    async def set_scenario(self, **flags: Any) -> dict[str, Any]:
        """Change scenario flags (`set_scenario(**HARSH)` for today's TikTok); returns them all."""
        return control.set_scenario(self.state, flags)

    async def stats(self) -> dict[str, Any]:
        """Defence counters, as GET /__fake/stats."""
        return control.stats(self.state)

    async def requests(self, path_prefix: str = "") -> list[dict[str, Any]]:
        return [r.to_json() for r in self.state.requests if r.path.startswith(path_prefix)]

    async def clear_requests(self) -> None:
        self.state.requests.clear()

    async def reset(self) -> None:
        control.reset(self.state)


@asynccontextmanager
async def start_fake_tiktok(
    *,
    media_dir: Path | None = None,
    speed: float = 1.0,
    host: str = "127.0.0.1",
    port: int = 0,
    tick_s: float = DEFAULT_TICK_S,
    seed: int | None = None,
    public_base_url: str | None = None,
    delivery: Delivery = "chunks",
) -> AsyncIterator[FakeTikTok]:
    """Run a FakeTikTok in the current event loop for the duration of the block.

    ``delivery``: how the CDN writes FLV (see delivery.py): ``chunks`` (whole tags per
    40 ms tick), ``segments`` (one ~1.4 KB write at a time) or ``irregular`` (1 B-48 KB)."""
    fake = FakeTikTok(
        media_dir=media_dir,
        speed=speed,
        host=host,
        port=port,
        tick_s=tick_s,
        seed=seed,
        public_base_url=public_base_url,
        delivery=delivery,
    )
    async with fake:
        yield fake
