"""Pulling HTTP-FLV into the segmenter, and the watchdog that drops a silent or stopped pull."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

import httpx

from services.recorder import metrics
from services.recorder.flv import FlvFormatError, FlvReader
from services.recorder.flv_pull import Stats, flv_get, route_for
from services.recorder.segmenter import Segmenter, SegmentWriteError
from shared.logging import get_logger, redact_text
from shared.tiktok.guards import STREAM_REQUEST, EgressRefused, transport_reason
from shared.tiktok.models import StreamCandidate

log = get_logger(__name__)


@dataclass(slots=True)
class Conn:
    """How one connection ended. ``detail`` is a fixed phrase (it may reach a job's
    ``error_message``); the exception's own text is logged where it is caught."""

    kind: Literal["eof", "stall", "stop", "limit", "http", "error", "refused"]
    media: bool = False
    status: int | None = None
    detail: str = ""

    @property
    def dead(self) -> bool:
        """The URL is not worth waiting for: it answered an error status, or closed (or
        failed) before any media, or the egress policy refused it (or a redirect from it).
        A listed rung can be dead while others play (StreamCap #120; upstream 7.7 counts a
        connection under ~4 KB as dead)."""
        return self.kind in ("http", "refused") or (
            self.kind in ("eof", "error") and not self.media
        )

    @property
    def close_reason(self) -> str:
        """Why the segment it fed was closed."""
        return {"stop": "stopped", "limit": "duration"}.get(self.kind, "disconnected")


class Watch:
    """Expires an ``asyncio.timeout`` block when the stream goes quiet or ``stop`` is set.

    The idle check is one timer per ``read_timeout`` (re-armed from ``last``), not one per
    chunk: the streaming loop only stores the time of the latest chunk in ``last``. While
    ``paused`` (the pull waits for the disk, not the network) silence is not a stall.
    """

    def __init__(self, stop: asyncio.Event, idle: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = stop
        self._idle = idle
        self._cm: asyncio.Timeout | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Task[Literal[True]] | None = None
        self.why: Literal["stall", "stop"] | None = None
        self.last = self._loop.time()
        self.paused = False

    def arm(self, cm: asyncio.Timeout) -> None:
        self._cm = cm
        self.last = self._loop.time()
        if self._idle is not None:
            self._handle = self._loop.call_at(self.last + self._idle, self._check)
        if self._stop.is_set():
            self._fire("stop")
        else:
            self._waiter = self._loop.create_task(self._stop.wait())
            self._waiter.add_done_callback(self._on_stop)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._waiter is not None:
            self._waiter.remove_done_callback(self._on_stop)
            self._waiter.cancel()
            self._waiter = None

    def _check(self) -> None:
        assert self._idle is not None
        now = self._loop.time()
        due = now + self._idle if self.paused else self.last + self._idle
        if now >= due:
            self._handle = None
            self._fire("stall")
        else:
            self._handle = self._loop.call_at(due, self._check)

    def _on_stop(self, task: asyncio.Task[Literal[True]]) -> None:
        if not task.cancelled():
            self._fire("stop")

    def _fire(self, why: Literal["stall", "stop"]) -> None:
        if self.why is None and self._cm is not None:
            self.why = why
            self._cm.reschedule(self._loop.time())


def _nothing() -> None:
    """httpx reads as bytes arrive: nothing to change once media flows."""


class StreamPuller:
    """Feeds a session's segmenter from HTTP-FLV responses and counts what came in.

    The GET goes through flv_pull.py, which reads each socket in large pieces (about ten
    reads a second per stream, whatever the CDN's write sizes), along the route ``http``
    would take (its proxy, redirects, headers, TLS); a client flv_pull cannot follow (a
    custom transport, an HTTPS proxy) streams through httpx itself.

    Args:
        http: shared client (proxy and cookies configured by the caller); not closed here.
        segmenter: gets every tag; a new segment per connection, closed when it ends.
        stop: set, it ends the current connection at once (``Conn("stop")``).
        read_timeout: seconds without a byte before a connection counts as stalled.
        progress_interval: seconds between two ``on_tick`` calls while data flows.
        on_stream: called when media starts flowing from a candidate other than the last
            one that did.
        on_tick: called with the loop time every ``progress_interval`` while data flows.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        segmenter: Segmenter,
        stop: asyncio.Event,
        read_timeout: float,
        connect_timeout: float,
        progress_interval: float,
        on_stream: Callable[[StreamCandidate], None],
        on_tick: Callable[[float], None],
    ) -> None:
        self._http = http
        self._segmenter = segmenter
        self._stop = stop
        self._read_timeout = read_timeout
        self._timeouts = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=connect_timeout, pool=connect_timeout
        )
        self._progress_interval = progress_interval
        self._on_stream = on_stream
        self._on_tick = on_tick
        self._streaming: StreamCandidate | None = None
        self._rounds = 0
        self._connections = 0
        self.reconnects = 0
        self.stalls = 0
        self.bytes_received = 0
        self._bytes_counted = 0  # part of bytes_received already added to the metric
        self._rate_mark = (0.0, 0)  # (loop time, bytes) of the last bitrate() call
        self.reads = 0  # pieces of body handed to the FLV parser, over every connection
        self.socket = Stats()  # what flv_pull's sockets did, over every connection

    async def pull(self, candidates: tuple[StreamCandidate, ...]) -> Conn:
        """Connect to the candidates in turn until one is not dead; how that one ended.

        A dead candidate is skipped for this connection only: the next lookup tries the
        list from the top again (a rung can come back).
        """
        if self._rounds:
            self.reconnects += 1
            metrics.RECONNECTS.inc()
        self._rounds += 1
        conn = Conn("error", detail="no stream URL")
        for candidate in candidates:
            conn = await self._connect(candidate)
            self._segmenter.close(conn.close_reason)
            if not conn.dead:
                return conn
            metrics.DEAD_STREAMS.inc()
            log.warning(
                "recorder.stream_dead",
                quality=candidate.quality,
                source=candidate.source,
                kind=conn.kind,
                status=conn.status,
                detail=conn.detail,
            )
            if self._stop.is_set():
                break
        return conn

    def bitrate(self, t: float) -> float:
        """Bits per second received since the last call (the first: since the first
        connection); ``t`` becomes the start of the next interval."""
        last_t, last_bytes = self._rate_mark
        self._rate_mark = (t, self.bytes_received)
        return (self.bytes_received - last_bytes) * 8 / (t - last_t) if t > last_t else 0.0

    def count_bytes(self) -> None:
        """Add the bytes received since the last call to the metric."""
        new = self.bytes_received - self._bytes_counted
        if new:
            metrics.BYTES.inc(new)
            self._bytes_counted = self.bytes_received

    def _media_from(self, candidate: StreamCandidate) -> None:
        """Media flows from ``candidate``: say so when it is not the one it last came from."""
        if candidate == self._streaming:
            return
        self._streaming = candidate
        log.info("recorder.stream", quality=candidate.quality, source=candidate.source)
        self._on_stream(candidate)

    async def _connect(self, candidate: StreamCandidate) -> Conn:
        """Pull one HTTP-FLV response into the segmenter; report how it ended."""
        url = candidate.url
        self._connections += 1
        segmenter = self._segmenter
        segmenter.new_segment()
        reader = FlvReader()
        loop = asyncio.get_running_loop()
        now = loop.time
        watch = Watch(self._stop, self._read_timeout)
        media = False
        next_progress = now() + self._progress_interval
        if self._connections == 1:
            self._rate_mark = (now(), 0)
        log.info("recorder.connecting", url=url.split("?", 1)[0], attempt=self._connections)
        try:
            async with asyncio.timeout(None) as cm:
                watch.arm(cm)
                try:
                    async with self._get(url) as (status, chunks, steady):
                        if status != httpx.codes.OK:
                            return Conn("http", status=status)
                        async for chunk in chunks:
                            watch.last = t = now()
                            self.reads += 1
                            self.bytes_received += len(chunk)
                            tags = reader.feed(chunk)
                            if not tags:
                                continue
                            if reader.tags_out == len(tags):  # the first tags: header is known
                                assert reader.header is not None
                                segmenter.set_stream(reader.header)
                            write = segmenter.write
                            for tag in tags:
                                write(tag)
                            if segmenter.backlogged:
                                await _wait_for_disk(segmenter, watch)
                                t = now()
                            if not media and segmenter.current is not None:
                                media = True
                                steady()  # the first keyframe is written: reads may coalesce
                                self._media_from(candidate)
                            if segmenter.limit_reached:
                                return Conn("limit", media=media)
                            if t >= next_progress:
                                next_progress = t + self._progress_interval
                                self.count_bytes()
                                self._on_tick(t)
                finally:
                    watch.close()
        except TimeoutError:
            if watch.why == "stop":
                return Conn("stop", media=media)
            if watch.why == "stall":
                return self._stalled(media, "watchdog")
            return Conn("error", media=media, detail="timeout")
        except httpx.ReadTimeout:
            return self._stalled(media, "read timeout")
        except EgressRefused as exc:
            # Never connected to (the guard logged the host and why).
            return Conn("refused", media=media, detail=str(exc))
        except (httpx.HTTPError, httpx.InvalidURL, OSError, FlvFormatError) as exc:
            if isinstance(exc, SegmentWriteError):
                raise  # the disk failed, not the stream: it ends the session (see run())
            # The text (a proxy's or a service's banner, maybe) to the log, never further.
            log.warning(
                "recorder.stream_failed",
                error=redact_text(f"{type(exc).__name__}: {exc}")[:300],
                media=media,
            )
            detail = (
                "the stream is not valid FLV"
                if isinstance(exc, FlvFormatError)
                else transport_reason(exc)
            )
            return Conn("error", media=media, detail=detail)
        finally:
            self.count_bytes()
        return Conn("eof", media=media)

    @contextlib.asynccontextmanager
    async def _get(
        self, url: str
    ) -> AsyncIterator[tuple[int, AsyncIterator[bytes], Callable[[], None]]]:
        """GET ``url``: its final status (redirects followed), its body's pieces, and what to
        call once media flows (from then on, reads may wait for more to arrive)."""
        route = route_for(self._http, httpx.URL(url))
        if route is None:
            async with self._http.stream(
                "GET",
                url,
                timeout=self._timeouts,
                follow_redirects=True,  # every hop passes the client's egress guards
                extensions={STREAM_REQUEST: True},
            ) as response:
                yield response.status_code, response.aiter_bytes(), _nothing
            return
        timeouts = self._timeouts
        assert timeouts.connect is not None
        assert timeouts.read is not None
        async with flv_get(
            self._http, route, url, connect_timeout=timeouts.connect, read_timeout=timeouts.read
        ) as response:
            try:
                yield response.status, response.chunks(), response.steady
            finally:
                stats = response.stats
                self.socket.recvs += stats.recvs
                self.socket.deliveries += stats.deliveries
                self.socket.bytes += stats.bytes

    def _stalled(self, media: bool, how: str) -> Conn:
        self.stalls += 1
        metrics.STALLS.inc()
        log.warning("recorder.stalled", how=how, read_timeout=self._read_timeout)
        return Conn("stall", media=media, detail=how)


async def _wait_for_disk(segmenter: Segmenter, watch: Watch) -> None:
    """Stop reading until the disk catches up: a stalled disk costs this session its reads
    (the CDN's socket buffers fill and TCP holds it back), not unbounded memory. The read
    watchdog is off meanwhile (the network is not the one stalling); ``stop`` still ends it."""
    watch.paused = True
    try:
        await segmenter.drain()
    finally:
        watch.paused = False
        watch.last = asyncio.get_running_loop().time()
